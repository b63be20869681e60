import numpy as np
import pytest

from valpat_keras.evaluation import evaluate_attributes


def _rethinking_par(gt_label, preds_probs, threshold=0.5):
    """Rethinking_of_PAR ``get_pedestrian_metrics`` (no masking: labels are 0/1)."""
    pred = preds_probs > threshold
    eps = 1e-20
    tp = ((gt_label == 1) & pred).sum(0)
    tn = ((gt_label == 0) & ~pred).sum(0)
    label_ma = (tp / ((gt_label == 1).sum(0) + eps) + tn / ((gt_label == 0).sum(0) + eps)) / 2
    inter = ((gt_label == 1) & pred).sum(1)
    union = ((gt_label == 1) | pred).sum(1)
    acc = np.mean(inter / (union + eps))
    prec = np.mean(inter / (pred.sum(1) + eps))
    rec = np.mean(inter / ((gt_label == 1).sum(1) + eps))
    return label_ma, acc, prec, rec, 2 * prec * rec / (prec + rec + eps)


def test_reference_values(par_ref, expected):
    res = evaluate_attributes(par_ref["gt_label"], par_ref["preds_probs"])
    exp = expected["par"]
    for name in ("ma", "instance_acc", "instance_prec", "instance_recall", "instance_f1"):
        assert res[name] == pytest.approx(exp[name], abs=1e-6), name
    for name in ("label_ma", "label_pos_recall", "label_neg_recall", "label_prec", "label_acc",
                 "label_f1", "error_num", "fn_num", "fp_num"):
        np.testing.assert_allclose(res[name], exp[name], atol=1e-6, err_msg=name)


def test_random_predictions_match_rethinking_of_par():
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 26)) < 0.3).astype(np.int64)
    probs = rng.random((200, 26)).astype(np.float32)
    res = evaluate_attributes(labels, probs)
    label_ma, acc, prec, rec, f1 = _rethinking_par(labels, probs)
    np.testing.assert_allclose(res["label_ma"], label_ma, atol=1e-12)
    assert res["ma"] == pytest.approx(label_ma.mean(), abs=1e-12)
    assert (res["instance_acc"], res["instance_prec"], res["instance_recall"],
            res["instance_f1"]) == pytest.approx((acc, prec, rec, f1), abs=1e-12)
    assert res["instance_f1"] != pytest.approx(0.0)


def test_hand_computed_with_unknown_labels_masked():
    labels = np.array([[1, 0, -1], [0, 1, 2]])
    probs = np.array([[0.9, 0.6, 0.9], [0.5, 0.7, 0.99]])  # 0.5 is not > 0.5: negative
    res = evaluate_attributes(labels, probs)
    np.testing.assert_allclose(res["label_pos_recall"], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(res["label_neg_recall"], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(res["label_ma"], [1.0, 0.5, 0.0])
    # Image 0: P = {0, 1} (2 is unknown), G = {0}; image 1: P = {1}, G = {1}.
    assert res["instance_acc"] == pytest.approx((0.5 + 1.0) / 2)
    assert res["instance_prec"] == pytest.approx((0.5 + 1.0) / 2)
    assert res["instance_recall"] == pytest.approx(1.0)
    assert res["instance_f1"] == pytest.approx(2 * 0.75 / 1.75)
    np.testing.assert_allclose(res["fp_num"], [0, 1, 0])


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="must both be"):
        evaluate_attributes(np.zeros((2, 3)), np.zeros((2, 4)))
