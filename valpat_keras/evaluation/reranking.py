"""k-reciprocal re-ranking (Zhong et al., CVPR 2017).

`re_ranking` is the widely copied dense implementation (person-re-ranking, torchreid,
fast-reid): it builds ``(Q+G)^2`` matrices, fine for a few thousand images.
`re_ranking_from_features` computes the same result from features with memory
``O((Q+G) x k) + O(block x (Q+G))``: blockwise exact kNN lists, sparse k-reciprocal sets,
sparse Gaussian weights and a sparse Jaccard distance, so it scales to MSMT17
(93,820 images). `iter_jaccard_pairs` / `jaccard_neighbour_graph` give the Jaccard distance
among one set as the pairs closer than 1 (the others are at 1), for DBSCAN on a sparse graph.

Semantics kept from the original: the distances passed in are squared again
(``np.power(d, 2)``) and each row is divided by its maximum over all ``Q+G`` items
(the original's ``transpose(d / max(d, axis=0))`` on a symmetric matrix).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

from valpat_keras.evaluation.distances import (
    iter_distance_blocks,
    l2_normalize,
    pairwise_distance,
)


def re_ranking(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """Dense k-reciprocal re-ranking, equal to the reference implementation.

    Args:
        q_g_dist: ``(Q, G)`` query-gallery distances.
        q_q_dist: ``(Q, Q)`` query-query distances.
        g_g_dist: ``(G, G)`` gallery-gallery distances.
        k1: Size of the k-reciprocal neighbourhoods.
        k2: Neighbours averaged in local query expansion.
        lambda_value: Weight of the original distance in the final mix.

    Returns:
        ``(Q, G)`` float32 re-ranked distances: ``jaccard * (1 - lambda) + original * lambda``.
    """
    original = np.concatenate([
        np.concatenate([q_q_dist, q_g_dist], axis=1),
        np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0)
    original = np.power(original, 2).astype(np.float32)
    original = np.transpose(1.0 * original / np.max(original, axis=0))
    num_query = q_g_dist.shape[0]
    num_all = original.shape[0]
    v = np.zeros_like(original, dtype=np.float32)
    initial_rank = np.argsort(original).astype(np.int32)
    half = int(np.around(k1 / 2.0)) + 1
    for i in range(num_all):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        k_reciprocal = forward[np.where(backward == i)[0]]
        expansion = k_reciprocal
        for candidate in k_reciprocal:
            cand_forward = initial_rank[candidate, :half]
            cand_backward = initial_rank[cand_forward, :half]
            cand_reciprocal = cand_forward[np.where(cand_backward == candidate)[0]]
            if (len(np.intersect1d(cand_reciprocal, k_reciprocal))
                    > 2.0 / 3 * len(cand_reciprocal)):
                expansion = np.append(expansion, cand_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])
        v[i, expansion] = 1.0 * weight / np.sum(weight)
    original = original[:num_query]
    if k2 != 1:
        v = np.stack([np.mean(v[initial_rank[i, :k2], :], axis=0) for i in range(num_all)])
    inv_index = [np.where(v[:, i] != 0)[0] for i in range(num_all)]
    jaccard = np.zeros_like(original, dtype=np.float32)
    for i in range(num_query):
        temp_min = np.zeros((1, num_all), dtype=np.float32)
        nonzero = np.where(v[i, :] != 0)[0]
        for j in nonzero:
            images = inv_index[j]
            temp_min[0, images] += np.minimum(v[i, j], v[images, j])
        jaccard[i] = 1 - temp_min / (2.0 - temp_min)
    final = jaccard * (1 - lambda_value) + original * lambda_value
    return final[:num_query, num_query:]


def _pair_distance(x: np.ndarray, rows: np.ndarray, cols: np.ndarray, metric: str) -> np.ndarray:
    """Distances of the listed pairs ``(x[rows], x[cols])``, same formulas as `pairwise_distance`."""
    out = np.empty(rows.size, dtype=np.float32)
    chunk = max(1024, (1 << 24) // max(x.shape[1], 1))  # ~128 MB per gathered float64 chunk
    x64 = x.astype(np.float64)
    if metric == "cosine":
        x64 = l2_normalize(x64, axis=1)
    sq = np.sum(x64 * x64, axis=1)
    for s in range(0, rows.size, chunk):
        r, c = rows[s: s + chunk], cols[s: s + chunk]
        dot = np.einsum("ij,ij->i", x64[r], x64[c])
        if metric == "cosine":
            out[s: s + chunk] = 1.0 - dot
        else:
            d = np.maximum(sq[r] + sq[c] - 2.0 * dot, 0.0)
            out[s: s + chunk] = np.sqrt(d) if metric == "euclidean" else d
    return out


def _ragged_arange(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for every ``(s, n)``, without a Python loop."""
    total = int(lengths.sum())
    offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return offsets + np.arange(total)


