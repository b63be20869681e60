"""Pseudo-labels for unsupervised re-identification (Cluster Contrast, Dai et al. 2022).

Every epoch the features of all training images are clustered with DBSCAN on the
k-reciprocal Jaccard distance (Zhong et al. 2017); images DBSCAN leaves as outliers are
dropped from that epoch. `jaccard_pseudo_labels` hands DBSCAN a sparse graph of only the pairs
within its radius (streamed by `iter_jaccard_pairs`: memory grows as ``N x k``, 32,621 MSMT17
images in 0.64 GiB); `jaccard_neighbour_graph` (every pair closer than 1) and the dense matrix
(`jaccard_pseudo_labels_dense`) are references for small sets. NumPy / scikit-learn only.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.neighbors import sort_graph_by_row_values

from valpat_keras.evaluation.distances import l2_normalize
from valpat_keras.evaluation.reranking import (
    csr_from_pair_blocks,
    iter_jaccard_pairs,
    jaccard_distance,
)

#: The smallest radius `eps_from_distances` returns (DBSCAN rejects 0).
MIN_EPS = 1e-6

#: Fraction of the closest pairs whose mean distance is the automatic DBSCAN radius (SSG's rho).
AUTO_EPS_RHO = 1.6e-3


def eps_from_distances(distance: np.ndarray | sp.spmatrix, rho: float = AUTO_EPS_RHO,
                       missing_distance: float = 1.0) -> float:
    """A DBSCAN radius read off the distance distribution (Fu et al. 2019, SSG).

    The mean of the ``rho`` fraction of smallest off-diagonal distances. A fixed radius
    suits one encoder on one dataset (Cluster Contrast's 0.6 on Market-1501 from a
    pretrained ResNet-50); on another encoder or a small dataset the whole Jaccard
    distribution shifts, and a fixed radius can merge everything into one cluster or find
    none. Tied to the distribution, the radius follows the encoder round by round.

    Args:
        distance: Symmetric ``(N, N)`` distances, dense, or a sparse graph whose unstored
            pairs are at ``missing_distance`` (`jaccard_neighbour_graph`: 1). The pairs
            ``i < j`` are read from row ``i``, the same entries either way.
        rho: Fraction of the ``N (N - 1) / 2`` pairs averaged (at least one pair).
        missing_distance: The distance of unstored pairs of a sparse graph (no larger than
            any stored one); ignored for a dense matrix.

    Returns:
        The radius (at least `MIN_EPS`).
    """
    num_items = distance.shape[0]
    count = _pair_count(num_items, rho)
    if sp.issparse(distance):
        mean = _closest_pairs_mean_sparse(distance, count, missing_distance)
    else:
        distance = np.asarray(distance, dtype=np.float64)
        pairs = distance[np.triu_indices(num_items, k=1)]
        mean = float(np.partition(pairs, count - 1)[:count].mean())
    # Duplicates sit at distance 0, and DBSCAN needs a positive radius.
    return max(mean, MIN_EPS)


def _closest_pairs_mean_sparse(graph: sp.spmatrix, count: int, missing_distance: float
                               ) -> float:
    """Mean of the ``count`` smallest pairs ``i < j``: stored ones, then implicit ones."""
    coo = graph.tocoo()
    upper = coo.row < coo.col
    stored = coo.data[upper].astype(np.float64)
    if stored.size >= count:
        return float(np.partition(stored, count - 1)[:count].mean())
    # Fewer stored pairs than asked for: all of them plus implicit pairs at the missing value.
    return float((stored.sum() + (count - stored.size) * missing_distance) / count)


def rho_for_identity_size(num_images: int, images_per_identity: float,
                          ratio: float = 1.3) -> float:
    """SSG's ``rho`` scaled to a dataset: ``ratio`` times its share of same-identity pairs.

    SSG's 1.6e-3 on Market-1501 (12,936 training images, 17.2 per identity) is 1.3 times the
    share of pairs showing one person, ``(m - 1) / (N - 1)``. On a small set with few images
    per identity that share is ten times larger, and the fixed 1.6e-3 gives a radius that
    only joins near-duplicates. With ``m`` measured on labelled validation identities the
    radius keeps SSG's proportion on any dataset.

    Args:
        num_images: Images to be clustered (``N``).
        images_per_identity: Mean images per identity (``m``), e.g. of the validation ids.
        ratio: Multiple of the same-identity share (1.3 reproduces SSG's Market value).

    Returns:
        ``rho`` in (0, 1].
    """
    if num_images < 2 or images_per_identity < 1:
        raise ValueError(f"rho_for_identity_size: needs >= 2 images and >= 1 image per "
                         f"identity, got {num_images} and {images_per_identity}")
    share = (float(images_per_identity) - 1.0) / (int(num_images) - 1.0)
    return float(np.clip(ratio * share, 1.0 / (num_images * (num_images - 1) / 2), 1.0))


def cluster_pseudo_labels(distance: np.ndarray | sp.spmatrix, eps: float | str = 0.6,
                          min_samples: int = 4, missing_distance: float = 1.0) -> np.ndarray:
    """DBSCAN pseudo-labels from a precomputed distance matrix or sparse neighbour graph.

    A sparse graph (`jaccard_neighbour_graph`) holds the pairs closer than
    ``missing_distance``; the others are at ``missing_distance``. For ``eps`` below it the
    labels equal those of the dense matrix (`cluster_pseudo_labels_dense`, the reference) at
    ``O(stored pairs)`` memory; at or above it every pair is a neighbour, as in the dense
    matrix, so all items form one cluster (or, fewer than ``min_samples``, are outliers).

    Args:
        distance: Symmetric ``(N, N)`` distances (e.g. the Jaccard distance, in [0, 1]),
            dense or a scipy sparse graph (stored zeros are distances of zero).
        eps: DBSCAN neighbourhood radius (0.6 in Cluster Contrast on Market-1501), or
            ``"auto"``: read off the distances (`eps_from_distances`).
        min_samples: Neighbours (self included) that make a core point (4 in Cluster Contrast).
        missing_distance: Distance of the pairs a sparse graph does not store.

    Returns:
        ``int64`` labels of shape ``(N,)``: clusters numbered ``0..C-1`` by first appearance,
        ``-1`` for outliers.

    Example:

    ```python
    labels = cluster_pseudo_labels(jaccard_neighbour_graph(features), eps=0.6, min_samples=4)
    ```
    """
    if not sp.issparse(distance):
        return cluster_pseudo_labels_dense(distance, eps, min_samples)
    graph = _checked_square(sp.csr_matrix(distance, dtype=np.float64, copy=True))
    graph.sort_indices()
    np.clip(graph.data, 0.0, None, out=graph.data)  # as the dense path: round-off negatives
    eps = _checked_eps(eps, graph, missing_distance)
    if eps >= missing_distance:
        num_items = graph.shape[0]
        return np.full(num_items, 0 if num_items >= min_samples else -1, dtype=np.int64)
    # Rows sorted by value, as NearestNeighbors expects (it would copy and warn otherwise).
    graph = sort_graph_by_row_values(graph, copy=False, warn_when_not_sorted=False)
    raw = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed",
                 n_jobs=1).fit_predict(graph)
    return relabel_contiguous(raw)


def cluster_pseudo_labels_dense(distance: np.ndarray, eps: float | str = 0.6,
                                min_samples: int = 4) -> np.ndarray:
    """DBSCAN on a dense ``(N, N)`` distance matrix (the reference of the sparse path).

    Args and returns as `cluster_pseudo_labels`; memory ``N^2`` float64.
    """
    distance = _checked_square(np.asarray(distance, dtype=np.float64))
    # Round-off can leave tiny negatives, which sklearn's precomputed metric rejects.
    distance = np.clip(distance, 0.0, None)
    eps = _checked_eps(eps, distance)
    raw = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed",
                 n_jobs=1).fit_predict(distance)
    return relabel_contiguous(raw)


def _checked_square(distance):
    if distance.ndim != 2 or distance.shape[0] != distance.shape[1]:
        raise ValueError(f"cluster_pseudo_labels: expected a square distance matrix, "
                         f"got shape {distance.shape}")
    return distance


def _checked_eps(eps: float | str, distance, missing_distance: float = 1.0) -> float:
    if eps == "auto":
        return eps_from_distances(distance, missing_distance=missing_distance)
    if isinstance(eps, str) or not eps > 0:
        raise ValueError(f"cluster_pseudo_labels: eps must be a positive number or 'auto', "
                         f"got {eps!r}")
    return float(eps)


def jaccard_pseudo_labels(features: np.ndarray, eps: float | str = 0.6, min_samples: int = 4,
                          k1: int = 30, k2: int = 6, rho: float = AUTO_EPS_RHO
                          ) -> tuple[np.ndarray, float]:
    """DBSCAN on the k-reciprocal Jaccard distance of features, in ``O(N x k)`` memory.

    Cluster Contrast's pseudo-labelling step (`jaccard_dbscan_graph` then
    `cluster_pseudo_labels`); equal to `jaccard_pseudo_labels_dense`, which holds the
    ``N x N`` matrix (4 GiB in float32 at MSMT17's 32,621 training images).

    Args:
        features: ``(N, D)`` features (L2-normalised in Cluster Contrast).
        eps: DBSCAN radius, or ``"auto"``: the mean of the ``rho`` share of closest pairs.
        min_samples: Neighbours (self included) that make a core point.
        k1: k-reciprocal neighbourhood size.
        k2: Query-expansion size.
        rho: Share of the closest pairs behind ``eps="auto"``.

    Returns:
        ``(labels, radius)``: as `cluster_pseudo_labels`, and the radius used.
    """
    graph, radius = jaccard_dbscan_graph(features, eps, k1, k2, rho)
    return cluster_pseudo_labels(graph, radius, min_samples), radius


def jaccard_pseudo_labels_dense(features: np.ndarray, eps: float | str = 0.6,
                                min_samples: int = 4, k1: int = 30, k2: int = 6,
                                rho: float = AUTO_EPS_RHO) -> tuple[np.ndarray, float]:
    """The dense reference of `jaccard_pseudo_labels` (``N x N`` matrices; small sets only)."""
    distance = jaccard_distance(features, k1=k1, k2=k2)
    radius = eps_from_distances(distance, rho) if eps == "auto" else _checked_eps(eps, None)
    return cluster_pseudo_labels_dense(distance, radius, min_samples), radius


def jaccard_dbscan_graph(features: np.ndarray, eps: float | str = 0.6, k1: int = 30,
                         k2: int = 6, rho: float = AUTO_EPS_RHO
                         ) -> tuple[sp.csr_matrix, float]:
    """The Jaccard pairs within DBSCAN's radius as a sparse graph, and the radius.

    DBSCAN only asks which pairs are within ``eps``, so these pairs are all it needs: on this
    graph it gives the labels of the dense matrix. With ``eps="auto"`` the ``rho`` share of
    closest pairs is collected while the pairs stream by (`iter_jaccard_pairs`); pairs
    beyond the current candidate for that share's largest value cannot be within the final
    radius (a mean of smaller values) and are dropped as they come.

    Args:
        features: ``(N, D)`` features.
        eps: DBSCAN radius, or ``"auto"`` (the value `eps_from_distances` gives on the dense
            matrix, up to float summation order).
        k1: k-reciprocal neighbourhood size.
        k2: Query-expansion size.
        rho: Share of the closest pairs behind ``eps="auto"``.

    Returns:
        ``(graph, radius)``: ``(N, N)`` float32 CSR distances of the pairs within the radius
        (all stored pairs, i.e. all pairs closer than 1, when the radius is 1 or more; unstored
        pairs are farther than the radius, not at a known distance) and the radius.
    """
    num_items = np.asarray(features).shape[0]
    closest = _ClosestPairs(_pair_count(num_items, rho)) if eps == "auto" else None
    radius = None if closest else _checked_eps(eps, None)
    kept = []
    for start, rows, cols, dist in iter_jaccard_pairs(features, k1, k2):
        if closest:
            closest.add(dist[start + rows < cols])  # the pairs i < j, as the dense quantile
        kept.append(_pairs_within((start, rows, cols, dist),
                                  closest.bound if closest else radius))
    if closest:
        radius = closest.radius()
        kept = [_pairs_within(block, radius) for block in kept]
    return csr_from_pair_blocks(kept, num_items), radius


def _pairs_within(block: tuple[int, np.ndarray, np.ndarray, np.ndarray], limit: float
                  ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of an `iter_jaccard_pairs` block at distance ``<= limit``."""
    start, rows, cols, dist = block
    # A float64 limit, so the comparison is DBSCAN's (float64), not a float32 one.
    keep = dist <= np.float64(limit)
    return start, rows[keep], cols[keep], dist[keep]


def _pair_count(num_items: int, rho: float) -> int:
    """How many of the ``N (N - 1) / 2`` pairs the ``rho`` share is (as `eps_from_distances`)."""
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"eps_from_distances: rho must be in (0, 1], got {rho}")
    num_pairs = num_items * (num_items - 1) // 2
    if num_pairs == 0:
        raise ValueError("eps_from_distances: needs at least two items")
    return max(1, round(rho * num_pairs))


