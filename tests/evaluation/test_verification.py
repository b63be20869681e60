"""Verification metrics: ROC, TPR@FPR, EER and thresholds against scikit-learn.

The pairs are rebuilt here independently (a double loop over query x gallery with the
Market-1501 removal) and scored with ``sklearn.metrics.roc_curve`` / ``roc_auc_score``.
"""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from valpat_keras.errors import InputError
from valpat_keras.evaluation.verification import (
    calibrate_on_pairs,
    calibrate_threshold,
    equal_error_rate,
    fpr_key,
    operating_point,
    read_calibration,
    roc_auc,
    roc_from_scores,
    tpr_at_fpr,
    verification_metrics,
    verification_pairs,
    verification_roc,
    write_calibration,
)


def _people(seed: int, num_query: int = 40, num_gallery: int = 300, ids: int = 12):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, 8))
    q_pids, g_pids = rng.integers(0, ids, num_query), rng.integers(0, ids, num_gallery)
    qf = centres[q_pids] + rng.normal(scale=1.2, size=(num_query, 8))
    gf = centres[g_pids] + rng.normal(scale=1.2, size=(num_gallery, 8))
    return (qf.astype(np.float32), gf.astype(np.float32), q_pids, g_pids,
            rng.integers(0, 3, num_query), rng.integers(0, 3, num_gallery))


def _loop_pairs(sim, q_pids, g_pids, q_camids, g_camids):
    scores, labels = [], []
    for i in range(sim.shape[0]):
        for j in range(sim.shape[1]):
            if q_pids[i] == g_pids[j] and q_camids[i] == g_camids[j]:
                continue  # same person, same camera: removed as in CMC / mAP
            scores.append(sim[i, j])
            labels.append(q_pids[i] == g_pids[j])
    return np.array(scores), np.array(labels)


def _cosine(qf, gf):
    qn, gn = qf.astype(np.float64), gf.astype(np.float64)
    qn /= np.linalg.norm(qn, axis=1, keepdims=True)
    gn /= np.linalg.norm(gn, axis=1, keepdims=True)
    return qn @ gn.T


def _sklearn_tpr_at(labels, scores, target):
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return tpr[fpr <= target].max()


