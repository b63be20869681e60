"""Supervised person re-identification in the "Bag of Tricks" style (Luo et al. 2019).

`ReIDModel` puts a BNNeck and a bias-free identity classifier on an `ImageEncoder`
(random, VAL-PAT-pretrained or ImageNet) and trains it with label-smoothed cross-entropy on
the post-BN feature plus the batch-hard triplet loss on the pre-BN feature, over P x K
batches. The post-BN feature is the retrieval embedding.

`AGWReID` is the AGW baseline (Ye et al. 2021) on the same head: non-local blocks in stages
2 and 3, GeM pooling and the weighted regularised triplet loss. `MGNReID` is MGN (Wang et al.
2018, as fast-reid builds it): a shared trunk, a global and two part branches (2 and 3
horizontal stripes), eight reduced BN-neck embeddings whose concatenation is the retrieval
embedding. `REID_HEADS` maps the ``--head`` names to the classes.

Also here: `FreezeBackbone` (no backbone updates during the first epochs). `WarmupLearningRate`
(now in `valpat_keras.schedules`) and `GradientGate` (now in
`valpat_keras.models.gradient_gate`) are re-exported for the old import paths.
"""

from __future__ import annotations

import keras
from keras import ops

from valpat_keras.errors import InputError
from valpat_keras.losses.reid import (
    batch_hard_triplet,
    cross_entropy_label_smoothing,
    weighted_regularized_triplet,
)
from valpat_keras.models.gradient_gate import GradientGate
from valpat_keras.models.image_encoder import ImageEncoder
from valpat_keras.models.mgn import (
    MGN_HEAD_NAMES,
    MGN_PART_STRIPES,
    EmbeddingHead,
    build_mgn_trunk,
    build_part_branch,
    stripe_bounds,
)
from valpat_keras.models.non_local import (
    AGW_NON_LOCAL_BLOCKS,
    NonLocalBlock,
    non_local_positions,
    split_at_blocks,
)
from valpat_keras.models.pooling import make_pooling_2d
from valpat_keras.models.preprocessors import ImagePreprocessor
from valpat_keras.models.reid_head import BNNeck
from valpat_keras.models.resnet_parts import require_resnet
from valpat_keras.schedules import REID_LEARNING_RATE, WarmupLearningRate
from valpat_keras.tasks.base import EmbeddingMixin, ValPatTask

__all__ = ["REID_HEADS", "AGWReID", "FreezeBackbone", "GradientGate", "MGNReID", "ReIDModel",
           "WarmupLearningRate"]


