import numpy as np
import pytest
from keras.ops import convert_to_numpy as to_np

from valpat_keras.losses import batch_mean_accuracy, positive_ratios, prior_logits, weighted_bce

pytestmark = pytest.mark.keras

LABELS = np.array([[1, 0, -1], [0, 0, 1], [1, -1, 0], [0, 1, 0]], "float32")
LOGITS = np.array([[2.0, -1.0, 0.3], [-0.5, 0.2, 1.5], [0.1, 4.0, -2.0], [-3.0, 0.7, -0.1]],
                  "float32")


def _np_weighted_bce(labels, logits, ratio):
    prob = 1 / (1 + np.exp(-logits))
    mask = (labels == 0) | (labels == 1)
    pos = labels == 1
    weight = np.where(pos, np.exp(1 - ratio), np.exp(ratio)) * mask
    bce = -(pos * np.log(prob) + (1 - pos) * np.log(1 - prob))
    return (weight * bce).sum() / mask.sum(), (weight * bce).sum(1).mean()


def test_positive_ratios_ignore_unknown():
    np.testing.assert_allclose(positive_ratios(LABELS), [0.5, 1 / 3, 1 / 3])
    assert positive_ratios(-np.ones((2, 1)))[0] == 0.5


def test_weighted_bce_matches_numpy_and_masks_unknown():
    ratio = positive_ratios(LABELS)
    ref_mean, ref_sum = _np_weighted_bce(LABELS, LOGITS, ratio)
    np.testing.assert_allclose(float(to_np(weighted_bce(LABELS, LOGITS, ratio))), ref_mean,
                               rtol=1e-5)
    np.testing.assert_allclose(
        float(to_np(weighted_bce(LABELS, LOGITS, ratio, reduction="sum"))), ref_sum, rtol=1e-5)
    # Changing a logit where the label is unknown changes nothing.
    other = LOGITS.copy()
    other[0, 2] = 50.0
    np.testing.assert_allclose(float(to_np(weighted_bce(LABELS, other, ratio))), ref_mean,
                               rtol=1e-5)


def test_prior_logits_minimise_the_weighted_bce_of_a_constant():
    ratios = np.array([0.05, 0.3, 0.5, 0.9], "float32")
    labels = (np.arange(100)[:, None] < np.round(ratios * 100)[None, :]).astype("float32")
    prior = prior_logits(ratios)
    assert prior.dtype == np.float32 and abs(prior[2]) < 1e-6

    def loss(shift):
        logits = np.broadcast_to(prior + shift, labels.shape).astype("float32")
        return float(to_np(weighted_bce(labels, logits, ratios, reduction="sum")))

    assert loss(0.0) < loss(0.05) and loss(0.0) < loss(-0.05)
    # An attribute without positives gets a large negative logit, not -inf.
    assert -7.0 < prior_logits([0.0])[0] < -5.0


def test_batch_mean_accuracy():
    # attr0: TPR 1, TNR 1; attr1: TPR 1, TNR 1/2 (row 2 unknown); attr2: TPR 1, TNR 1.
    np.testing.assert_allclose(float(to_np(batch_mean_accuracy(LABELS, LOGITS))),
                               (1.0 + 0.75 + 1.0) / 3, rtol=1e-6)
    # Only one class present for an attribute: its mA is that class's rate alone.
    labels = np.array([[1.0], [1.0]], "float32")
    np.testing.assert_allclose(
        float(to_np(batch_mean_accuracy(labels, np.array([[1.0], [-1.0]], "float32")))), 0.5)


def test_balanced_weighting_equals_numpy_and_its_prior_is_zero():
    ratio = np.array([0.005, 0.25, 0.5], "float32")
    prob = 1 / (1 + np.exp(-LOGITS))
    mask = (LABELS == 0) | (LABELS == 1)
    pos = LABELS == 1
    clipped = np.clip(ratio, 0.01, 0.99)
    weight = np.where(pos, 0.5 / clipped, 0.5 / (1 - clipped)) * mask
    bce = -(pos * np.log(prob) + (1 - pos) * np.log(1 - prob))
    expected = (weight * bce).sum() / mask.sum()
    got = to_np(weighted_bce(LABELS, LOGITS, ratio, weighting="balanced"))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_array_equal(prior_logits(ratio, weighting="balanced"), 0.0)
    with pytest.raises(ValueError, match="weighting must be one of"):
        weighted_bce(LABELS, LOGITS, ratio, weighting="focal")
