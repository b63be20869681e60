"""Pseudo-labels for unsupervised re-identification (Cluster Contrast, Dai et al. 2022).

Every epoch the features of all training images are clustered with DBSCAN on the
k-reciprocal Jaccard distance (Zhong et al. 2017); images DBSCAN leaves as outliers are
dropped from that epoch. NumPy / scikit-learn only: no Keras here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from valpat_keras.evaluation.distances import l2_normalize

#: The smallest radius `eps_from_distances` returns (DBSCAN rejects 0).
MIN_EPS = 1e-6

#: Fraction of the closest pairs whose mean distance is the automatic DBSCAN radius (SSG's rho).
AUTO_EPS_RHO = 1.6e-3


def eps_from_distances(distance: np.ndarray, rho: float = AUTO_EPS_RHO) -> float:
    """A DBSCAN radius read off the distance distribution (Fu et al. 2019, SSG).

    The mean of the ``rho`` fraction of smallest off-diagonal distances. A fixed radius
    suits one encoder on one dataset (Cluster Contrast's 0.6 on Market-1501 from a
    pretrained ResNet-50); on another encoder or a small dataset the whole Jaccard
    distribution shifts, and a fixed radius can merge everything into one cluster or find
    none. Tied to the distribution, the radius follows the encoder round by round.

    Args:
        distance: Symmetric ``(N, N)`` distances.
        rho: Fraction of the ``N (N - 1) / 2`` pairs averaged (at least one pair).

    Returns:
        The radius (at least `MIN_EPS`).
    """
    distance = np.asarray(distance, dtype=np.float64)
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"eps_from_distances: rho must be in (0, 1], got {rho}")
    pairs = distance[np.triu_indices(distance.shape[0], k=1)]
    if pairs.size == 0:
        raise ValueError("eps_from_distances: needs at least two items")
    count = max(1, round(rho * pairs.size))
    # Duplicates sit at distance 0, and DBSCAN needs a positive radius.
    return max(float(np.partition(pairs, count - 1)[:count].mean()), MIN_EPS)


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


def cluster_pseudo_labels(distance: np.ndarray, eps: float | str = 0.6,
                          min_samples: int = 4) -> np.ndarray:
    """DBSCAN pseudo-labels from a precomputed distance matrix.

    Args:
        distance: Symmetric ``(N, N)`` distances (e.g. the Jaccard distance, in [0, 1]).
        eps: DBSCAN neighbourhood radius (0.6 in Cluster Contrast on Market-1501), or
            ``"auto"``: read off the distances (`eps_from_distances`).
        min_samples: Neighbours (self included) that make a core point (4 in Cluster Contrast).

    Returns:
        ``int64`` labels of shape ``(N,)``: clusters numbered ``0..C-1`` by first appearance,
        ``-1`` for outliers.

    Example:

    ```python
    labels = cluster_pseudo_labels(jaccard_distance(features), eps=0.6, min_samples=4)
    ```
    """
    distance = np.asarray(distance, dtype=np.float64)
    if distance.ndim != 2 or distance.shape[0] != distance.shape[1]:
        raise ValueError(f"cluster_pseudo_labels: expected a square distance matrix, "
                         f"got shape {distance.shape}")
    # Round-off can leave tiny negatives, which sklearn's precomputed metric rejects.
    distance = np.clip(distance, 0.0, None)
    if eps == "auto":
        eps = eps_from_distances(distance)
    elif isinstance(eps, str) or not eps > 0:
        raise ValueError(f"cluster_pseudo_labels: eps must be a positive number or 'auto', "
                         f"got {eps!r}")
    raw = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed",
                 n_jobs=1).fit_predict(distance)
    return relabel_contiguous(raw)


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
