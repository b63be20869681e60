import numpy as np
import pytest
from keras.ops import convert_to_numpy as to_np

from valpat_keras.models import GeneralizedMeanPooling2D, TokenPooling

pytestmark = pytest.mark.keras


def test_gem_matches_numpy_and_reduces_to_mean_at_p1():
    x = np.random.default_rng(0).random((2, 4, 3, 5)).astype("float32")
    gem = GeneralizedMeanPooling2D(p=3.0)
    expected = np.mean(np.maximum(x, 1e-6) ** 3, axis=(1, 2)) ** (1 / 3)
    np.testing.assert_allclose(to_np(gem(x)), expected, rtol=1e-5)
    avg = GeneralizedMeanPooling2D(p=1.0, trainable_p=False)
    np.testing.assert_allclose(to_np(avg(x)), x.mean(axis=(1, 2)), rtol=1e-5)
    assert len(gem.trainable_weights) == 1 and len(avg.trainable_weights) == 0


def test_token_pooling_masked_mean_ignores_padding():
    x = np.arange(2 * 3 * 2, dtype="float32").reshape(2, 3, 2)
    mask = np.array([[1, 1, 0], [1, 0, 0]], bool)
    out = to_np(TokenPooling("mean")(x, mask=mask))
    np.testing.assert_allclose(out, [x[0, :2].mean(0), x[1, 0]])
    np.testing.assert_allclose(to_np(TokenPooling("cls")(x)), x[:, 0])
    with pytest.raises(ValueError, match="cls"):
        TokenPooling("max")
