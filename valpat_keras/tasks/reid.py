"""Supervised person re-identification in the "Bag of Tricks" style (Luo et al. 2019).

`ReIDModel` puts a BNNeck and a bias-free identity classifier on an `ImageEncoder`
(random, VAL-PAT-pretrained or ImageNet) and trains it with label-smoothed cross-entropy on
the post-BN feature plus the batch-hard triplet loss on the pre-BN feature, over P x K
batches. The post-BN feature is the retrieval embedding.

Also here: `WarmupLearningRate` (linear warm-up, then step or cosine decay) and
`FreezeBackbone` (no backbone updates during the first epochs), both usable with any Task.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import keras_hub
from keras import ops

from valpat_keras.losses.reid import batch_hard_triplet, cross_entropy_label_smoothing
from valpat_keras.models.reid_head import BNNeck


def restore_compile(model: keras.Model, config: dict) -> None:
    """Re-compiles a loaded task with a fixed loss from its saved compile config.

    Keras skips compiling models whose ``compile`` is overridden and then cannot restore the
    saved optimizer state; the tasks here call this from ``compile_from_config`` instead.
    """
    config = dict(keras.saving.deserialize_keras_object(config))
    config.pop("loss", None)
    model.compile(**config)
    if model.built:
        model.optimizer.build(model.trainable_variables)


@keras.saving.register_keras_serializable(package="valpat_keras")
class WarmupLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then step or cosine decay, in optimizer steps.

    BoT warms up from ``0.1 * base`` to ``base`` over the first epochs and then divides the
    rate by 10 at fixed epochs; cosine decay is the common alternative.

    Args:
        base_learning_rate: Rate at the end of the warm-up.
        warmup_steps: Steps of linear warm-up (0 = none).
        total_steps: Steps of the whole run (cosine decays to ``min_ratio * base`` at the end).
        mode: ``"step"`` or ``"cosine"``.
        milestones: For ``"step"``: steps after which the rate is multiplied by ``gamma``.
        gamma: Step decay factor.
        warmup_factor: Warm-up starts at ``warmup_factor * base``.
        min_ratio: For ``"cosine"``: final rate as a fraction of the base rate.

    Example:

    ```python
    schedule = WarmupLearningRate(3.5e-4, warmup_steps=100, total_steps=1200,
                                  mode="step", milestones=(400, 700))
    optimizer = keras.optimizers.Adam(schedule)
    ```
    """

    def __init__(self, base_learning_rate: float, warmup_steps: int, total_steps: int,
                 mode: str = "step", milestones: Sequence[int] = (), gamma: float = 0.1,
                 warmup_factor: float = 0.1, min_ratio: float = 0.0):
        if mode not in ("step", "cosine"):
            raise ValueError(f"mode must be 'step' or 'cosine', got {mode!r}")
        self.base_learning_rate = float(base_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = max(int(total_steps), 1)
        self.mode = mode
        self.milestones = tuple(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.warmup_factor = float(warmup_factor)
        self.min_ratio = float(min_ratio)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        base = self.base_learning_rate
        if self.mode == "step":
            decayed = ops.ones_like(step) * base
            for milestone in self.milestones:
                decayed = ops.where(step >= milestone, decayed * self.gamma, decayed)
        else:
            span = float(max(self.total_steps - self.warmup_steps, 1))
            progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
            decayed = base * (self.min_ratio + (1.0 - self.min_ratio) * cosine)
        if self.warmup_steps <= 0:
            return decayed
        alpha = ops.minimum(step / self.warmup_steps, 1.0)
        warmup = base * (self.warmup_factor + (1.0 - self.warmup_factor) * alpha)
        return ops.where(step < self.warmup_steps, warmup, decayed)

    def get_config(self):
        return {
            "base_learning_rate": self.base_learning_rate, "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps, "mode": self.mode,
            "milestones": list(self.milestones), "gamma": self.gamma,
            "warmup_factor": self.warmup_factor, "min_ratio": self.min_ratio,
        }


@keras.saving.register_keras_serializable(package="valpat_keras")
class GradientGate(keras.layers.Layer):
    """Identity in the forward pass; lets gradients through only while ``open`` is 1.

    Freezing by gating the gradient keeps the set of trainable variables fixed, so it can be
    switched between epochs without recompiling on any backend. The frozen side still
    updates its BatchNorm statistics (PyTorch's ``requires_grad_(False)`` behaves the same).
    """

    def build(self, input_shape):
        self.open = self.add_weight(shape=(), initializer="ones", trainable=False,
                                    name="open")
        self.built = True

    def call(self, inputs):
        gate = ops.cast(self.open.value, inputs.dtype)
        return gate * inputs + (1.0 - gate) * ops.stop_gradient(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="valpat_keras")
class ReIDModel(keras_hub.models.Task):
    """BoT re-identification model: image encoder, BNNeck and identity classifier.

    Outputs a dict: ``features`` (pre-BN, for the triplet loss), ``embeddings`` (post-BN,
    the retrieval feature) and ``logits`` (identity classifier). `compute_loss` adds the
    label-smoothed identity loss and the batch-hard triplet loss; train with P x K batches
    of ``(images, person_ids)``.

    Args:
        backbone: An `ImageEncoder` (images in [0, 1] to ``feature_dim`` vectors).
        num_classes: Number of training identities.
        label_smoothing: Label-smoothing epsilon of the identity loss (BoT: 0.1).
        triplet_margin: Triplet margin; ``None`` for the soft margin (BoT: 0.3).
        id_loss_weight: Weight of the identity loss.
        triplet_loss_weight: Weight of the triplet loss.
        **kwargs: Standard `keras.Model` arguments.

    Example:

    ```python
    encoder = build_image_encoder("tiny", image_size=(64, 32))
    model = ReIDModel(encoder, num_classes=751)
    model.fit(reid_train_dataset(data.train, (64, 32), p=4, k=4), epochs=2)
    embeddings = model.embed(images)            # (B, feature_dim), post-BN
    ```
    """

    def __init__(self, backbone, num_classes: int, label_smoothing: float = 0.1,
                 triplet_margin: float | None = 0.3, id_loss_weight: float = 1.0,
                 triplet_loss_weight: float = 1.0, **kwargs):
        # === Layers ===
        self.backbone = backbone
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
        self.id_loss_tracker = keras.metrics.Mean(name="id_loss")
        self.triplet_loss_tracker = keras.metrics.Mean(name="triplet_loss")
        self._embedding_model = None

    def compile(self, optimizer="auto", **kwargs):
        """Configures training; ``"auto"`` is BoT's Adam at 3.5e-4.

        Args:
            optimizer: ``"auto"`` or any Keras optimizer (e.g. with a `WarmupLearningRate`).
            **kwargs: Passed to `keras.Model.compile` (the loss is fixed by `compute_loss`).
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(3.5e-4)
        kwargs.pop("loss", None)
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        restore_compile(self, config)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y_pred is None:
            y_pred = self(x, training=training)
        labels = ops.cast(ops.reshape(y, (-1,)), "int32")
        id_loss = cross_entropy_label_smoothing(labels, y_pred["logits"], self.label_smoothing)
        triplet_loss = batch_hard_triplet(y_pred["features"], labels, self.triplet_margin)
        self.id_loss_tracker.update_state(id_loss)
        self.triplet_loss_tracker.update_state(triplet_loss)
        return self.id_loss_weight * id_loss + self.triplet_loss_weight * triplet_loss

    @property
    def embedding_model(self) -> keras.Model:
        """A model (sharing weights) from images to the post-BN retrieval embedding."""
        if self._embedding_model is None:
            images = keras.Input(shape=tuple(self.backbone.image_shape), name="images")
            embeddings = self.neck(self.backbone(images))
            self._embedding_model = keras.Model(images, embeddings, name="reid_embedding")
        return self._embedding_model

    def embed(self, images, batch_size: int = 64):
        """Post-BN embeddings of images (an array or a dataset of image batches), NumPy."""
        return self.embedding_model.predict(images, batch_size=batch_size, verbose=0)

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
