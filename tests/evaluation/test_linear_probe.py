"""The attribute linear probe: folded standardisation, C chosen on validation, test once."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from valpat_keras.evaluation import evaluate_attributes
from valpat_keras.evaluation.linear_probe import attribute_linear_probe, fit_attribute_probe


def _data(n, seed, dim=6, attributes=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)) * [1, 5, 0.2, 1, 1, 3] + [0, 10, -2, 0, 1, 0]
    logits = x[:, :attributes] - np.asarray([0.0, 10.0, -2.0])[:attributes]
    y = (logits + 0.8 * rng.normal(size=logits.shape) > 0.7).astype(np.int8)
    y[0, 0] = -1  # an unknown label is ignored
    return x, y


def test_joint_probe_equals_scikit_learns_standardised_logistic_regressions():
    x, y = _data(200, 0)
    weights, bias = fit_attribute_probe(x, y, c=0.3, balanced=True)
    probs = 1 / (1 + np.exp(-(x @ weights + bias)))
    scaler = StandardScaler().fit(x)
    for j in range(y.shape[1]):
        known = y[:, j] >= 0
        model = LogisticRegression(C=0.3, class_weight="balanced", tol=1e-10, max_iter=10000)
        model.fit(scaler.transform(x[known]), y[known, j])
        np.testing.assert_allclose(probs[:, j], model.predict_proba(scaler.transform(x))[:, 1],
                                   atol=1e-5)


def test_constant_attribute_gets_a_saturated_bias():
    x, y = _data(50, 1)
    y[:, 2] = 0
    weights, bias = fit_attribute_probe(x, y)
    assert np.all(weights[:, 2] == 0) and bias[2] == -10.0


def test_probe_picks_c_on_validation_and_scores_test_at_that_c():
    (tx, ty), (vx, vy), (sx, sy) = _data(150, 2), _data(60, 3), _data(60, 4)
    grid = (1e-4, 0.1, 10.0)
    result = attribute_linear_probe(tx, ty, vx, vy, sx, sy, c_grid=grid)

    def ma(c, x, y):
        w, b = fit_attribute_probe(tx, ty, c)
        return evaluate_attributes(y, 1 / (1 + np.exp(-(x @ w + b))))["ma"]

    val = {c: ma(c, vx, vy) for c in grid}
    assert result["val_ma_by_c"] == pytest.approx(val)
    assert result["c"] == max(val, key=val.get)
    assert result["test_ma"] == pytest.approx(ma(result["c"], sx, sy))
    with pytest.raises(ValueError, match="the val split"):
        attribute_linear_probe(tx, ty, vx[:0], vy[:0], sx, sy)
