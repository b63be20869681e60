"""Heads put on top of encoder features: projection / prediction MLPs and attribute logits."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="valpat_keras")
class ProjectionHead(keras.layers.Layer):
    """MLP projection head with batch normalisation, as in MoCo v2/v3.

    ``num_layers - 1`` blocks of Dense -> norm -> ReLU, then Dense -> norm (the last norm
    without scale/offset, as MoCo v3). With ``num_layers=1`` it is a single linear map.

    Args:
        hidden_dim: int. Width of the hidden layers.
        output_dim: int. Output width.
        num_layers: int. Number of Dense layers. Defaults to ``2``.
        norm: str | None. ``"batch"``, ``"layer"`` or ``None``. Defaults to ``"batch"``.
        last_norm: bool. Normalise the output too. Defaults to ``True``.
        **kwargs: Standard `keras.layers.Layer` arguments.

    Example:

    ```python
    head = ProjectionHead(hidden_dim=512, output_dim=128)
    head(np.random.rand(4, 256).astype("float32")).shape  # (4, 128)
    ```
    """

    def __init__(self, hidden_dim: int, output_dim: int, num_layers: int = 2,
                 norm: str | None = "batch", last_norm: bool = True, **kwargs):
        super().__init__(**kwargs)
        if norm not in ("batch", "layer", None):
            raise ValueError(f"norm must be 'batch', 'layer' or None, got {norm!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.hidden_dim = int(hidden_dim)
        self.output_dim = int(output_dim)
        self.num_layers = int(num_layers)
        self.norm = norm
        self.last_norm = bool(last_norm)
        # === Layers ===
        self.blocks = []
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            width = self.output_dim if last else self.hidden_dim
            # A bias before a norm is cancelled by it.
            normed = norm is not None and (not last or self.last_norm)
            block = [keras.layers.Dense(width, use_bias=not normed, dtype=self.dtype_policy,
                                        name=f"dense_{i}")]
            if normed:
                block.append(self._make_norm(i, affine=not last))
            if not last:
                block.append(keras.layers.ReLU(dtype=self.dtype_policy, name=f"relu_{i}"))
            self.blocks.append(block)

    def _make_norm(self, index: int, affine: bool) -> keras.layers.Layer:
        if self.norm == "batch":
            return keras.layers.BatchNormalization(
                center=affine, scale=affine, dtype=self.dtype_policy, name=f"bn_{index}")
        return keras.layers.LayerNormalization(
            center=affine, scale=affine, dtype=self.dtype_policy, name=f"ln_{index}")

    def build(self, input_shape):
        shape = tuple(input_shape)
        for block in self.blocks:
            for layer in block:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)

    def call(self, inputs, training=None):
        x = inputs
        for block in self.blocks:
            for layer in block:
                x = layer(x, training=training) if isinstance(
                    layer, keras.layers.BatchNormalization) else layer(x)
        return x

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update({
            "hidden_dim": self.hidden_dim, "output_dim": self.output_dim,
            "num_layers": self.num_layers, "norm": self.norm, "last_norm": self.last_norm,
        })
        return config


@keras.saving.register_keras_serializable(package="valpat_keras")
class PredictionHead(ProjectionHead):
    """The MoCo v3 / BYOL predictor: a `ProjectionHead` whose output is not normalised.

    Args:
        hidden_dim: int. Hidden width.
        output_dim: int. Output width (the projection's output width).
        num_layers: int. Defaults to ``2``.
        norm: str | None. Defaults to ``"batch"``.
        last_norm: bool. Defaults to ``False``.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(self, hidden_dim: int, output_dim: int, num_layers: int = 2,
                 norm: str | None = "batch", last_norm: bool = False, **kwargs):
        super().__init__(hidden_dim, output_dim, num_layers=num_layers, norm=norm,
                         last_norm=last_norm, **kwargs)


@keras.saving.register_keras_serializable(package="valpat_keras")
class AttributeHead(keras.layers.Layer):
    """Linear attribute classifier: features to one logit per attribute.

    Optionally followed by a batch norm on the logits, as in the strong baseline of
    Jia et al. ("Rethinking of pedestrian attribute recognition").

    Args:
        num_attributes: int. Number of attributes.
        batch_norm: bool. Batch-normalise the logits. Defaults to ``False``.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(self, num_attributes: int, batch_norm: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.num_attributes = int(num_attributes)
        self.batch_norm = bool(batch_norm)
        # === Layers ===
        self.dense = keras.layers.Dense(self.num_attributes, dtype=self.dtype_policy,
                                        name="logits")
        self.norm = (keras.layers.BatchNormalization(dtype=self.dtype_policy, name="logits_bn")
                     if self.batch_norm else None)

    def build(self, input_shape):
        self.dense.build(tuple(input_shape))
        if self.norm is not None:
            self.norm.build((*tuple(input_shape)[:-1], self.num_attributes))

    def call(self, inputs, training=None):
        x = self.dense(inputs)
        if self.norm is not None:
            x = self.norm(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.num_attributes)

    def get_config(self):
        config = super().get_config()
        config.update({"num_attributes": self.num_attributes, "batch_norm": self.batch_norm})
        return config
