"""Person re-identification metrics: CMC, mAP and mINP under the Market-1501 protocol.

Equal to torchreid ``eval_market1501`` / fast-reid ``evaluate_rank`` (mINP as fast-reid),
but vectorised: queries are processed in blocks (memory ``O(block x G)``) and, instead of
sorting each gallery, only the ranks of the positives are computed (by counting the kept
gallery items closer than each positive), which is what CMC, AP and INP depend on.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from valpat_keras.evaluation.distances import iter_distance_blocks


def positive_ranks(
    dist: np.ndarray,
    positive: np.ndarray,
    keep: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-based ranks of the positives of each row among the kept items, ascending distance.

    Args:
        dist: ``(B, G)`` distances (smaller = closer).
        positive: ``(B, G)`` bool, True for the matches of each row (already kept).
        keep: ``(B, G)`` bool, False for items removed from the ranking.

    Returns:
        ``(row, rank, order)``: for every positive (grouped by row, ascending rank within a
        row) its row index and its 1-based rank; ``order`` is its 1-based index among the
        positives of its row.
    """
    dist = np.asarray(dist)
    num_cols = dist.shape[1]
    flat_dist = dist.reshape(-1)
    # 1-D flatnonzero + divmod: much faster than 2-D np.nonzero on large blocks.
    flat_pos = np.flatnonzero(positive)
    if flat_pos.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    rows = flat_pos // num_cols
    # Per-row keys that keep rows apart and the within-row order: row * span + (d - min).
    lo = float(np.min(dist))
    span = float(np.max(dist)) - lo + 1.0
    pos_keys = rows * span + (flat_dist[flat_pos].astype(np.float64) - lo)
    order_in = np.argsort(pos_keys, kind="stable")
    rows, pos_keys = rows[order_in], pos_keys[order_in]
    counts = np.bincount(rows, minlength=dist.shape[0])
    starts = np.cumsum(counts) - counts
    last = np.where(positive, dist, -np.inf).max(axis=1)
    # Only kept items closer than the row's last positive can precede a positive (earlier
    # positives included, so they count towards the later ones' ranks).
    flat_cand = np.flatnonzero(keep & (dist < last[:, None]))
    ckeys = (flat_cand // num_cols) * span + (flat_dist[flat_cand].astype(np.float64) - lo)
    # slot = number of positive keys <= the item's key; within row r it lies in
    # [starts[r], starts[r] + counts[r]), and slot <= j means "closer than positive j".
    slot = np.searchsorted(pos_keys, ckeys, side="right")
    before = np.cumsum(np.bincount(slot, minlength=pos_keys.size))
    j = np.arange(pos_keys.size)
    start = starts[rows]
    rank = before[j] - np.where(start > 0, before[np.maximum(start - 1, 0)], 0) + 1
    order = j - start + 1
    return rows, rank.astype(np.int64), order.astype(np.int64)


class _Accumulator:
    """Sums per-query CMC, AP and INP over blocks of queries."""

    def __init__(self, max_rank: int):
        self.max_rank = max_rank
        self.cmc = np.zeros(max_rank, dtype=np.float64)
        self.ap_sum = 0.0
        self.inp_sum = 0.0
        self.num_valid = 0
        self.all_ap: list[np.ndarray] = []
        self.all_inp: list[np.ndarray] = []

    def add(self, dist: np.ndarray, positive: np.ndarray, keep: np.ndarray) -> None:
        rows, rank, order = positive_ranks(dist, positive, keep)
        if rows.size == 0:
            return
        num_pos = np.bincount(rows, minlength=dist.shape[0])
        valid = num_pos > 0
        ap = np.bincount(rows, weights=order / rank, minlength=dist.shape[0])[valid]
        ap /= num_pos[valid]
        first = np.full(dist.shape[0], np.iinfo(np.int64).max)
        np.minimum.at(first, rows, rank)
        last = np.zeros(dist.shape[0], dtype=np.int64)
        np.maximum.at(last, rows, rank)
        inp = num_pos[valid] / last[valid]
        first = first[valid]
        self.cmc += np.bincount(np.minimum(first, self.max_rank + 1) - 1,
                                minlength=self.max_rank + 1)[: self.max_rank].cumsum()
        self.all_ap.append(ap)
        self.all_inp.append(inp)
        self.num_valid += int(valid.sum())

    def result(self, no_valid_message: str) -> dict:
        if self.num_valid == 0:
            raise ValueError(no_valid_message)
        ap = np.concatenate(self.all_ap)
        inp = np.concatenate(self.all_inp)
        cmc = self.cmc / self.num_valid
        out = {"cmc": cmc, "mAP": float(ap.mean()), "mINP": float(inp.mean()),
               "num_valid_queries": self.num_valid, "all_AP": ap, "all_INP": inp}
        for k in (1, 5, 10):
            out[f"rank{k}"] = float(cmc[k - 1]) if k <= self.max_rank else float(cmc[-1])
        return out


def _check_ids(n_q: int, n_g: int, **arrays: np.ndarray | None) -> dict[str, np.ndarray]:
    out = {}
    for name, arr in arrays.items():
        if arr is None:
            continue
        arr = np.asarray(arr).reshape(-1)
        expected = n_q if name.startswith("q_") else n_g
        if arr.shape[0] != expected:
            raise ValueError(f"{name} has {arr.shape[0]} entries, expected {expected}")
        out[name] = arr
    return out


_NO_VALID_REID = (
    "no valid query: no query has a gallery image of the same identity under another camera "
    "(queries whose only matches share their camera are skipped under the Market-1501 "
    "protocol); check that query and gallery pids/camids come from the same id space, or pass "
    "filter_same_camera=False")


def _reid_blocks(
    blocks: Iterable[tuple[slice, np.ndarray]],
    ids: dict[str, np.ndarray],
    max_rank: int,
    filter_same_camera: bool,
) -> dict:
    acc = _Accumulator(max_rank)
    g_pids = ids["g_pids"]
    g_camids = ids.get("g_camids")
    for rows, dist in blocks:
        same_pid = ids["q_pids"][rows, None] == g_pids[None, :]
        if filter_same_camera:
            same_cam = ids["q_camids"][rows, None] == g_camids[None, :]
            keep = ~(same_pid & same_cam)
            positive = same_pid & ~same_cam
        else:
            keep = np.ones_like(same_pid)
            positive = same_pid
        acc.add(dist, positive, keep)
    return acc.result(_NO_VALID_REID)


def evaluate_reid(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray | None = None,
    g_camids: np.ndarray | None = None,
    max_rank: int = 50,
    filter_same_camera: bool = True,
    block_size: int = 512,
) -> dict:
    """CMC, mAP and mINP of a query x gallery distance matrix (Market-1501 protocol).

    For each query, gallery items with the same pid AND the same camera are removed; queries
    left without a positive are skipped (not "valid"). AP is the non-interpolated mean of the
    precision at each positive; INP = positives / rank of the last positive (fast-reid).
    Gallery pid 0 (distractors) never matches a query and counts as a negative.

    Args:
        distmat: ``(Q, G)`` distances, smaller = closer.
        q_pids: ``(Q,)`` query person ids.
        g_pids: ``(G,)`` gallery person ids.
        q_camids: ``(Q,)`` query camera ids (needed when ``filter_same_camera``).
        g_camids: ``(G,)`` gallery camera ids (needed when ``filter_same_camera``).
        max_rank: Length of the CMC curve (clipped to the gallery size).
        filter_same_camera: Apply the same-pid-same-camera removal; False ranks the whole
            gallery and every same-pid item is a positive.
        block_size: Queries per block (memory is ``O(block_size x G)``).

    Returns:
        A dict with ``cmc`` (float64 array of length ``max_rank``), ``rank1``, ``rank5``,
        ``rank10``, ``mAP``, ``mINP`` (fractions in [0, 1]), ``num_valid_queries``, and the
        per-valid-query arrays ``all_AP`` and ``all_INP``.

    Raises:
        ValueError: If shapes disagree, camera ids are missing, or no query is valid.

    Example:
    >>> d = np.array([[0.1, 0.5], [0.3, 0.2]], dtype=np.float32)
    >>> r = evaluate_reid(d, np.array([1, 2]), np.array([1, 2]), np.array([0, 0]),
    ...                   np.array([1, 1]), max_rank=2)
    >>> r["rank1"], r["mAP"]
    (1.0, 1.0)
    """
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be (num_query, num_gallery), got shape {distmat.shape}")
    n_q, n_g = distmat.shape
    if filter_same_camera and (q_camids is None or g_camids is None):
        raise ValueError("filter_same_camera=True needs q_camids and g_camids")
    ids = _check_ids(n_q, n_g, q_pids=q_pids, g_pids=g_pids, q_camids=q_camids,
                     g_camids=g_camids)
    max_rank = min(max_rank, n_g)
    blocks = ((slice(s, min(s + block_size, n_q)), distmat[s: s + block_size])
              for s in range(0, n_q, block_size))
    return _reid_blocks(blocks, ids, max_rank, filter_same_camera)


def evaluate_reid_from_features(
    qf: np.ndarray,
    gf: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray | None = None,
    g_camids: np.ndarray | None = None,
    metric: str = "cosine",
    max_rank: int = 50,
    filter_same_camera: bool = True,
    block_size: int = 512,
    compute_dtype: type = np.float64,
) -> dict:
    """`evaluate_reid` on features, computing distances block by block.

    The ``(Q, G)`` distance matrix is never held: memory is ``O(block_size x G)``.

    Args:
        qf: ``(Q, D)`` query features.
        gf: ``(G, D)`` gallery features.
        q_pids: Query person ids.
        g_pids: Gallery person ids.
        q_camids: Query camera ids.
        g_camids: Gallery camera ids.
        metric: ``"cosine"``, ``"euclidean"`` or ``"sqeuclidean"`` (see `pairwise_distance`).
        max_rank: Length of the CMC curve.
        filter_same_camera: See `evaluate_reid`.
        block_size: Queries per block.
        compute_dtype: Accumulation dtype of the distances (float64 exact, float32 faster).

    Returns:
        The dict of `evaluate_reid`.
    """
    qf, gf = np.asarray(qf), np.asarray(gf)
    if filter_same_camera and (q_camids is None or g_camids is None):
        raise ValueError("filter_same_camera=True needs q_camids and g_camids")
    ids = _check_ids(len(qf), len(gf), q_pids=q_pids, g_pids=g_pids, q_camids=q_camids,
                     g_camids=g_camids)
    blocks = iter_distance_blocks(qf, gf, metric, block_size, compute_dtype)
    return _reid_blocks(blocks, ids, min(max_rank, len(gf)), filter_same_camera)


def evaluate_reid_from_blocks(
    blocks: Iterable[tuple[slice, np.ndarray]],
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray | None = None,
    g_camids: np.ndarray | None = None,
    max_rank: int = 50,
    filter_same_camera: bool = True,
) -> dict:
    """`evaluate_reid` over ``(query_rows, distances)`` blocks, e.g. from re-ranking.

    Args:
        blocks: Iterable of ``(slice of query rows, (rows, G) distances)``, such as
            `iter_re_ranking_blocks` or `iter_distance_blocks`.
        q_pids: Query person ids.
        g_pids: Gallery person ids.
        q_camids: Query camera ids.
        g_camids: Gallery camera ids.
        max_rank: Length of the CMC curve.
        filter_same_camera: See `evaluate_reid`.

    Returns:
        The dict of `evaluate_reid`.
    """
    g_pids = np.asarray(g_pids).reshape(-1)
    if filter_same_camera and (q_camids is None or g_camids is None):
        raise ValueError("filter_same_camera=True needs q_camids and g_camids")
    ids = _check_ids(np.asarray(q_pids).size, g_pids.size, q_pids=q_pids, g_pids=g_pids,
                     q_camids=q_camids, g_camids=g_camids)
    return _reid_blocks(blocks, ids, min(max_rank, g_pids.size), filter_same_camera)
