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


def test_auto_eps_is_the_mean_of_the_closest_pairs():
    from valpat_keras.tasks.clustering import eps_from_distances

    rng = np.random.default_rng(3)
    points = rng.normal(size=(12, 2))
    distance = np.linalg.norm(points[:, None] - points[None], axis=-1)
    pairs = np.sort(distance[np.triu_indices(12, k=1)])  # 66 pairs
    assert eps_from_distances(distance, rho=0.1) == pytest.approx(pairs[:7].mean())
    assert eps_from_distances(distance, rho=1e-9) == pytest.approx(pairs[0])
    with pytest.raises(ValueError, match="rho"):
        eps_from_distances(distance, rho=0.0)


def test_auto_eps_finds_the_identities_where_a_fixed_radius_merges_them():
    from valpat_keras.tasks.clustering import eps_from_distances, rho_for_identity_size

    features, ids = _blobs(num_ids=6, per_id=8, spread=0.3, seed=4)
    distance = jaccard_distance(features, k1=30, k2=6)
    merged = clustering_stats(cluster_pseudo_labels(distance, eps=0.6, min_samples=4), ids)
    radius = eps_from_distances(distance, rho_for_identity_size(48, 8))
    auto = clustering_stats(cluster_pseudo_labels(distance, eps=radius, min_samples=4), ids)
    assert merged.num_clusters <= 2
    assert auto.num_clusters > merged.num_clusters and auto.ari > merged.ari + 0.5
    # The default share (SSG's, for Market-1501's 17 images per identity) still clusters.
    assert clustering_stats(cluster_pseudo_labels(distance, eps="auto"), ids).num_clusters >= 1
    with pytest.raises(ValueError, match="eps must be a positive number or 'auto'"):
        cluster_pseudo_labels(distance, eps="large")


def test_rho_for_identity_size_reproduces_ssg_on_market():
    from valpat_keras.tasks.clustering import AUTO_EPS_RHO, rho_for_identity_size

    # Market-1501 train: 12,936 images of 751 identities.
    assert rho_for_identity_size(12936, 12936 / 751) == pytest.approx(AUTO_EPS_RHO, rel=0.03)
    # Eight images per identity among 432: the same-identity share is 7 / 431.
    assert rho_for_identity_size(432, 8) == pytest.approx(1.3 * 7 / 431)
    with pytest.raises(ValueError, match="image per identity"):
        rho_for_identity_size(1, 8)


def _mixed_blobs(seed, num_ids=30, per_id=10, dim=24):
    """Overlapping identities (DBSCAN finds some, merges or drops others) and a duplicate."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(num_ids), per_id)
    features = 0.8 * rng.normal(size=(num_ids, dim))[ids] + rng.normal(size=(ids.size, dim))
    features[5] = features[4]  # an exact duplicate: a stored zero distance
    return features / np.linalg.norm(features, axis=1, keepdims=True), ids


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("eps", [0.3, 0.6, "auto"])
def test_sparse_pseudo_labels_equal_the_dense_path(seed, eps):
    from valpat_keras.tasks.clustering import jaccard_pseudo_labels, jaccard_pseudo_labels_dense

    features, _ = _mixed_blobs(seed)
    for rho in ([0.02, 0.05] if eps == "auto" else [None]):
        kwargs = {"rho": rho} if rho else {}
        dense, dense_radius = jaccard_pseudo_labels_dense(features, eps, 4, k1=20, **kwargs)
        sparse, sparse_radius = jaccard_pseudo_labels(features, eps, 4, k1=20, **kwargs)
        np.testing.assert_array_equal(sparse, dense)
        # The same multiset of closest pairs, summed in another order.
        assert sparse_radius == pytest.approx(dense_radius, rel=1e-12)
        # Not a degenerate case: several clusters and some outliers.
        assert dense.max() >= 2 and (dense < 0).any()


def test_dbscan_graph_keeps_only_the_pairs_within_the_radius():
    from valpat_keras.tasks.clustering import jaccard_dbscan_graph

    features, _ = _mixed_blobs(3)
    dense = jaccard_distance(features, k1=20, k2=6)
    graph, radius = jaccard_dbscan_graph(features, 0.6, k1=20, k2=6)
    assert radius == 0.6 and graph.nnz == int((dense <= 0.6).sum()) < dense.size // 4
    np.testing.assert_array_equal(graph.toarray()[dense <= 0.6], dense[dense <= 0.6])
    with pytest.raises(ValueError, match="eps must be a positive number"):
        jaccard_dbscan_graph(features, -1.0)


def test_sparse_auto_eps_counts_the_unstored_pairs_at_one():
    from valpat_keras.evaluation.reranking import jaccard_neighbour_graph
    from valpat_keras.tasks.clustering import eps_from_distances

    features, _ = _mixed_blobs(4, num_ids=20, per_id=6)
    dense = jaccard_distance(features, k1=8, k2=3)
    graph = jaccard_neighbour_graph(features, k1=8, k2=3)
    upper = dense[np.triu_indices(len(dense), k=1)]
    # A third of the pairs are implicit (at 1) in the graph.
    assert (upper == 1.0).mean() > 0.25 and graph.nnz == int((dense < 1.0).sum())
    for rho in (1.6e-3, 0.1, 0.9, 1.0):  # 0.9 and 1.0 reach into the implicit pairs
        assert eps_from_distances(graph, rho) == pytest.approx(eps_from_distances(dense, rho),
                                                               rel=1e-12)
        closest = np.sort(upper.astype(np.float64))[:max(1, round(rho * upper.size))]
        assert eps_from_distances(graph, rho) == pytest.approx(max(closest.mean(), 1e-6),
                                                               rel=1e-12)


def test_sparse_graph_stored_zeros_are_neighbours_and_a_radius_of_one_joins_all():
    import scipy.sparse as sp

    # 0-1-2 chained by stored zeros (duplicates), 3 and 4 apart; min_samples 3.
    rows = [0, 1, 1, 2, 0, 1, 2, 3, 4]
    cols = [1, 0, 2, 1, 0, 1, 2, 3, 4]
    graph = sp.csr_matrix((np.zeros(9, dtype=np.float32), (rows, cols)), shape=(5, 5))
    assert graph.nnz == 9  # the zeros are stored entries
    # 1 has three neighbours (0, 2 and itself): a core point, 0 and 2 join it as borders.
    np.testing.assert_array_equal(cluster_pseudo_labels(graph, eps=0.5, min_samples=3),
                                  [0, 0, 0, -1, -1])
    np.testing.assert_array_equal(cluster_pseudo_labels(graph, eps=0.5, min_samples=4), [-1] * 5)
    # Unstored pairs are at 1: eps >= 1 makes every pair a neighbour, as the dense matrix.
    dense = np.ones((5, 5))
    dense[rows, cols] = 0.0
    for eps, min_samples in ((0.5, 3), (1.0, 3), (1.0, 5), (1.5, 6)):
        np.testing.assert_array_equal(
            cluster_pseudo_labels(graph, eps, min_samples),
            cluster_pseudo_labels(dense, eps, min_samples))
    with pytest.raises(ValueError, match="square"):
        cluster_pseudo_labels(sp.csr_matrix((3, 4)))