def _reciprocal_mask(knn: np.ndarray, k: int, chunk: int = 65536) -> np.ndarray:
    """``mask[i, j]``: is ``i`` among the first ``k`` neighbours of its neighbour ``knn[i, j]``."""
    mask = np.empty((knn.shape[0], k), dtype=bool)
    for s in range(0, knn.shape[0], chunk):
        fwd = knn[s: s + chunk, :k]
        own = np.arange(s, s + fwd.shape[0])[:, None, None]
        mask[s: s + chunk] = (knn[fwd, :k] == own).any(axis=2)
    return mask


def _sparse_from_mask(knn: np.ndarray, mask: np.ndarray, n: int) -> sp.csr_matrix:
    rows = np.nonzero(mask)[0].astype(np.int64)
    cols = knn[:, : mask.shape[1]][mask].astype(np.int64)
    data = np.ones(rows.size, dtype=np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(n, n))


def _normalized(dist_block: np.ndarray, row_max: np.ndarray) -> np.ndarray:
    """The original's ``power(d, 2) / row max`` in float32."""
    sq = np.square(dist_block, dtype=np.float32)
    return sq / row_max[:, None]


def iter_re_ranking_blocks(
    qf: np.ndarray,
    gf: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: str = "sqeuclidean",
    block_size: int = 512,
    compute_dtype: type = np.float64,
) -> Iterator[tuple[slice, np.ndarray]]:
    """Sparse k-reciprocal re-ranking, yielding the ``(Q, G)`` result block by block.

    Args:
        qf: ``(Q, D)`` query features.
        gf: ``(G, D)`` gallery features.
        k1: Size of the k-reciprocal neighbourhoods.
        k2: Neighbours averaged in local query expansion.
        lambda_value: Weight of the original distance in the final mix.
        metric: The distance fed to the original algorithm (which squares it again and
            normalises rows by their maximum): ``"sqeuclidean"`` reproduces the reference
            vectors (``re_ranking`` on squared euclidean distances).
        block_size: Rows per block of the distance passes and of the output.
        compute_dtype: Accumulation dtype of the distances.

    Yields:
        ``(query_rows, distances)`` with float32 ``(rows, G)`` re-ranked distances.
    """
    qf, gf = np.asarray(qf), np.asarray(gf)
    num_query = qf.shape[0]
    v, row_max = _k_reciprocal_encoding(np.concatenate([qf, gf], axis=0), k1, k2, metric,
                                        block_size, compute_dtype)
    v_gallery = v[num_query:].tocsc()
    v_gallery.sort_indices()
    gq_blocks = iter_distance_blocks(qf, gf, metric, block_size, compute_dtype)
    for rows, qg_dist in gq_blocks:
        jaccard = _jaccard_rows(v[rows], v_gallery)
        original = _normalized(qg_dist, row_max[rows])
        yield rows, (jaccard * (1 - lambda_value) + original * lambda_value).astype(np.float32)


