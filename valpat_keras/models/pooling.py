"""Pooling layers that turn a feature map or a token sequence into one vector per input."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="valpat_keras")
class GeneralizedMeanPooling2D(keras.layers.Layer):
    """Generalized-mean (GeM) pooling over the spatial axes of a channels-last feature map.

    GeM (Radenović et al. 2018) computes ``mean(x ** p) ** (1 / p)`` per channel: ``p = 1``
    is average pooling and large ``p`` approaches max pooling. Person re-identification
    baselines (fast-reid, BoT variants) use it with a learnable ``p`` initialised at 3.
    The arithmetic runs in float32 so that ``x ** p`` does not overflow under mixed precision.

    Args:
        p: float. Initial exponent. Defaults to ``3.0``.
        trainable_p: bool. Whether ``p`` is learned. Defaults to ``True``.
        eps: float. Activations are clipped to at least ``eps`` before the power, so the
            fractional power stays defined. Defaults to ``1e-6``.
        **kwargs: Standard `keras.layers.Layer` arguments.

    Example:

    ```python
    pool = GeneralizedMeanPooling2D(p=3.0)
    pool(np.random.rand(2, 16, 8, 64).astype("float32")).shape  # (2, 64)
    ```
    """

    def __init__(self, p: float = 3.0, trainable_p: bool = True, eps: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.p = float(p)
        self.trainable_p = bool(trainable_p)
        self.eps = float(eps)

    def build(self, input_shape):
        self.exponent = self.add_weight(
            name="p", shape=(), initializer=keras.initializers.Constant(self.p),
            trainable=self.trainable_p, dtype="float32")

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        p = ops.convert_to_tensor(self.exponent)
        # x ** p as exp(p * log x) (x >= eps > 0): the same value, but TensorFlow's CPU
        # `Pow` kernel and its gradient (two more powers) cost ~8% of a pretraining step,
        # while exp/log are vectorised (benchmarks/pretrain_speed.py).
        x = ops.exp(p * ops.log(ops.maximum(x, self.eps)))
        x = ops.mean(x, axis=(1, 2))
        return ops.cast(ops.exp(ops.log(x) / p), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"p": self.p, "trainable_p": self.trainable_p, "eps": self.eps})
        return config


@keras.saving.register_keras_serializable(package="valpat_keras")
class TokenPooling(keras.layers.Layer):
    """Pools a token sequence (B, L, D) into one vector (B, D).

    Used by the text encoder (``"cls"`` position or masked mean over non-padding tokens)
    and by ViT image encoders (class token or mean of the patch tokens).

    Args:
        mode: str. ``"cls"`` takes the first token; ``"mean"`` averages the tokens whose
            mask is true (all tokens when no mask is given). Defaults to ``"cls"``.
        skip_first: bool. For ``"mean"``, leave out the first token (a ViT class token).
            Defaults to ``False``.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(self, mode: str = "cls", skip_first: bool = False, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("cls", "mean"):
            raise ValueError(f"TokenPooling mode must be 'cls' or 'mean', got {mode!r}")
        self.mode = mode
        self.skip_first = bool(skip_first)
        # The mask is consumed here (as an explicit argument); nothing downstream needs it.
        self.supports_masking = True

    def compute_mask(self, inputs, mask=None):
        return None

    def call(self, inputs, mask=None):
        if self.mode == "cls":
            return inputs[:, 0, :]
        x = ops.cast(inputs, "float32")
        if mask is None:
            mask = ops.ones(ops.shape(x)[:2], dtype="float32")
        mask = ops.cast(mask, "float32")
        if self.skip_first:
            x, mask = x[:, 1:, :], mask[:, 1:]
        summed = ops.sum(x * mask[:, :, None], axis=1)
        count = ops.maximum(ops.sum(mask, axis=1, keepdims=True), 1.0)
        return ops.cast(summed / count, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "skip_first": self.skip_first})
        return config


def make_pooling_2d(pooling: str, p: float = 3.0, name: str = "pooling") -> keras.layers.Layer:
    """The pooling layer for a channels-last feature map.

    Args:
        pooling: ``"gem"`` (GeneralizedMeanPooling2D) or ``"avg"`` (global average pooling).
        p: Initial GeM exponent.
        name: Layer name.

    Returns:
        A layer mapping (B, H, W, C) to (B, C).

    Raises:
        ValueError: For any other pooling name.
    """
    if pooling == "gem":
        return GeneralizedMeanPooling2D(p=p, name=name)
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name=name)
    raise ValueError(f"pooling must be 'gem' or 'avg' for a ResNet encoder, got {pooling!r}")
