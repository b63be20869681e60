"""The one L2 normalisation of the models and losses (the NumPy one is
`valpat_keras.evaluation.distances.l2_normalize`)."""

from __future__ import annotations

from keras import ops


def l2_normalize(x, axis: int = -1, epsilon: float = 1e-12):
    """``x / max(||x||, sqrt(epsilon))`` along ``axis``, computed in float32.

    Args:
        x: A tensor.
        axis: The axis normalised.
        epsilon: Floor of the squared norm, so an all-zero row stays zero instead of NaN.
    """
    x = ops.cast(x, "float32")
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), epsilon))