def _k_reciprocal_encoding(x: np.ndarray, k1: int, k2: int, metric: str, block_size: int,
                           compute_dtype: type) -> tuple[sp.csr_matrix, np.ndarray]:
    """The sparse k-reciprocal feature ``V`` of every row of ``x`` (after query expansion).

    Returns:
        ``(v, row_max)``: ``(n, n)`` CSR weights (rows sum to one) and the per-row maxima of
        the squared distances used to normalise them.
    """
    n = x.shape[0]
    kk = min(k1 + 1, n)
    half = min(int(np.around(k1 / 2.0)) + 1, n)
    # Pass 1: exact kNN lists (sorted, self included) and the row maxima of the squared
    # distances, block by block.
    knn = np.empty((n, kk), dtype=np.int64)
    row_max = np.empty(n, dtype=np.float32)
    for rows, dist in iter_distance_blocks(x, x, metric, block_size, compute_dtype):
        sq = np.square(dist, dtype=np.float32)
        row_max[rows] = sq.max(axis=1)
        norm = sq / row_max[rows][:, None]
        part = np.argpartition(norm, kk - 1, axis=1)[:, :kk] if kk < n else \
            np.tile(np.arange(n), (norm.shape[0], 1))
        order = np.argsort(np.take_along_axis(norm, part, axis=1), axis=1, kind="stable")
        knn[rows] = np.take_along_axis(part, order, axis=1)
    # k-reciprocal sets R (k1) and H (round(k1/2)), then the 2/3-overlap expansion.
    r_set = _sparse_from_mask(knn, _reciprocal_mask(knn, kk), n)
    h_set = _sparse_from_mask(knn, _reciprocal_mask(knn, half), n)
    overlap = (r_set @ h_set.T).multiply(r_set).tocsr()  # |H[c] & R[i]| on R's pattern
    overlap.eliminate_zeros()
    h_size = np.asarray(h_set.sum(axis=1)).ravel()
    coo = overlap.tocoo()
    accept = coo.data > 2.0 / 3 * h_size[coo.col]
    accepted = sp.csr_matrix((np.ones(int(accept.sum()), dtype=np.float32),
                              (coo.row[accept], coo.col[accept])), shape=(n, n))
    expansion = (r_set + accepted @ h_set).tocsr()
    expansion.sum_duplicates()
    expansion.sort_indices()
    # Gaussian-kernel weights on the expanded sets, rows summing to one.
    e_rows = np.repeat(np.arange(n), np.diff(expansion.indptr))
    e_cols = expansion.indices.astype(np.int64)
    dist = _pair_distance(x, e_rows, e_cols, metric)
    weight = np.exp(-(np.square(dist, dtype=np.float32) / row_max[e_rows]))
    weight /= np.bincount(e_rows, weights=weight, minlength=n).astype(np.float32)[e_rows]
    v = sp.csr_matrix((weight, e_cols, expansion.indptr), shape=(n, n))
    if k2 != 1:
        qe = sp.csr_matrix((np.full(n * k2, 1.0 / k2, dtype=np.float32),
                            knn[:, :k2].ravel(), np.arange(0, n * k2 + 1, k2)), shape=(n, n))
        v = (qe @ v).tocsr()
    return v, row_max


def _jaccard_rows(v_rows: sp.csr_matrix, v_cols: sp.csc_matrix) -> np.ndarray:
    """Jaccard distances ``(r, m)`` between the rows of ``v_rows`` and the rows of ``v_cols``."""
    temp_min = _min_sums(v_rows, v_cols)
    return 1 - temp_min / (2.0 - temp_min)


def _min_sums(v_rows: sp.csr_matrix, v_cols: sp.csc_matrix) -> np.ndarray:
    """Dense float32 ``(r, m)`` sums ``sum_k min(V[i, k], V[j, k])`` (the Jaccard overlaps).

    They are gathered through ``v_cols`` (the other side's rows of V, stored by column with
    sorted indices), touching only non-zero pairs.
    """
    block = v_rows.tocoo()
    num_cols = v_cols.shape[0]
    col_ptr = v_cols.indptr
    lengths = col_ptr[block.col + 1] - col_ptr[block.col]
    idx = _ragged_arange(col_ptr[block.col], lengths)
    local_row = np.repeat(block.row.astype(np.int64), lengths)
    mins = np.minimum(np.repeat(block.data, lengths), v_cols.data[idx])
    temp_min = np.bincount(local_row * num_cols + v_cols.indices[idx],
                           weights=mins, minlength=v_rows.shape[0] * num_cols)
    return temp_min.reshape(v_rows.shape[0], num_cols).astype(np.float32)