class _ClosestPairs:
    """The ``count`` smallest distances of a stream of pairs (the unseen ones are at 1).

    Values are buffered and cut back to the ``count`` smallest when the buffer doubles, so
    each value is partitioned a bounded number of times.
    """

    def __init__(self, count: int):
        self.count = count
        self.values = np.zeros(0, dtype=np.float64)
        self.bound = 1.0  # no pair beyond it can be within the final radius

    def add(self, distances: np.ndarray) -> None:
        distances = distances.astype(np.float64)
        self.values = np.concatenate([self.values, distances[distances <= self.bound]])
        if self.values.size > 2 * self.count or (self.bound == 1.0
                                                 and self.values.size >= self.count):
            self._cut()

    def _cut(self) -> None:
        if self.values.size > self.count:
            self.values = np.partition(self.values, self.count - 1)[: self.count]
        if self.values.size == self.count:
            # The count-th smallest seen bounds the final radius (a mean of smaller values);
            # DBSCAN's radius is at least MIN_EPS.
            self.bound = max(float(self.values.max()), MIN_EPS)

    def radius(self) -> float:
        """The mean of the ``count`` smallest, unseen pairs at 1 (at least `MIN_EPS`)."""
        self._cut()
        missing = self.count - self.values.size
        return max(float((self.values.sum() + missing * 1.0) / self.count), MIN_EPS)


