import numpy as np
import pytest

from valpat_keras.evaluation import evaluate_text_search


def _irra_rank(similarity, q_pids, g_pids, max_rank=10):
    """IRRA ``utils/metrics.py::rank`` in NumPy (percent)."""
    indices = np.argsort(-similarity, axis=1, kind="stable")
    matches = (g_pids[indices] == q_pids[:, None]).astype(np.float64)
    all_cmc = matches[:, :max_rank].cumsum(1)
    all_cmc[all_cmc > 1] = 1
    all_cmc = all_cmc.mean(0) * 100
    num_rel = matches.sum(1)
    tmp_cmc = matches.cumsum(1)
    inp = np.array([tmp_cmc[i][row.nonzero()[0].max()] / (row.nonzero()[0].max() + 1.0)
                    for i, row in enumerate(matches)])
    tmp_cmc = tmp_cmc / (np.arange(matches.shape[1]) + 1.0) * matches
    return all_cmc, (tmp_cmc.sum(1) / num_rel).mean() * 100, inp.mean() * 100


def test_reference_values(t2i_ref, expected):
    res = evaluate_text_search(t2i_ref["similarity"], t2i_ref["q_pids"], t2i_ref["g_pids"],
                               block_size=100)
    for name in ("R1", "R5", "R10", "mAP", "mINP"):
        assert 100 * res[name] == pytest.approx(expected["t2i"][name], abs=1e-6), name
    assert res["num_queries"] == len(t2i_ref["q_pids"])


def test_random_case_matches_irra_loop():
    rng = np.random.default_rng(3)
    g_pids = rng.integers(0, 9, 60)
    q_pids = rng.choice(g_pids, 25)
    similarity = rng.normal(size=(25, 60)).astype(np.float32)
    res = evaluate_text_search(similarity, q_pids, g_pids, block_size=4)
    cmc, m_ap, m_inp = _irra_rank(similarity, q_pids, g_pids)
    np.testing.assert_allclose(100 * res["cmc"], cmc, atol=1e-9)
    assert 100 * res["mAP"] == pytest.approx(m_ap, abs=1e-9)
    assert 100 * res["mINP"] == pytest.approx(m_inp, abs=1e-9)


def test_caption_without_gallery_identity_raises():
    with pytest.raises(ValueError, match="no gallery image of their pid"):
        evaluate_text_search(np.zeros((1, 2)), np.array([5]), np.array([1, 2]))
