"""The one contract every VAL-PAT task follows: compile, losses, trackers, embeddings.

Every task computes its own loss, so `TaskContract.compile` takes ``loss="auto"`` (or
``None``) only; ``optimizer="auto"`` and ``metrics="auto"`` pick the task's defaults
(`default_optimizer`, `default_metrics`). A saved task is re-compiled from its compile config
by `compile_from_config` (Keras skips that for models that override ``compile``, and would
then drop the saved optimizer state). `compute_loss` is the task's own objective
(`task_loss`) plus the regularisation losses of its layers (``self.losses``); running means
of the loss terms go in `trackers` so that they appear in the fit logs.

`ValPatTask` is the base on top of `keras_hub.models.Task` (functional tasks that can be
saved as presets). A task that must mutate state inside ``call`` (the pretrainer's queue)
mixes `TaskContract` into `keras.Model` instead. `EmbeddingMixin` adds the
``embedding_model`` / ``embed`` pair of the retrieval tasks.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras
import keras_hub
import numpy as np
from keras import ops

from valpat_keras.models.embedding import predict_fixed_batches


def _is_auto(value) -> bool:
    return isinstance(value, str) and value == "auto"


class TaskContract:
    """Compile / loss / tracker contract shared by every task (a mixin for `keras.Model`).

    Subclasses define ``default_optimizer(self)`` (the optimizer ``compile(optimizer="auto")``
    uses) and ``task_loss(self, x, y, y_pred, training)`` (the task's objective on a batch, a
    float32 scalar), and may override `default_metrics` and `configure_optimizer`.
    """

    def default_metrics(self) -> list | None:
        """The metrics ``compile(metrics="auto")`` uses; none by default."""
        return None

    def configure_optimizer(self, optimizer: keras.optimizers.Optimizer) -> None:
        """Adapts an optimizer to the task before compiling (e.g. per-layer learning rates)."""

    def compile(self, optimizer="auto", loss="auto", metrics="auto", **kwargs):
        """Configures training; the loss is always the task's own (`compute_loss`).

        Args:
            optimizer: ``"auto"`` (`default_optimizer`), an optimizer name or instance.
            loss: ``"auto"`` or ``None``; anything else raises, since the task computes its
                own loss.
            metrics: ``"auto"`` (`default_metrics`), ``None`` or a list of metrics.
            **kwargs: See `keras.Model.compile` (e.g. ``jit_compile``, ``run_eagerly``).

        Raises:
            ValueError: If a ``loss`` is given.
        """
        if not (loss is None or _is_auto(loss)):
            raise ValueError(f"{type(self).__name__} computes its own loss (compute_loss); "
                             f"compile it without `loss` (got loss={loss!r}).")
        if _is_auto(optimizer):
            optimizer = self.default_optimizer()
        optimizer = keras.optimizers.get(optimizer)
        if _is_auto(metrics):
            metrics = self.default_metrics()
        self.configure_optimizer(optimizer)
        super().compile(optimizer=optimizer, loss=None, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        """Re-compiles a loaded task with its saved optimizer (whose state is then restored)."""
        config = dict(keras.saving.deserialize_keras_object(config))
        for key in ("loss", "loss_weights"):
            config.pop(key, None)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def regularization_loss(self):
        """The sum of ``self.losses`` (layer regularisers, ``add_loss``) in float32."""
        total = ops.zeros((), "float32")
        for extra in self.losses:
            total = total + ops.cast(extra, "float32")
        return total

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """`task_loss` plus `regularization_loss` (``sample_weight`` is not supported)."""
        if y_pred is None:
            y_pred = self(x, training=training)
        return self.task_loss(x, y, y_pred, training) + self.regularization_loss()

    def make_trackers(self, names: Iterable[str]) -> dict[str, keras.metrics.Mean]:
        """Creates ``self.trackers``: one running mean per name, shown in the fit logs."""
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}
        return self.trackers

    def track(self, name: str, value) -> None:
        """Adds ``value`` to the running mean ``name`` (when that tracker exists)."""
        trackers = getattr(self, "trackers", None) or {}
        if name in trackers:
            trackers[name].update_state(value)


class ValPatTask(TaskContract, keras_hub.models.Task):
    """Base of the VAL-PAT tasks built as keras-hub functional Tasks (saveable as presets)."""


class EmbeddingMixin:
    """``embedding_model`` and ``embed`` for tasks whose output includes a retrieval embedding.

    Subclasses define ``embedding_outputs(self, images)`` (the retrieval embedding of symbolic
    ``images``, reusing the task's layers) and may set ``embedding_model_name``.
    """

    embedding_model_name = "embedding"

    @property
    def embedding_model(self) -> keras.Model:
        """A model (sharing the task's weights) from images to the retrieval embedding."""
        if getattr(self, "_embedding_model", None) is None:
            images = keras.Input(shape=tuple(self.backbone.image_shape), name="images")
            self._embedding_model = keras.Model(images, self.embedding_outputs(images),
                                                name=self.embedding_model_name)
        return self._embedding_model

    def embed(self, images, batch_size: int = 64) -> np.ndarray:
        """Embeddings of images (an array or a dataset of image batches), as NumPy.

        Batches are padded to ``batch_size`` (`predict_fixed_batches`), so the embedding
        model's compiled predict step is traced once and reused by every call.
        """
        return predict_fixed_batches(self.embedding_model, images, batch_size)
