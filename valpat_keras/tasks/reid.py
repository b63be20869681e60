"""Supervised person re-identification in the "Bag of Tricks" style (Luo et al. 2019).

`ReIDModel` puts a BNNeck and a bias-free identity classifier on an `ImageEncoder`
(random, VAL-PAT-pretrained or ImageNet) and trains it with label-smoothed cross-entropy on
the post-BN feature plus the batch-hard triplet loss on the pre-BN feature, over P x K
batches. The post-BN feature is the retrieval embedding.

Also here: `FreezeBackbone` (no backbone updates during the first epochs). `WarmupLearningRate`
(now in `valpat_keras.schedules`) and `GradientGate` (now in
`valpat_keras.models.gradient_gate`) are re-exported for the old import paths.
"""

from __future__ import annotations

import keras
from keras import ops

from valpat_keras.losses.reid import batch_hard_triplet, cross_entropy_label_smoothing
from valpat_keras.models.gradient_gate import GradientGate
from valpat_keras.models.image_encoder import ImageEncoder
from valpat_keras.models.preprocessors import ImagePreprocessor
from valpat_keras.models.reid_head import BNNeck
from valpat_keras.schedules import REID_LEARNING_RATE, WarmupLearningRate
from valpat_keras.tasks.base import EmbeddingMixin, ValPatTask

__all__ = ["FreezeBackbone", "GradientGate", "ReIDModel", "WarmupLearningRate"]

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
        features = self.backbone_gate(self.backbone(images))
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

    def default_optimizer(self) -> keras.optimizers.Optimizer:
        """BoT's Adam at 3.5e-4 (pass one with a `WarmupLearningRate` for the schedule)."""
        return keras.optimizers.Adam(REID_LEARNING_RATE)

    def task_loss(self, x, y, y_pred, training: bool):
        """Weighted identity (label-smoothed CE) plus batch-hard triplet loss."""
        labels = ops.cast(ops.reshape(y, (-1,)), "int32")
        id_loss = cross_entropy_label_smoothing(labels, y_pred["logits"], self.label_smoothing)
        triplet_loss = batch_hard_triplet(y_pred["features"], labels, self.triplet_margin)
        self.track("id_loss", id_loss)
        self.track("triplet_loss", triplet_loss)
        return self.id_loss_weight * id_loss + self.triplet_loss_weight * triplet_loss

    def embedding_outputs(self, images):
        """The post-BN retrieval embedding (the gradient gate is the identity here)."""
        return self.neck(self.backbone(images))

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
