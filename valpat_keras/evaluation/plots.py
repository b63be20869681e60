"""Figures for evaluation results (matplotlib).

Every function returns a matplotlib ``Figure`` and saves it when ``path`` is given. Figures
are built without pyplot (rendered by Agg), so they work headless and leave the user's
pyplot backend and open figures alone; in a notebook, ``display(fig)`` shows one.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

_MATCH, _MISS = "#2ca02c", "#d62728"


def _finish(fig: Figure, path: str | None) -> Figure:
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig


def _show_image(ax, image_path: str, border: str | None = None, title: str = "") -> None:
    from PIL import Image

    # Imported here: `data.shards` imports TensorFlow. A record read from shards
    # (``SHARDS/KEY``) is no file: its bytes come from the shard.
    from valpat_keras.data.shards import read_image_bytes

    with Image.open(io.BytesIO(read_image_bytes(image_path))) as img:
        ax.imshow(np.asarray(img.convert("RGB")))
    ax.set_xticks([])
    ax.set_yticks([])
    if border is not None:
        for spine in ax.spines.values():
            spine.set_edgecolor(border)
            spine.set_linewidth(4)
    ax.set_title(title, fontsize=7)


def plot_ranked_results(
    q_paths: Sequence[str],
    g_paths: Sequence[str],
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    num_queries: int = 8,
    topk: int = 10,
    path: str | None = None,
    order: str = "index",
) -> Figure:
    """A grid: each row a query then its top-k gallery images (green = match, red = not).

    Gallery items with the query's pid and camera are left out, as in the protocol.

    Args:
        q_paths: Query image paths.
        g_paths: Gallery image paths.
        distmat: ``(Q, G)`` distances.
        q_pids: Query pids.
        g_pids: Gallery pids.
        q_camids: Query camera ids.
        g_camids: Gallery camera ids.
        num_queries: Rows to show.
        topk: Gallery images per row.
        path: Save the figure here (PNG, PDF, ...) when given.
        order: ``"index"`` (the first queries), ``"worst"`` (lowest-ranked first match
            first) or ``"best"``.

    Returns:
        The figure.
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    rankings = []
    for qi in range(len(q_paths)):
        keep = ~((g_pids == q_pids[qi]) & (g_camids == q_camids[qi]))
        idx = np.nonzero(keep)[0]
        rankings.append(idx[np.argsort(distmat[qi, idx], kind="stable")])
    queries = np.arange(len(q_paths))
    if order in ("worst", "best"):
        first = np.array([np.argmax(np.append(g_pids[r] == q_pids[i], True))
                          for i, r in enumerate(rankings)])
        queries = np.argsort(-first if order == "worst" else first, kind="stable")
    elif order != "index":
        raise ValueError(f"order must be 'index', 'worst' or 'best', got {order!r}")
    queries = queries[:num_queries]
    topk = min(topk, len(g_paths))
    fig = Figure(figsize=(1.1 * (topk + 1), 2.2 * len(queries)))
    axes = fig.subplots(len(queries), topk + 1, squeeze=False)
    for row, qi in enumerate(queries):
        _show_image(axes[row, 0], q_paths[qi], "black", f"query\npid {q_pids[qi]} c{q_camids[qi]}")
        for col, gi in enumerate(rankings[qi][:topk], start=1):
            match = g_pids[gi] == q_pids[qi]
            _show_image(axes[row, col], g_paths[gi], _MATCH if match else _MISS,
                        f"#{col} c{g_camids[gi]}")
        for col in range(len(rankings[qi][:topk]) + 1, topk + 1):
            axes[row, col].axis("off")
    return _finish(fig, path)


def plot_cmc(results: Mapping[str, np.ndarray], max_rank: int = 20, path: str | None = None,
             title: str = "CMC") -> Figure:
    """CMC curves of several methods.

    Args:
        results: ``{name: cmc}`` with ``cmc`` fractions (index 0 = rank 1).
        max_rank: Last rank shown.
        path: Save the figure here when given.
        title: Axes title.

    Returns:
        The figure.
    """
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    for name, cmc in results.items():
        cmc = np.asarray(cmc)[:max_rank]
        ax.plot(np.arange(1, cmc.size + 1), 100 * cmc, marker="o", markersize=3,
                label=f"{name} (R1 {100 * cmc[0]:.1f})")
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _finish(fig, path)


