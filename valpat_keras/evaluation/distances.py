"""Pairwise distances between feature sets (NumPy), as the re-ID toolboxes compute them."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

METRICS = ("euclidean", "sqeuclidean", "cosine")


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """Scales vectors to unit L2 norm.

    Args:
        x: Array of vectors.
        axis: Axis holding the vector components.
        eps: Floor on the norm so zero vectors stay zero instead of NaN.

    Returns:
        An array of the same shape and dtype as ``x``.
    """
    x = np.asarray(x)
    norm = np.sqrt(np.sum(np.square(x, dtype=np.float64), axis=axis, keepdims=True))
    return (x / np.maximum(norm, eps)).astype(x.dtype, copy=False)


def pairwise_distance(
    a: np.ndarray,
    b: np.ndarray,
    metric: str = "euclidean",
    compute_dtype: type = np.float64,
) -> np.ndarray:
    """Distances between every row of ``a`` and every row of ``b``.

    ``sqeuclidean`` is ``|a|^2 + |b|^2 - 2 a.b`` (torchreid's ``euclidean_squared_distance``),
    ``euclidean`` its square root, ``cosine`` is ``1 - cos`` of the L2-normalised rows.
    The products are accumulated in ``compute_dtype`` (float64 by default so near-duplicate
    features keep their order) and the result is float32.

    Args:
        a: ``(M, D)`` features.
        b: ``(N, D)`` features.
        metric: One of ``"euclidean"``, ``"sqeuclidean"``, ``"cosine"``.
        compute_dtype: dtype of the accumulation; ``np.float32`` is about twice as fast.

    Returns:
        ``(M, N)`` float32 distances (smaller = closer).

    Raises:
        ValueError: For an unknown metric or mismatched feature sizes.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    a = np.asarray(a, dtype=compute_dtype)
    b = np.asarray(b, dtype=compute_dtype)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected (M, D) and (N, D) features, got {a.shape} and {b.shape}")
    if metric == "cosine":
        return (1.0 - l2_normalize(a) @ l2_normalize(b).T).astype(np.float32)
    dist = np.sum(a * a, axis=1)[:, None] + np.sum(b * b, axis=1)[None, :] - 2.0 * (a @ b.T)
    np.maximum(dist, 0.0, out=dist)  # rounding can leave tiny negatives for identical rows
    if metric == "euclidean":
        np.sqrt(dist, out=dist)
    return dist.astype(np.float32)


def iter_distance_blocks(
    a: np.ndarray,
    b: np.ndarray,
    metric: str = "euclidean",
    block_size: int = 1024,
    compute_dtype: type = np.float64,
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yields ``(row_slice, distances)`` for blocks of rows of ``a`` against all of ``b``.

    Memory stays ``O(block_size x N)``: the full ``(M, N)`` matrix is never held.

    Args:
        a: ``(M, D)`` features.
        b: ``(N, D)`` features.
        metric: See `pairwise_distance`.
        block_size: Rows of ``a`` per block.
        compute_dtype: See `pairwise_distance`.

    Yields:
        The slice of rows of ``a`` and their ``(rows, N)`` float32 distances.
    """
    b = np.asarray(b, dtype=compute_dtype)  # cast once, not per block
    for start in range(0, len(a), block_size):
        rows = slice(start, min(start + block_size, len(a)))
        yield rows, pairwise_distance(a[rows], b, metric, compute_dtype)