def _sklearn_eer(labels, scores):
    """EER from scikit-learn's full curve: linear interpolation where FNR - FPR changes sign."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    gap = 1 - tpr - fpr
    i = np.argmax(gap <= 0)
    if gap[i] == 0:
        return fpr[i]
    return fpr[i - 1] + gap[i - 1] / (gap[i - 1] - gap[i]) * (fpr[i] - fpr[i - 1])


def test_pairs_follow_the_reid_protocol():
    qf, gf, *ids = _people(0)
    sim = _cosine(qf, gf)
    scores, labels = verification_pairs(sim, *ids)
    expected_scores, expected_labels = _loop_pairs(sim, *ids)
    np.testing.assert_array_equal(scores, expected_scores)
    np.testing.assert_array_equal(labels, expected_labels)
    all_scores, _ = verification_pairs(sim, *ids[:2], filter_same_camera=False)
    assert all_scores.size == sim.size > scores.size


@pytest.mark.parametrize("decimals", [None, 1])  # 1 decimal: many tied scores
def test_roc_equals_sklearn(decimals):
    qf, gf, *ids = _people(1)
    sim = _cosine(qf, gf)
    if decimals is not None:
        sim = np.round(sim, decimals)
    scores, labels = _loop_pairs(sim, *ids)
    curve = roc_from_scores(scores, labels)
    sk_fpr, sk_tpr, sk_thr = roc_curve(labels, scores, drop_intermediate=False)
    # Every vertex is a point of scikit-learn's curve at the same threshold.
    for fpr, tpr, thr in zip(curve.fpr[1:-1], curve.tpr[1:-1], curve.thresholds[1:-1]):
        k = np.flatnonzero(sk_thr >= thr)[-1]  # sklearn's point for "score >= thr"
        assert (sk_fpr[k], sk_tpr[k]) == pytest.approx((fpr, tpr), abs=1e-12)
    assert roc_auc(curve) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    for target in (1e-1, 1e-2, 1e-3, 1e-4):
        assert tpr_at_fpr(curve, target) == pytest.approx(
            _sklearn_tpr_at(labels, scores, target), abs=1e-12)
    assert equal_error_rate(curve) == pytest.approx(_sklearn_eer(labels, scores), abs=1e-12)


def test_eer_brackets_the_threshold_sweep():
    """Independent check: EER lies between FPR and FNR where they cross in a sweep."""
    rng = np.random.default_rng(4)
    labels = rng.random(4000) < 0.2
    scores = rng.normal(size=4000) + 1.5 * labels
    eer = equal_error_rate(roc_from_scores(scores, labels))
    best = None
    for t in np.sort(scores):
        fpr = np.mean(scores[~labels] >= t)
        fnr = np.mean(scores[labels] < t)
        if best is None or abs(fpr - fnr) < abs(best[0] - best[1]):
            best = (fpr, fnr)
    assert min(best) - 1e-3 <= eer <= max(best) + 1e-3
    assert 0.15 < eer < 0.30  # d' = 1.5: the EER of two unit normals is about 0.23


def test_blocked_features_equal_dense_pairs():
    qf, gf, *ids = _people(2)
    scores, labels = _loop_pairs(_cosine(qf, gf), *ids)
    dense = roc_from_scores(scores, labels, thresholds=[0.5])
    blocked = verification_roc(qf, gf, *ids, block_size=7, thresholds=[0.5])
    np.testing.assert_array_equal(blocked.false_positives, dense.false_positives)
    np.testing.assert_array_equal(blocked.true_positives, dense.true_positives)
    np.testing.assert_allclose(blocked.thresholds[1:-1], dense.thresholds[1:-1], atol=1e-12)
    assert blocked.counts_at == dense.counts_at
    assert blocked.counts_at[0.5] == (int((scores[labels] >= 0.5).sum()),
                                      int((scores[~labels] >= 0.5).sum()))
    metrics = verification_metrics(blocked, threshold=0.5)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert metrics[fpr_key(1e-2)] == pytest.approx(_sklearn_tpr_at(labels, scores, 1e-2))
    assert metrics["num_positive_pairs"] == labels.sum()
    assert metrics["fpr_at_threshold"] == np.mean(scores[~labels] >= 0.5)


@pytest.mark.parametrize("target", [0.2, 1e-2, 1e-3, 0.0])
def test_threshold_keeps_the_target_fpr(target):
    qf, gf, *ids = _people(3)
    scores, labels = _loop_pairs(_cosine(qf, gf), *ids)
    threshold = calibrate_threshold(scores, labels, target)
    fpr = np.mean(scores[~labels] >= threshold)
    tpr = np.mean(scores[labels] >= threshold)
    assert fpr <= target
    # The highest TPR under that constraint (scikit-learn's curve), no lower.
    assert tpr == pytest.approx(_sklearn_tpr_at(labels, scores, target), abs=1e-12)
    point = operating_point(roc_from_scores(scores, labels), target)
    assert (point["tpr"], point["fpr"]) == pytest.approx((tpr, fpr), abs=1e-12)


def test_threshold_above_everything_when_the_top_pair_is_negative():
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    labels = np.array([False, True, True, False])
    threshold = calibrate_threshold(scores, labels, target_fpr=0.0)
    assert 0.9 < threshold < 0.9 + 1e-9
    assert calibrate_threshold(scores, labels, target_fpr=0.5) == 0.7


def test_calibration_round_trips(tmp_path):
    assert read_calibration(tmp_path) is None
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.3])
    labels = np.array([True, True, False, False, True])
    calibration = calibrate_on_pairs(roc_from_scores(scores, labels), target_fpr=0.0)
    assert calibration["threshold"] == 0.8 and calibration["tpr"] == pytest.approx(2 / 3)
    write_calibration(tmp_path, calibration)
    assert read_calibration(tmp_path) == calibration
    with pytest.raises(ValueError, match="threshold"):
        write_calibration(tmp_path, {"similarity": "cosine"})
    (tmp_path / "verification.json").write_text("{broken")
    with pytest.raises(InputError, match="verification.json"):
        read_calibration(tmp_path)


def test_no_positive_pair_is_a_clear_error():
    with pytest.raises(ValueError, match="no positive pair"):
        roc_from_scores(np.array([0.1, 0.2]), np.array([False, False]))