@keras.saving.register_keras_serializable(package="valpat_keras")
class ReIDModel(EmbeddingMixin, ValPatTask):
    """BoT re-identification model: image encoder, BNNeck and identity classifier.

    Outputs a dict: ``features`` (pre-BN, for the triplet loss), ``embeddings`` (post-BN,
    the retrieval feature) and ``logits`` (identity classifier). The loss (`task_loss`) is
    the label-smoothed identity loss plus the batch-hard triplet loss (both logged, as
    ``id_loss`` and ``triplet_loss``), plus any regularisation losses; train with P x K
    batches of ``(images, person_ids)``. ``compile()`` defaults to BoT's Adam at 3.5e-4 and
    takes no ``loss``.

    Args:
        backbone: An `ImageEncoder` (images in [0, 1] to ``feature_dim`` vectors).
        num_classes: Number of training identities.
        label_smoothing: Label-smoothing epsilon of the identity loss (BoT: 0.1).
        triplet_margin: Triplet margin; ``None`` for the soft margin (BoT: 0.3).
        id_loss_weight: Weight of the identity loss.
        triplet_loss_weight: Weight of the triplet loss.
        preprocessor: An `ImagePreprocessor` (raw images to the encoder's input) or ``None``
            (inputs arrive decoded, as from `valpat_keras.data.pipelines`). The run
            functions attach one before saving the run folder as a preset.
        **kwargs: Standard `keras.Model` arguments.

    Example:

    ```python
    encoder = build_image_encoder("tiny", image_size=(64, 32))
    model = ReIDModel(encoder, num_classes=751)
    model.compile()
    model.fit(reid_train_dataset(data.train, (64, 32), p=4, k=4)[0], epochs=2)
    embeddings = model.embed(images)            # (B, feature_dim), post-BN
    ```
    """

    embedding_model_name = "reid_embedding"
    backbone_cls = ImageEncoder
    preprocessor_cls = ImagePreprocessor

    def __init__(self, backbone, num_classes: int, label_smoothing: float = 0.1,
                 triplet_margin: float | None = 0.3, id_loss_weight: float = 1.0,
                 triplet_loss_weight: float = 1.0, preprocessor=None, **kwargs):
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.backbone_gate = GradientGate(name="backbone_gate")
        self.neck = BNNeck(name="bnneck")
        # BoT: bias-free classifier with small normal initial weights.
        self.classifier = keras.layers.Dense(
            num_classes, use_bias=False,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            name="classifier")

        # === Functional Model ===
        images = keras.Input(shape=tuple(backbone.image_shape), name="images")
        features = self.backbone_gate(self.pooled_features(images))
        embeddings = self.neck(features)
        logits = self.classifier(embeddings)
        super().__init__(
            inputs=images,
            outputs={"features": features, "embeddings": embeddings, "logits": logits},
            **kwargs)

        # === Config ===
        self.num_classes = int(num_classes)
        self.label_smoothing = float(label_smoothing)
        self.triplet_margin = None if triplet_margin is None else float(triplet_margin)
        self.id_loss_weight = float(id_loss_weight)
        self.triplet_loss_weight = float(triplet_loss_weight)
        self.make_trackers(("id_loss", "triplet_loss"))

    def pooled_features(self, images):
        """The pooled feature of ``images`` before the BNNeck (BoT: the encoder's output)."""
        return self.backbone(images)

    def triplet_loss(self, features, labels):
        """The metric-learning term on the pre-BN features (BoT: batch-hard triplet)."""
        return batch_hard_triplet(features, labels, self.triplet_margin)

    def default_optimizer(self) -> keras.optimizers.Optimizer:
        """BoT's Adam at 3.5e-4 (pass one with a `WarmupLearningRate` for the schedule)."""
        return keras.optimizers.Adam(REID_LEARNING_RATE)

    def task_loss(self, x, y, y_pred, training: bool):
        """Weighted identity (label-smoothed CE) plus the triplet term (`triplet_loss`)."""
        labels = ops.cast(ops.reshape(y, (-1,)), "int32")
        id_loss = cross_entropy_label_smoothing(labels, y_pred["logits"], self.label_smoothing)
        triplet_loss = self.triplet_loss(y_pred["features"], labels)
        self.track("id_loss", id_loss)
        self.track("triplet_loss", triplet_loss)
        return self.id_loss_weight * id_loss + self.triplet_loss_weight * triplet_loss

    def embedding_outputs(self, images):
        """The post-BN retrieval embedding (the gradient gate is the identity here)."""
        return self.neck(self.pooled_features(images))

    def set_backbone_frozen(self, frozen: bool) -> None:
        """Stops (or resumes) gradient flow into the image encoder; no recompilation needed."""
        self.backbone_gate.open.assign(0.0 if frozen else 1.0)

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_classes": self.num_classes,
            "label_smoothing": self.label_smoothing,
            "triplet_margin": self.triplet_margin,
            "id_loss_weight": self.id_loss_weight,
            "triplet_loss_weight": self.triplet_loss_weight,
        })
        return config


