"""Pseudo-labels for unsupervised re-ID: DBSCAN, centroids, scores and the Jaccard distance."""

import numpy as np
import pytest

from valpat_keras.evaluation.reranking import jaccard_distance, re_ranking_dense_from_features
from valpat_keras.tasks.clustering import (
    cluster_centroids,
    cluster_pseudo_labels,
    clustering_stats,
    relabel_contiguous,
)


def _blobs(num_ids=5, per_id=6, dim=8, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_ids, dim))
    ids = np.repeat(np.arange(num_ids), per_id)
    features = centers[ids] + spread * rng.normal(size=(ids.size, dim))
    return features / np.linalg.norm(features, axis=1, keepdims=True), ids


def test_jaccard_distance_equals_the_jaccard_term_of_dense_re_ranking():
    features, _ = _blobs(seed=1)
    jaccard = jaccard_distance(features, k1=6, k2=3)
    # lambda = 0 leaves only the Jaccard term, computed among all query + gallery items.
    dense = re_ranking_dense_from_features(features[:7], features[7:], k1=6, k2=3,
                                           lambda_value=0.0)
    np.testing.assert_allclose(jaccard[:7, 7:], dense, atol=1e-5)
    np.testing.assert_allclose(np.diag(jaccard), 0.0, atol=1e-6)
    assert jaccard.min() >= -1e-6 and jaccard.max() <= 1.0 + 1e-6


def test_dbscan_on_jaccard_recovers_well_separated_identities():
    features, ids = _blobs()
    labels = cluster_pseudo_labels(jaccard_distance(features, k1=6, k2=2), eps=0.6,
                                   min_samples=3)
    stats = clustering_stats(labels, ids)
    assert stats.num_clusters == 5 and stats.num_outliers == 0
    assert stats.ari == pytest.approx(1.0) and stats.nmi == pytest.approx(1.0)
    assert sorted(set(labels.tolist())) == [0, 1, 2, 3, 4]


def test_outliers_are_dropped_and_scored_as_singletons():
    # Two tight groups of three and two points far from everything.
    points = np.array([0.0, 0.1, 0.2, 5.0, 5.1, 5.2, 10.0, 20.0])
    distance = np.abs(points[:, None] - points[None])
    labels = cluster_pseudo_labels(distance, eps=0.5, min_samples=3)
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1, -1, -1])
    stats = clustering_stats(labels, np.array([4, 4, 4, 7, 7, 7, 8, 9]))
    assert stats.num_outliers == 2 and stats.ari == pytest.approx(1.0)
    merged = clustering_stats(np.zeros(6, dtype=int), np.repeat([1, 2], 3))
    assert merged.ari == pytest.approx(0.0) and merged.num_clusters == 1


def test_relabel_and_centroids():
    np.testing.assert_array_equal(relabel_contiguous(np.array([7, -1, 3, 7, 3])),
                                  [0, -1, 1, 0, 1])
    features = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 0.0], [5.0, 5.0]])
    centroids = cluster_centroids(features, np.array([0, 0, 1, -1]))
    np.testing.assert_allclose(centroids, [[np.sqrt(0.5), np.sqrt(0.5)], [1.0, 0.0]],
                               atol=1e-6)


def test_cluster_pseudo_labels_rejects_a_non_square_matrix():
    with pytest.raises(ValueError, match="square"):
        cluster_pseudo_labels(np.zeros((3, 4)))
