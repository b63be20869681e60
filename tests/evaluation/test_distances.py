import numpy as np
import pytest

from valpat_keras.evaluation import iter_distance_blocks, l2_normalize, pairwise_distance


def test_metrics_against_direct_formulas():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 4)), rng.normal(size=(7, 4))
    diff = a[:, None] - b[None]
    sq = (diff ** 2).sum(-1)
    np.testing.assert_allclose(pairwise_distance(a, b, "sqeuclidean"), sq, rtol=1e-6)
    np.testing.assert_allclose(pairwise_distance(a, b, "euclidean"), np.sqrt(sq), rtol=1e-6)
    cos = (a @ b.T) / np.linalg.norm(a, axis=1)[:, None] / np.linalg.norm(b, axis=1)[None]
    np.testing.assert_allclose(pairwise_distance(a, b, "cosine"), 1 - cos, atol=1e-6)
    assert pairwise_distance(a, b).dtype == np.float32
    assert pairwise_distance(a, a, "euclidean").diagonal().max() < 1e-3


def test_blocks_cover_rows_in_order():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(10, 3)), rng.normal(size=(4, 3))
    full = pairwise_distance(a, b, "cosine")
    parts = list(iter_distance_blocks(a, b, "cosine", block_size=3))
    assert [p[0].start for p in parts] == [0, 3, 6, 9]
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), full)


def test_l2_normalize_and_errors():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    out = l2_normalize(x)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    assert out.dtype == np.float32
    with pytest.raises(ValueError, match="metric must be one of"):
        pairwise_distance(x, x, "manhattan")
    with pytest.raises(ValueError, match="expected"):
        pairwise_distance(x, np.zeros((2, 3)))