@keras.saving.register_keras_serializable(package="valpat_keras")
class AGWReID(ReIDModel):
    """The AGW re-identification baseline (Ye et al. 2021) on a ResNet image encoder.

    BoT's head (BNNeck, bias-free classifier, label-smoothed identity loss) with AGW's three
    changes: non-local blocks after the last residual blocks of stages 2 and 3 (2 and 3 of
    them in a ResNet-50), GeM pooling with a fixed exponent (fast-reid configs/Base-AGW.yml
    ``POOL_LAYER: GeneralizedMeanPooling``) and the weighted regularised triplet loss
    (`weighted_regularized_triplet`, soft margin: ``TRI.MARGIN: 0.0``, ``HARD_MINING:
    False``) on the pre-BN feature. Outputs and training are those of `ReIDModel`.

    Args:
        backbone: A ResNet `ImageEncoder` with GeM pooling; its GeM exponent is kept fixed
            unless ``learn_gem_p``.
        num_classes: Number of training identities.
        label_smoothing: Identity-loss smoothing (AGW: 0.1).
        triplet_margin: None (AGW): soft margin; a number: hinge with that margin.
        id_loss_weight: Weight of the identity loss (AGW: 1).
        triplet_loss_weight: Weight of the WRT loss (AGW: 1).
        non_local_blocks: Non-local blocks per stage, after each stage's last blocks
            (AGW's ResNet-50: ``(0, 2, 3, 0)``); clipped to the blocks a stage has.
        non_local_inter_channels: theta / phi / g channels of each block (see
            `NonLocalBlock`; 1 as in AGW's code).
        learn_gem_p: Train the GeM exponent (fast-reid's ``GeneralizedMeanPoolingP``).
        preprocessor: An `ImagePreprocessor` or None (see `ReIDModel`).
        **kwargs: Standard `keras.Model` arguments.

    Example:

    ```python
    encoder = build_image_encoder("resnet50", image_size=(256, 128))
    model = AGWReID(encoder, num_classes=751)
    model.compile()
    ```
    """

    embedding_model_name = "agw_embedding"

    def __init__(self, backbone, num_classes: int, label_smoothing: float = 0.1,
                 triplet_margin: float | None = None, id_loss_weight: float = 1.0,
                 triplet_loss_weight: float = 1.0, non_local_blocks=AGW_NON_LOCAL_BLOCKS,
                 non_local_inter_channels: int = 1, learn_gem_p: bool = False,
                 preprocessor=None, **kwargs):
        resnet = require_resnet(backbone, "AGW")
        if backbone.pooling != "gem":
            raise InputError(f"The AGW re-ID head pools with GeM; the image encoder pools "
                             f"with {backbone.pooling!r} (use pooling='gem')")
        # === Layers ===
        positions = non_local_positions(resnet.stackwise_num_blocks, non_local_blocks)
        self.segments = split_at_blocks(resnet, positions)
        self.non_local = [NonLocalBlock(non_local_inter_channels, name=f"non_local{index}")
                          for index in range(len(positions))]
        backbone.pooling_layer.exponent.trainable = bool(learn_gem_p)
        # === Functional Model === (ReIDModel's, on `pooled_features`)
        super().__init__(backbone, num_classes, label_smoothing=label_smoothing,
                         triplet_margin=triplet_margin, id_loss_weight=id_loss_weight,
                         triplet_loss_weight=triplet_loss_weight, preprocessor=preprocessor,
                         **kwargs)
        # === Config ===
        self.non_local_blocks = [int(count) for count in non_local_blocks]
        self.non_local_inter_channels = int(non_local_inter_channels)
        self.learn_gem_p = bool(learn_gem_p)

    def pooled_features(self, images):
        """The encoder's layers with the non-local blocks in between, then GeM."""
        x = self.backbone.normalization(images)
        for index, segment in enumerate(self.segments):
            x = segment(x)
            if index < len(self.non_local):
                x = self.non_local[index](x)
        return self.backbone.pooling_layer(x)

    def triplet_loss(self, features, labels):
        """AGW's weighted regularised triplet loss."""
        return weighted_regularized_triplet(features, labels, self.triplet_margin)

    def get_config(self):
        config = super().get_config()
        config.update({
            "non_local_blocks": self.non_local_blocks,
            "non_local_inter_channels": self.non_local_inter_channels,
            "learn_gem_p": self.learn_gem_p,
        })
        return config