def jaccard_distance(
    features: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    metric: str = "sqeuclidean",
    block_size: int = 512,
    compute_dtype: type = np.float64,
) -> np.ndarray:
    """k-reciprocal Jaccard distance among one set of features (no original-distance mix).

    The Jaccard term of `re_ranking` computed between all pairs of one set, as unsupervised
    re-ID (SpCL, Cluster Contrast) feeds to DBSCAN. Same sparse k-reciprocal encoding as
    `iter_re_ranking_blocks`; the ``(N, N)`` float32 output is the only dense matrix.

    Args:
        features: ``(N, D)`` features.
        k1: Size of the k-reciprocal neighbourhoods (Cluster Contrast uses 30).
        k2: Neighbours averaged in local query expansion.
        metric: See `iter_re_ranking_blocks`.
        block_size: Rows per block.
        compute_dtype: Accumulation dtype of the distances.

    Returns:
        ``(N, N)`` float32 distances in [0, 1], zero on the diagonal, symmetric up to the
        query expansion's averaging.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> jaccard_distance(rng.normal(size=(30, 8)), k1=5, k2=2).shape
    (30, 30)
    """
    x = np.asarray(features)
    v, _ = _k_reciprocal_encoding(x, k1, k2, metric, block_size, compute_dtype)
    v_cols = v.tocsc()
    v_cols.sort_indices()
    out = np.empty((x.shape[0], x.shape[0]), dtype=np.float32)
    for start in range(0, x.shape[0], block_size):
        rows = slice(start, min(start + block_size, x.shape[0]))
        out[rows] = _jaccard_rows(v[rows], v_cols)
    return out


#: Elements of the dense float64 scratch block one `iter_jaccard_pairs` step uses
#: (2**24: 128 MiB, whatever the number of features).
GRAPH_BLOCK_ELEMENTS = 1 << 24


