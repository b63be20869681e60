import numpy as np
import pytest

from valpat_keras.evaluation import (
    evaluate_reid,
    evaluate_reid_from_blocks,
    evaluate_reid_from_features,
    iter_distance_blocks,
    pairwise_distance,
)


def _ids(ref):
    return ref["q_pids"], ref["g_pids"], ref["q_camids"], ref["g_camids"]


@pytest.mark.parametrize("key,distmat", [("reid", "distmat"), ("rerank", "reranked_distmat")])
@pytest.mark.parametrize("block_size", [512, 7])
def test_reference_values(reid_ref, expected, key, distmat, block_size):
    res = evaluate_reid(reid_ref[distmat], *_ids(reid_ref), block_size=block_size)
    exp = expected[key]
    np.testing.assert_allclose(res["cmc"], exp["cmc"], atol=1e-6, rtol=0)
    for name in ("rank1", "rank5", "rank10", "mAP", "mINP"):
        assert res[name] == pytest.approx(exp[name], abs=1e-6), name
    assert res["num_valid_queries"] == exp["num_valid_q"]
    assert len(res["all_AP"]) == exp["num_valid_q"]


def test_features_path_equals_distmat_path(reid_ref, expected):
    assert np.array_equal(pairwise_distance(reid_ref["qf"], reid_ref["gf"], "sqeuclidean"),
                          reid_ref["distmat"])
    res = evaluate_reid_from_features(reid_ref["qf"], reid_ref["gf"], *_ids(reid_ref),
                                      metric="sqeuclidean", block_size=33)
    assert res["mAP"] == pytest.approx(expected["reid"]["mAP"], abs=1e-6)
    assert res["mINP"] == pytest.approx(expected["reid"]["mINP"], abs=1e-6)
    blocks = iter_distance_blocks(reid_ref["qf"], reid_ref["gf"], "sqeuclidean", 50)
    res_b = evaluate_reid_from_blocks(blocks, *_ids(reid_ref))
    assert res_b["rank1"] == pytest.approx(expected["reid"]["rank1"], abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("filter_cam", [True, False])
def test_random_cases_match_per_query_loop(market_loop, seed, filter_cam):
    rng = np.random.default_rng(seed)
    n_q, n_g = 37, 211
    q_pids = rng.integers(1, 15, n_q)
    g_pids = rng.integers(0, 15, n_g)  # pid 0: distractors
    q_camids, g_camids = rng.integers(0, 3, n_q), rng.integers(0, 3, n_g)
    distmat = rng.random((n_q, n_g)).astype(np.float32)
    res = evaluate_reid(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20,
                        filter_same_camera=filter_cam, block_size=5)
    cmc, m_ap, m_inp, num_valid = market_loop(distmat, q_pids, g_pids, q_camids, g_camids,
                                                  20, filter_cam)
    np.testing.assert_allclose(res["cmc"], cmc, atol=1e-12)
    assert res["mAP"] == pytest.approx(m_ap, abs=1e-12)
    assert res["mINP"] == pytest.approx(m_inp, abs=1e-12)
    assert res["num_valid_queries"] == num_valid


def test_no_valid_query_raises_clear_error():
    distmat = np.array([[0.1, 0.2]], dtype=np.float32)
    with pytest.raises(ValueError, match="no query has a gallery image"):
        evaluate_reid(distmat, np.array([1]), np.array([1, 2]), np.array([0]), np.array([0, 1]))


def test_same_camera_only_query_is_skipped_and_distractor_is_negative():
    # Query 0 (pid 1) only has a same-camera match; query 1 (pid 2) has its match at rank 2
    # behind a pid-0 distractor.
    g_pids = np.array([1, 0, 2])
    g_camids = np.array([0, 1, 1])
    distmat = np.array([[0.1, 0.2, 0.3], [0.5, 0.1, 0.2]], dtype=np.float32)
    res = evaluate_reid(distmat, np.array([1, 2]), g_pids, np.array([0, 0]), g_camids)
    assert res["num_valid_queries"] == 1
    assert res["rank1"] == 0.0
    assert res["cmc"][1] == 1.0
    assert res["mAP"] == pytest.approx(0.5)
    assert res["mINP"] == pytest.approx(0.5)
    assert res["cmc"].shape == (3,)  # max_rank clipped to the gallery size


def test_same_camera_items_are_removed_before_ranking():
    # The same-pid same-camera item is closest; after removal the other match is rank 1.
    distmat = np.array([[0.1, 0.3, 0.2]], dtype=np.float32)
    res = evaluate_reid(distmat, np.array([4]), np.array([4, 4, 9]), np.array([0]),
                        np.array([0, 1, 2]))
    assert res["rank1"] == 0.0 and res["mAP"] == pytest.approx(0.5)
    res = evaluate_reid(distmat, np.array([4]), np.array([4, 4, 9]), np.array([0]),
                        np.array([0, 1, 2]), filter_same_camera=False)
    assert res["rank1"] == 1.0
    assert res["mAP"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert res["mINP"] == pytest.approx(2 / 3)


def test_single_image_gallery():
    res = evaluate_reid(np.array([[0.4], [0.2]]), np.array([3, 3]), np.array([3]),
                        np.array([0, 1]), np.array([2]))
    assert res["num_valid_queries"] == 2
    assert res["rank1"] == 1.0 and res["mAP"] == 1.0 and res["mINP"] == 1.0


def test_shape_and_argument_errors():
    with pytest.raises(ValueError, match="g_pids has 1 entries, expected 2"):
        evaluate_reid(np.zeros((1, 2)), np.array([1]), np.array([1]), np.array([0]),
                      np.array([0, 1]))
    with pytest.raises(ValueError, match="needs q_camids"):
        evaluate_reid(np.zeros((1, 2)), np.array([1]), np.array([1, 2]))
