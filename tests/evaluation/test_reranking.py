import numpy as np
import pytest

from valpat_keras.evaluation import (
    evaluate_reid_from_blocks,
    pairwise_distance,
    re_ranking,
    re_ranking_from_features,
)
from valpat_keras.evaluation.reranking import iter_re_ranking_blocks


def _dense(qf, gf, metric="sqeuclidean", **kwargs):
    return re_ranking(pairwise_distance(qf, gf, metric), pairwise_distance(qf, qf, metric),
                      pairwise_distance(gf, gf, metric), **kwargs)


def test_dense_equals_reference(reid_ref):
    out = _dense(reid_ref["qf"], reid_ref["gf"])
    assert out.shape == reid_ref["reranked_distmat"].shape and out.dtype == np.float32
    np.testing.assert_allclose(out, reid_ref["reranked_distmat"], atol=1e-5, rtol=0)


def test_sparse_equals_reference(reid_ref):
    out = re_ranking_from_features(reid_ref["qf"], reid_ref["gf"], block_size=128)
    np.testing.assert_allclose(out, reid_ref["reranked_distmat"], atol=1e-5, rtol=0)


def test_sparse_blocks_give_reference_metrics(reid_ref, expected):
    blocks = iter_re_ranking_blocks(reid_ref["qf"], reid_ref["gf"], block_size=64)
    res = evaluate_reid_from_blocks(blocks, reid_ref["q_pids"], reid_ref["g_pids"],
                                    reid_ref["q_camids"], reid_ref["g_camids"])
    assert res["mAP"] == pytest.approx(expected["rerank"]["mAP"], abs=1e-6)
    assert res["rank1"] == pytest.approx(expected["rerank"]["rank1"], abs=1e-6)


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean", "cosine"])
@pytest.mark.parametrize("k1,k2", [(7, 3), (4, 1)])
def test_sparse_equals_dense_random(metric, k1, k2):
    rng = np.random.default_rng(k1 * 10 + k2)
    qf = rng.normal(size=(13, 6)).astype(np.float32)
    gf = rng.normal(size=(41, 6)).astype(np.float32)
    dense = _dense(qf, gf, metric, k1=k1, k2=k2, lambda_value=0.4)
    sparse = re_ranking_from_features(qf, gf, k1=k1, k2=k2, lambda_value=0.4, block_size=9,
                                      metric=metric)
    np.testing.assert_allclose(sparse, dense, atol=1e-5, rtol=0)
    assert not np.allclose(dense, pairwise_distance(qf, gf, metric))  # re-ranking changed it


def test_jaccard_distance_is_the_jaccard_term_of_re_ranking():
    from valpat_keras.evaluation.reranking import jaccard_distance

    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    jaccard = jaccard_distance(x, k1=6, k2=3, block_size=16)
    dense = _dense(x[:15], x[15:], k1=6, k2=3, lambda_value=0.0)
    np.testing.assert_allclose(jaccard[:15, 15:], dense, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.diag(jaccard), 0.0, atol=1e-6)


@pytest.mark.parametrize("block_size", [7, 512])
def test_jaccard_graph_stores_every_pair_below_one_with_the_dense_value(block_size):
    from valpat_keras.evaluation.reranking import jaccard_distance, jaccard_neighbour_graph

    rng = np.random.default_rng(6)
    x = rng.normal(size=(60, 6)).astype(np.float32)
    x[3] = x[2]  # a duplicate: distance exactly 0, kept as a stored entry
    dense = jaccard_distance(x, k1=5, k2=2, block_size=block_size)
    graph = jaccard_neighbour_graph(x, k1=5, k2=2, block_size=block_size)
    coo = graph.tocoo()  # stored entries, zeros included (nonzero() would drop them)
    stored = np.zeros(dense.shape, dtype=bool)
    stored[coo.row, coo.col] = True
    np.testing.assert_array_equal(stored, dense < 1.0)
    np.testing.assert_array_equal(graph.toarray()[stored], dense[stored])  # bit-identical
    assert (dense[~stored] == 1.0).all() and stored.mean() < 0.5
    assert graph[2, 3] == 0.0 and stored[2, 3] and np.diag(stored).all()
    assert graph.has_sorted_indices