def iter_jaccard_pairs(
    features: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    metric: str = "sqeuclidean",
    block_size: int = 512,
    compute_dtype: type = np.float64,
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """The pairs at k-reciprocal Jaccard distance below 1, block of rows by block of rows.

    Two items are at Jaccard distance below 1 exactly when their k-reciprocal encodings share
    support (``sum_k min(V[i, k], V[j, k]) > 0``); all other pairs are at 1. Each distance
    is bit-identical to the same entry of `jaccard_distance`; the diagonal and exact zeros
    (duplicates) are included. Memory: the sparse encoding, one dense float64 scratch block of
    at most `GRAPH_BLOCK_ELEMENTS` and the block's pairs.

    Args:
        features: ``(N, D)`` features.
        k1: Size of the k-reciprocal neighbourhoods (Cluster Contrast uses 30).
        k2: Neighbours averaged in local query expansion.
        metric: See `iter_re_ranking_blocks`.
        block_size: Rows per block (fewer when ``rows x N`` would exceed
            `GRAPH_BLOCK_ELEMENTS`).
        compute_dtype: Accumulation dtype of the distances.

    Yields:
        ``(start, rows, cols, distances)``: int64 row offsets within the block (ascending;
        the block starts at row ``start``), int32 columns (ascending within a row) and
        float32 distances.
    """
    x = np.asarray(features)
    n = x.shape[0]
    v, _ = _k_reciprocal_encoding(x, k1, k2, metric, block_size, compute_dtype)
    v_cols = v.tocsc()
    v_cols.sort_indices()
    step = max(1, min(block_size, GRAPH_BLOCK_ELEMENTS // max(n, 1)))
    for start in range(0, n, step):
        temp_min = _min_sums(v[start: start + step], v_cols)
        rows, cols = np.nonzero(temp_min > 0)  # row-major: CSR order
        overlap = temp_min[rows, cols]
        # The same float32 operations as `_jaccard_rows`, so values equal the dense path's.
        yield start, rows.astype(np.int64), cols.astype(np.int32), 1 - overlap / (2.0 - overlap)


def csr_from_pair_blocks(blocks: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]],
                         n: int) -> sp.csr_matrix:
    """An ``(n, n)`` CSR matrix from `iter_jaccard_pairs`-shaped blocks covering rows in order.

    Built from ``(data, indices, indptr)`` directly, so stored zeros stay stored.
    """
    counts = np.zeros(n, dtype=np.int64)
    for start, rows, _, _ in blocks:
        counts[start: start + (int(rows[-1]) + 1 if rows.size else 0)] += np.bincount(rows)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    indices = np.concatenate([b[2] for b in blocks] or [np.zeros(0, np.int32)])
    data = np.concatenate([b[3] for b in blocks] or [np.zeros(0, np.float32)])
    return sp.csr_matrix((data, indices, indptr), shape=(n, n))


def jaccard_neighbour_graph(
    features: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    metric: str = "sqeuclidean",
    block_size: int = 512,
    compute_dtype: type = np.float64,
) -> sp.csr_matrix:
    """The k-reciprocal Jaccard distance as a sparse graph of the pairs closer than 1.

    The unstored pairs are at distance exactly 1 (`iter_jaccard_pairs`), and each stored
    value equals the same entry of `jaccard_distance`, explicit zeros and the diagonal
    included. scikit-learn's DBSCAN with ``metric="precomputed"`` treats stored entries as
    the only neighbours, so for any ``eps < 1`` it clusters this graph as the dense matrix
    (`cluster_pseudo_labels`). Its size is the number of pairs whose encodings share
    support: a few hundred per item for well-separated features, thousands when neighbourhoods
    mix; for DBSCAN at one radius, `jaccard_dbscan_graph` keeps only the pairs within it.

    Args:
        features: ``(N, D)`` features.
        k1: Size of the k-reciprocal neighbourhoods (Cluster Contrast uses 30).
        k2: Neighbours averaged in local query expansion.
        metric: See `iter_re_ranking_blocks`.
        block_size: Rows per block (see `iter_jaccard_pairs`).
        compute_dtype: Accumulation dtype of the distances.

    Returns:
        ``(N, N)`` float32 CSR matrix with sorted column indices.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> graph = jaccard_neighbour_graph(rng.normal(size=(30, 8)), k1=5, k2=2)
    >>> graph.shape, bool(graph.nnz < 30 * 30)
    ((30, 30), True)
    """
    blocks = list(iter_jaccard_pairs(features, k1, k2, metric, block_size, compute_dtype))
    return csr_from_pair_blocks(blocks, np.asarray(features).shape[0])


def re_ranking_from_features(
    qf: np.ndarray,
    gf: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    block_size: int = 512,
    metric: str = "sqeuclidean",
    compute_dtype: type = np.float64,
) -> np.ndarray:
    """Memory-bounded k-reciprocal re-ranking from features.

    Equal to ``re_ranking(d(qf, gf), d(qf, qf), d(gf, gf))`` with ``d`` the chosen
    ``metric``, but never builds ``(Q+G)^2`` matrices; only the ``(Q, G)`` float32 output is
    dense (3.8 GB at MSMT17 size). To avoid even that, consume `iter_re_ranking_blocks`
    (e.g. with `evaluate_reid_from_blocks`).

    Args:
        qf: ``(Q, D)`` query features.
        gf: ``(G, D)`` gallery features.
        k1: Size of the k-reciprocal neighbourhoods.
        k2: Neighbours averaged in local query expansion.
        lambda_value: Weight of the original distance in the final mix.
        block_size: Rows per block.
        metric: See `iter_re_ranking_blocks`.
        compute_dtype: Accumulation dtype of the distances.

    Returns:
        ``(Q, G)`` float32 re-ranked distances.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> qf, gf = rng.normal(size=(4, 8)), rng.normal(size=(30, 8))
    >>> re_ranking_from_features(qf, gf, k1=5, k2=2).shape
    (4, 30)
    """
    out = np.empty((len(qf), len(gf)), dtype=np.float32)
    for rows, block in iter_re_ranking_blocks(qf, gf, k1, k2, lambda_value, metric,
                                              block_size, compute_dtype):
        out[rows] = block
    return out


def re_ranking_dense_from_features(qf: np.ndarray, gf: np.ndarray, metric: str = "sqeuclidean",
                                   **kwargs) -> np.ndarray:
    """`re_ranking` on the three distance matrices of ``qf`` and ``gf`` (small sets only)."""
    return re_ranking(pairwise_distance(qf, gf, metric), pairwise_distance(qf, qf, metric),
                      pairwise_distance(gf, gf, metric), **kwargs)
