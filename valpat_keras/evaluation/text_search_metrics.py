"""Text-based person search metrics (IRRA ``utils/metrics.py::rank``).

Queries are captions, the gallery is images; the gallery is ranked by descending similarity
with no camera filtering, and every gallery image of the query's pid is a positive.
"""

from __future__ import annotations

import numpy as np

from valpat_keras.evaluation.reid_metrics import _Accumulator


def evaluate_text_search(
    similarity: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    max_rank: int = 10,
    block_size: int = 512,
) -> dict:
    """R@1/5/10, mAP and mINP of text-to-image retrieval.

    Args:
        similarity: ``(num_captions, num_images)`` scores, larger = closer (e.g. cosine).
        q_pids: ``(num_captions,)`` person id of each caption.
        g_pids: ``(num_images,)`` person id of each image.
        max_rank: Length of the returned CMC curve.
        block_size: Queries per block (memory ``O(block_size x num_images)``).

    Returns:
        A dict with ``R1``, ``R5``, ``R10``, ``mAP``, ``mINP`` as fractions in [0, 1] (IRRA
        prints percentages: multiply by 100), ``cmc`` and ``num_queries``.

    Raises:
        ValueError: If shapes disagree or a caption has no image of its pid in the gallery
            (IRRA would divide by zero there).
    """
    similarity = np.asarray(similarity)
    q_pids = np.asarray(q_pids).reshape(-1)
    g_pids = np.asarray(g_pids).reshape(-1)
    if similarity.shape != (q_pids.size, g_pids.size):
        raise ValueError(f"similarity has shape {similarity.shape}, expected "
                         f"({q_pids.size}, {g_pids.size}) from q_pids/g_pids")
    missing = ~np.isin(q_pids, g_pids)
    if missing.any():
        raise ValueError(f"{int(missing.sum())} of {q_pids.size} text queries have no gallery "
                         f"image of their pid (e.g. pid {q_pids[missing][0]}); every caption's "
                         "identity must be in the gallery")
    acc = _Accumulator(min(max_rank, g_pids.size))
    for start in range(0, q_pids.size, block_size):
        rows = slice(start, start + block_size)
        positive = q_pids[rows, None] == g_pids[None, :]
        acc.add(-similarity[rows], positive, np.ones_like(positive))
    res = acc.result("no text query")
    cmc = res["cmc"]
    out = {"cmc": cmc, "mAP": res["mAP"], "mINP": res["mINP"], "num_queries": q_pids.size}
    for k in (1, 5, 10):
        out[f"R{k}"] = float(cmc[min(k, cmc.size) - 1])
    return out