def plot_attribute_bars(names: Sequence[str], values: np.ndarray, path: str | None = None,
                        title: str = "label-based mA per attribute",
                        ylabel: str = "mA (%)") -> Figure:
    """A bar per attribute (e.g. ``label_ma`` of `evaluate_attributes`).

    Args:
        names: Attribute names.
        values: One value per attribute (fractions are shown x100).
        path: Save the figure here when given.
        title: Axes title.
        ylabel: Y axis label.

    Returns:
        The figure.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(names) != values.size:
        raise ValueError(f"{len(names)} names for {values.size} values")
    fig = Figure(figsize=(max(5, 0.3 * len(names)), 4))
    ax = fig.subplots()
    ax.bar(np.arange(values.size), 100 * values, color="#1f77b4")
    ax.axhline(100 * values.mean(), color="black", linestyle="--", linewidth=1,
               label=f"mean {100 * values.mean():.1f}")
    ax.set_xticks(np.arange(values.size), list(names), rotation=90, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return _finish(fig, path)


def plot_embedding_tsne(features: np.ndarray, pids: np.ndarray, max_ids: int = 20,
                        path: str | None = None, seed: int = 0,
                        title: str = "t-SNE of embeddings", max_iter: int = 1000) -> Figure:
    """A 2-D t-SNE of embeddings, one colour per identity.

    Args:
        features: ``(N, D)`` embeddings.
        pids: ``(N,)`` identities.
        max_ids: Only the first ``max_ids`` identities (sorted) are drawn, to stay readable.
        path: Save the figure here when given.
        seed: t-SNE random state, for repeatable layouts.
        title: Axes title.
        max_iter: t-SNE optimisation steps (at least 250).

    Returns:
        The figure.
    """
    from sklearn.manifold import TSNE

    features, pids = np.asarray(features), np.asarray(pids)
    chosen = np.isin(pids, np.unique(pids)[:max_ids])
    features, pids = features[chosen], pids[chosen]
    perplexity = max(1.0, min(30.0, (len(features) - 1) / 3))
    points = TSNE(n_components=2, perplexity=perplexity, random_state=seed,
                  init="pca", max_iter=max_iter).fit_transform(features)
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    cmap = matplotlib.colormaps["tab20"]
    for i, pid in enumerate(np.unique(pids)):
        sel = pids == pid
        ax.scatter(points[sel, 0], points[sel, 1], s=12, color=cmap(i % 20), label=str(pid))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    if len(np.unique(pids)) <= 20:
        ax.legend(fontsize=6, markerscale=0.8, ncol=2)
    return _finish(fig, path)


def plot_text_retrieval(captions: Sequence[str], g_paths: Sequence[str], similarity: np.ndarray,
                        q_pids: np.ndarray | None = None, g_pids: np.ndarray | None = None,
                        num_queries: int = 4, topk: int = 5, path: str | None = None) -> Figure:
    """Each row: a caption and its top-k gallery images by similarity.

    Args:
        captions: Text queries (rows of ``similarity``).
        g_paths: Gallery image paths (columns of ``similarity``).
        similarity: ``(num_captions, num_images)`` scores, larger = closer.
        q_pids: Caption pids; with ``g_pids`` borders mark matches green, others red.
        g_pids: Gallery pids.
        num_queries: Rows to show (the first captions).
        topk: Images per row.
        path: Save the figure here when given.

    Returns:
        The figure.
    """
    import textwrap

    similarity = np.asarray(similarity)
    num_queries = min(num_queries, len(captions))
    topk = min(topk, len(g_paths))
    fig = Figure(figsize=(1.3 * (topk + 1) + 2, 2.2 * num_queries))
    axes = fig.subplots(num_queries, topk + 1, squeeze=False,
                        gridspec_kw={"width_ratios": [3] + [1] * topk})
    for row in range(num_queries):
        text_ax = axes[row, 0]
        text_ax.axis("off")
        text_ax.text(0, 0.5, textwrap.fill(captions[row], 40), fontsize=7, va="center")
        top = np.argsort(-similarity[row], kind="stable")[:topk]
        for col, gi in enumerate(top, start=1):
            border = None
            if q_pids is not None and g_pids is not None:
                border = _MATCH if g_pids[gi] == q_pids[row] else _MISS
            _show_image(axes[row, col], g_paths[gi], border, f"#{col} {similarity[row, gi]:.2f}")
    return _finish(fig, path)
