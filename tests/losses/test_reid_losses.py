"""The reID losses and the cluster-memory update against NumPy references."""

import numpy as np
import pytest

pytestmark = pytest.mark.keras

import keras

from valpat_keras.losses.reid import (
    batch_hard_triplet,
    cluster_contrast_loss,
    cross_entropy_label_smoothing,
    update_cluster_memory,
    weighted_regularized_triplet,
)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _normalize(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(8, 5)).astype("float32")
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3], dtype="int32")
    return features, labels


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_label_smoothing_cross_entropy_matches_numpy(epsilon):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 7)).astype("float32")
    labels = np.array([0, 3, 6, 2, 2, 5])
    targets = np.full((6, 7), epsilon / 7)
    targets[np.arange(6), labels] += 1.0 - epsilon
    expected = -(targets * _log_softmax(logits.astype(np.float64))).sum(axis=1).mean()
    got = _np(cross_entropy_label_smoothing(labels, logits, epsilon=epsilon))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def _numpy_triplet(features, labels, margin):
    f = features.astype(np.float64)
    dist = np.sqrt(((f[:, None] - f[None]) ** 2).sum(-1))
    same = labels[:, None] == labels[None]
    d_ap = np.where(same, dist, -np.inf).max(axis=1)
    d_an = np.where(same, np.inf, dist).min(axis=1)
    if margin is None:
        return np.log1p(np.exp(d_ap - d_an)).mean()
    return np.maximum(d_ap - d_an + margin, 0).mean()


@pytest.mark.parametrize("margin", [0.3, None, 5.0])
def test_batch_hard_triplet_matches_numpy(batch, margin):
    features, labels = batch
    got = _np(batch_hard_triplet(features, labels, margin=margin))
    np.testing.assert_allclose(got, _numpy_triplet(features, labels, margin), rtol=1e-4)


def test_batch_hard_triplet_is_zero_for_well_separated_identities():
    features = np.repeat(np.eye(4, dtype="float32") * 10.0, 2, axis=0)
    labels = np.repeat(np.arange(4), 2)
    assert float(_np(batch_hard_triplet(features, labels, margin=0.3))) == 0.0


def test_cluster_contrast_loss_matches_numpy_and_masks_unused_rows(batch):
    features, labels = batch
    rng = np.random.default_rng(2)
    memory = _normalize(rng.normal(size=(4, 5))).astype("float32")
    logits = _normalize(features.astype(np.float64)) @ memory.T / 0.05
    expected = -_log_softmax(logits)[np.arange(8), labels].mean()
    got = _np(cluster_contrast_loss(features, labels, memory, temperature=0.05))
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    # Extra rows beyond num_clusters must not change the loss.
    padded = np.concatenate([memory, _normalize(rng.normal(size=(3, 5)))]).astype("float32")
    masked = _np(cluster_contrast_loss(features, labels, padded, 0.05, num_clusters=4))
    np.testing.assert_allclose(masked, expected, rtol=1e-4)
    unmasked = _np(cluster_contrast_loss(features, labels, padded, 0.05))
    assert not np.isclose(unmasked, expected, rtol=1e-4)


@pytest.mark.parametrize("hard", [False, True])
def test_update_cluster_memory_matches_numpy(batch, hard):
    features, labels = batch
    labels = np.array([0, 0, 2, 2, 2, 4, 4, 4], dtype="int32")
    rng = np.random.default_rng(3)
    memory = _normalize(rng.normal(size=(6, 5))).astype("float32")
    f = _normalize(features.astype(np.float64))
    expected = memory.astype(np.float64).copy()
    for c in np.unique(labels):
        members = f[labels == c]
        if hard:
            x = members[np.argmin(members @ memory[c])]
        else:
            x = members.mean(axis=0)
        row = 0.2 * memory[c] + 0.8 * x
        expected[c] = row / np.linalg.norm(row)
    got = _np(update_cluster_memory(memory, features, labels, momentum=0.2, hard=hard))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_array_equal(got[[1, 3, 5]], memory[[1, 3, 5]])


def _numpy_weighted_regularized_triplet(features, labels, margin):
    """AGW's WRT written anchor by anchor: softmax-weighted positive and negative distances."""
    f = features.astype(np.float64)
    losses = []
    for anchor in range(len(f)):
        dist = np.sqrt(((f - f[anchor]) ** 2).sum(-1))
        same = labels == labels[anchor]
        d_pos, d_neg = dist[same], dist[~same]
        w_pos = np.exp(d_pos - d_pos.max())
        w_neg = np.exp(-d_neg - (-d_neg).max())
        d_ap = (w_pos / w_pos.sum() * d_pos).sum()
        d_an = (w_neg / w_neg.sum() * d_neg).sum()
        difference = d_ap - d_an
        losses.append(np.log1p(np.exp(difference)) if margin is None
                      else max(difference + margin, 0.0))
    return np.mean(losses)


@pytest.mark.parametrize("margin", [None, 0.3])
@pytest.mark.parametrize("scale", [1.0, 40.0])
def test_weighted_regularized_triplet_matches_numpy(batch, margin, scale):
    # scale 40: distances in the hundreds, where exp(-d) underflows without the masked shift.
    features, labels = batch
    features = features * scale
    expected = _numpy_weighted_regularized_triplet(features, labels, margin)
    got = _np(weighted_regularized_triplet(features, labels, margin))
    assert np.isfinite(got)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-5)


def test_weighted_regularized_triplet_lies_between_mean_and_hardest_mining(batch):
    # The weighted distances are convex combinations: d_ap <= the hardest positive, d_an >=
    # the hardest negative, so WRT never exceeds the batch-hard soft-margin loss.
    features, labels = batch
    wrt = float(_np(weighted_regularized_triplet(features, labels)))
    hard = float(_np(batch_hard_triplet(features, labels, margin=None)))
    assert 0.0 < wrt < hard