@keras.saving.register_keras_serializable(package="valpat_keras")
class MGNReID(EmbeddingMixin, ValPatTask):
    """MGN re-identification (Wang et al. 2018) as fast-reid configures it, on a ResNet encoder.

    The encoder is shared up to the first block of its stage before the last (ResNet-50:
    ``layer3[0]``); a global branch (the encoder's own remaining layers) and two part
    branches (copies at last stride 1, starting from the encoder's weights) follow. Eight
    `EmbeddingHead` s, on the three branch maps and on the 2 + 3 horizontal stripes of the
    part maps (`stripe_bounds`), pool (the encoder's pooling type; the global head uses the
    encoder's own pooling layer), reduce to ``embedding_dim`` and batch-normalise.

    Outputs a dict: ``embeddings`` (B, 8 x dim), the concatenated post-BN embeddings in
    fast-reid's order (b1, b2, b3, b21, b22, b31, b32, b33), the retrieval feature; and
    ``logits`` (B, 8, num_classes). The loss (fastreid/modeling/meta_arch/mgn.py
    ``losses``): label-smoothed CE on each of the 8 logits times ``id_loss_weight`` (0.125)
    plus triplet losses (batch-hard, soft margin) on b1, b2, b3 and, with
    ``part_triplet``, on the concatenations b21|b22 and b31|b32|b33, each times
    ``triplet_loss_weight`` (0.2). Logged as ``id_loss`` and ``triplet_loss`` (weighted).

    Args:
        backbone: A ResNet `ImageEncoder` of two stages or more.
        num_classes: Number of training identities.
        embedding_dim: Reduction of each head (fast-reid: ``HEADS.EMBEDDING_DIM: 256``).
        label_smoothing: CE smoothing (``LOSSES.CE.EPSILON: 0.1``).
        triplet_margin: None: soft margin (``LOSSES.TRI.MARGIN: 0.0``); a number: hinge.
        id_loss_weight: Weight of each of the 8 CE terms (fast-reid: 0.125).
        triplet_loss_weight: Weight of each triplet term (fast-reid: 0.2).
        part_triplet: Also the triplet terms on the concatenated stripes (fast-reid: yes;
            the MGN paper: only on the three branch features).
        preprocessor: An `ImagePreprocessor` or None (see `ReIDModel`).
        **kwargs: Standard `keras.Model` arguments.

    Example:

    ```python
    encoder = build_image_encoder("resnet50", image_size=(384, 128))
    model = MGNReID(encoder, num_classes=751)
    model.compile()
    embeddings = model.embed(images)        # (B, 2048)
    ```
    """

    embedding_model_name = "mgn_embedding"
    backbone_cls = ImageEncoder
    preprocessor_cls = ImagePreprocessor

    def __init__(self, backbone, num_classes: int, embedding_dim: int = 256,
                 label_smoothing: float = 0.1, triplet_margin: float | None = None,
                 id_loss_weight: float = 0.125, triplet_loss_weight: float = 0.2,
                 part_triplet: bool = True, preprocessor=None, **kwargs):
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.trunk, global_branch = build_mgn_trunk(backbone)
        self.branches = [global_branch] + [
            build_part_branch(backbone.backbone, f"mgn_part{parts}_branch")
            for parts in MGN_PART_STRIPES]
        self.backbone_gate = GradientGate(name="backbone_gate")
        # The global head pools with the encoder's own layer; the other seven with their own.
        self.part_poolings = [make_pooling_2d(backbone.pooling, p=backbone.gem_p,
                                              name=f"{name}_pool")
                              for name in MGN_HEAD_NAMES[1:]]
        self.heads = [EmbeddingHead(embedding_dim, num_classes, name=f"{name}_head")
                      for name in MGN_HEAD_NAMES]

        # === Functional Model ===
        images = keras.Input(shape=tuple(backbone.image_shape), name="images")
        outputs = self._forward(images)
        super().__init__(inputs=images, outputs=outputs, **kwargs)

        # === Config ===
        self.num_classes = int(num_classes)
        self.embedding_dim = int(embedding_dim)
        self.head_dim = int(outputs["embeddings"].shape[-1]) // len(MGN_HEAD_NAMES)
        self.label_smoothing = float(label_smoothing)
        self.triplet_margin = None if triplet_margin is None else float(triplet_margin)
        self.id_loss_weight = float(id_loss_weight)
        self.triplet_loss_weight = float(triplet_loss_weight)
        self.part_triplet = bool(part_triplet)
        self.make_trackers(("id_loss", "triplet_loss"))

    def branch_maps(self, images) -> list:
        """The global, 2-part and 3-part branch feature maps of ``images``."""
        shared = self.trunk(self.backbone.normalization(images))
        return [self.backbone_gate(branch(shared)) for branch in self.branches]

    def _pooled(self, maps) -> list:
        """The 8 pooled vectors, in `MGN_HEAD_NAMES` order."""
        global_map, *part_maps = maps
        poolings = iter(self.part_poolings)
        pooled = [self.backbone.pooling_layer(global_map)]
        pooled += [next(poolings)(part_map) for part_map in part_maps]
        for part_map, parts in zip(part_maps, MGN_PART_STRIPES):
            for start, stop in stripe_bounds(int(part_map.shape[1]), parts):
                pooled.append(next(poolings)(part_map[:, start:stop]))
        return pooled

    def _forward(self, images) -> dict:
        outputs = [head(vector) for head, vector in
                   zip(self.heads, self._pooled(self.branch_maps(images)))]
        return {"embeddings": ops.concatenate([emb for emb, _ in outputs], axis=-1),
                "logits": ops.stack([logits for _, logits in outputs], axis=1)}

    def default_optimizer(self) -> keras.optimizers.Optimizer:
        """Adam at 3.5e-4, as BoT and fast-reid's MGN configs (``SOLVER.BASE_LR``)."""
        return keras.optimizers.Adam(REID_LEARNING_RATE)

    def triplet_groups(self) -> list[tuple[int, int]]:
        """Head ranges ``[first, last)`` of the embedding that get a triplet term each."""
        groups = [(0, 1), (1, 2), (2, 3)]
        return groups + [(3, 5), (5, 8)] if self.part_triplet else groups

    def task_loss(self, x, y, y_pred, training: bool):
        """The weighted CE terms of the 8 heads plus the weighted triplet terms."""
        labels = ops.cast(ops.reshape(y, (-1,)), "int32")
        logits, embeddings = y_pred["logits"], y_pred["embeddings"]
        id_loss = sum(cross_entropy_label_smoothing(labels, logits[:, index],
                                                    self.label_smoothing)
                      for index in range(len(MGN_HEAD_NAMES))) * self.id_loss_weight
        dim = self.head_dim
        triplet_loss = sum(
            batch_hard_triplet(embeddings[:, first * dim:last * dim], labels,
                               self.triplet_margin)
            for first, last in self.triplet_groups()) * self.triplet_loss_weight
        self.track("id_loss", id_loss)
        self.track("triplet_loss", triplet_loss)
        return id_loss + triplet_loss

    def embedding_outputs(self, images):
        """The concatenated post-BN embeddings of the 8 heads."""
        return self._forward(images)["embeddings"]

    def set_backbone_frozen(self, frozen: bool) -> None:
        """Stops (or resumes) gradient flow into the trunk and the three branches."""
        self.backbone_gate.open.assign(0.0 if frozen else 1.0)

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_classes": self.num_classes,
            "embedding_dim": self.embedding_dim,
            "label_smoothing": self.label_smoothing,
            "triplet_margin": self.triplet_margin,
            "id_loss_weight": self.id_loss_weight,
            "triplet_loss_weight": self.triplet_loss_weight,
            "part_triplet": self.part_triplet,
        })
        return config


#: The supervised re-ID heads of ``valpat reid --head``.
REID_HEADS = {"bot": ReIDModel, "mgn": MGNReID, "agw": AGWReID}


class FreezeBackbone(keras.callbacks.Callback):
    """Freezes the image encoder of a `ReIDModel` for the first ``epochs`` epochs.

    Fine-tuning a pretrained encoder under a randomly initialised classifier can wreck its
    features before the head has settled; the head trains alone first.

    Args:
        epochs: Number of leading epochs with the backbone frozen.
    """

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = int(epochs)

    def on_epoch_begin(self, epoch, logs=None):
        self.model.set_backbone_frozen(epoch < self.epochs)

    def on_train_end(self, logs=None):
        self.model.set_backbone_frozen(False)