def relabel_contiguous(labels: np.ndarray) -> np.ndarray:
    """Renumbers non-negative labels to ``0..C-1`` in order of first appearance; keeps -1."""
    labels = np.asarray(labels)
    out = np.full(labels.shape, -1, dtype=np.int64)
    mapping: dict[int, int] = {}
    for i, label in enumerate(labels.tolist()):
        if label >= 0:
            out[i] = mapping.setdefault(label, len(mapping))
    return out


def cluster_centroids(features: np.ndarray, labels: np.ndarray,
                      num_clusters: int | None = None) -> np.ndarray:
    """L2-normalised mean feature of every cluster (the initial cluster memory).

    Args:
        features: ``(N, D)`` features.
        labels: ``(N,)`` labels in ``0..C-1`` or -1 (ignored).
        num_clusters: ``C``; defaults to ``labels.max() + 1``.

    Returns:
        ``float32`` array ``(C, D)``.
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    num_clusters = int(labels.max()) + 1 if num_clusters is None else num_clusters
    keep = labels >= 0
    sums = np.zeros((num_clusters, features.shape[1]))
    np.add.at(sums, labels[keep], features[keep])
    return l2_normalize(sums).astype(np.float32)


@dataclasses.dataclass
class ClusteringStats:
    """What one clustering round produced.

    Attributes:
        num_clusters: Clusters found.
        num_outliers: Images left unlabelled (dropped this epoch).
        ari: Adjusted Rand index against the true ids (None without ground truth).
        nmi: Normalised mutual information against the true ids (None without ground truth).
    """

    num_clusters: int
    num_outliers: int
    ari: float | None = None
    nmi: float | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        """The fields as a plain dict (for history logs)."""
        return dataclasses.asdict(self)


def clustering_stats(labels: np.ndarray, true_ids: np.ndarray | None = None) -> ClusteringStats:
    """Counts clusters and outliers and, given true ids, scores the pseudo-labels.

    Outliers are scored as singleton clusters, so dropping images is not rewarded.

    Args:
        labels: Pseudo-labels (``-1`` = outlier).
        true_ids: Ground-truth person ids of the same images, or None.

    Returns:
        A `ClusteringStats`.
    """
    labels = np.asarray(labels)
    num_clusters = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
    outliers = labels < 0
    stats = ClusteringStats(num_clusters=num_clusters, num_outliers=int(outliers.sum()))
    if true_ids is not None:
        scored = labels.copy()
        scored[outliers] = num_clusters + np.arange(int(outliers.sum()))
        true_ids = np.asarray(true_ids)
        stats.ari = float(adjusted_rand_score(true_ids, scored))
        stats.nmi = float(normalized_mutual_info_score(true_ids, scored))
    return stats
