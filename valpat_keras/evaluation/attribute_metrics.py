"""Pedestrian attribute recognition metrics (Rethinking_of_PAR ``get_pedestrian_metrics``).

Label-based: mean accuracy mA over attributes; instance-based: accuracy, precision, recall
per image averaged over images, and F1 from the *averaged* precision and recall.
Labels other than 0/1 (e.g. -1 unknown, RAP's 2 uncertain) are masked out per entry.

`calibrate_attribute_thresholds` picks one decision threshold per attribute on validation
labels, instead of 0.5.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-20
#: What `calibrate_attribute_thresholds` can maximise per attribute.
THRESHOLD_CRITERIA = ("balanced_accuracy", "f1")


def evaluate_attributes(labels: np.ndarray, probs: np.ndarray,
                        threshold: float | np.ndarray = 0.5,
                        predictions: np.ndarray | None = None) -> dict:
    """Label- and instance-based attribute metrics.

    Args:
        labels: ``(N, A)`` ground truth, 1 positive, 0 negative, anything else ignored.
        probs: ``(N, A)`` predicted probabilities; positive iff ``prob > threshold``.
        threshold: Decision threshold, one for all attributes or ``(A,)`` per attribute.
        predictions: ``(N, A)`` bool decisions that replace ``probs > threshold`` (e.g.
            `AttributeRecognizer.decide`, with its mutually exclusive groups); None: the
            threshold decides.

    Returns:
        A dict with ``ma``, ``instance_acc``, ``instance_prec``, ``instance_recall``,
        ``instance_f1`` (floats) and per-attribute arrays ``label_ma``, ``label_pos_recall``,
        ``label_neg_recall``, ``label_prec``, ``label_acc``, ``label_f1``, ``error_num``,
        ``fn_num``, ``fp_num``.

    Raises:
        ValueError: If the shapes differ or are not 2-D.
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs)
    if labels.shape != probs.shape or labels.ndim != 2:
        raise ValueError(f"labels and probs must both be (N, A); got {labels.shape} and "
                         f"{probs.shape}")
    gt_pos = labels == 1
    gt_neg = labels == 0
    decided = (probs > np.asarray(threshold)) if predictions is None else np.asarray(
        predictions, dtype=bool)
    if decided.shape != labels.shape:
        raise ValueError(f"predictions must be {labels.shape}, got {decided.shape}")
    pred = decided & (gt_pos | gt_neg)  # unknown entries count nowhere
    pred_neg = ~decided & gt_neg
    tp = np.sum(gt_pos & pred, axis=0).astype(np.float64)
    tn = np.sum(pred_neg, axis=0).astype(np.float64)
    fp = np.sum(gt_neg & pred, axis=0).astype(np.float64)
    fn = np.sum(gt_pos & ~pred, axis=0).astype(np.float64)
    pos_recall = tp / (gt_pos.sum(axis=0) + EPS)
    neg_recall = tn / (gt_neg.sum(axis=0) + EPS)
    label_ma = (pos_recall + neg_recall) / 2
    label_prec = tp / (tp + fp + EPS)
    out = {
        "label_pos_recall": pos_recall,
        "label_neg_recall": neg_recall,
        "label_prec": label_prec,
        "label_acc": tp / (tp + fp + fn + EPS),
        "label_f1": 2 * label_prec * pos_recall / (label_prec + pos_recall + EPS),
        "label_ma": label_ma,
        "ma": float(np.mean(label_ma)),
        "error_num": fp + fn,
        "fn_num": fn,
        "fp_num": fp,
    }
    intersect = np.sum(gt_pos & pred, axis=1).astype(np.float64)
    union = np.sum(gt_pos | pred, axis=1).astype(np.float64)
    prec = float(np.mean(intersect / (pred.sum(axis=1) + EPS)))
    recall = float(np.mean(intersect / (gt_pos.sum(axis=1) + EPS)))
    out["instance_acc"] = float(np.mean(intersect / (union + EPS)))
    out["instance_prec"] = prec
    out["instance_recall"] = recall
    out["instance_f1"] = 2 * prec * recall / (prec + recall + EPS)
    return out


def _best_threshold(probs: np.ndarray, positive: np.ndarray, criterion: str) -> float:
    """The threshold (``prob > t`` is positive) maximising ``criterion`` on one attribute."""
    values, inverse = np.unique(probs, return_inverse=True)
    num_pos, num_neg = int(positive.sum()), int((~positive).sum())
    # Candidate k predicts positive exactly the probs > values[k - 1] (k = 0: all of them).
    pos_le = np.concatenate([[0], np.cumsum(np.bincount(inverse[positive],
                                                        minlength=values.size))])
    neg_le = np.concatenate([[0], np.cumsum(np.bincount(inverse[~positive],
                                                        minlength=values.size))])
    tp, tn = num_pos - pos_le, neg_le
    if criterion == "balanced_accuracy":
        score = (tp / num_pos + tn / num_neg) / 2
    else:
        score = 2 * tp / np.maximum(2 * tp + (num_neg - tn) + (num_pos - tp), 1)
    # Between two observed probabilities the midpoint; below / above them all, half-way to
    # 0 / 1, so every threshold stays in (0, 1).
    candidates = np.concatenate([[values[0] / 2], (values[:-1] + values[1:]) / 2,
                                 [(values[-1] + 1) / 2]])
    best = np.flatnonzero(score >= score.max() - 1e-12)
    # Ties (a range of equally good thresholds): the one nearest 0.5, the usual default.
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def calibrate_attribute_thresholds(labels: np.ndarray, probs: np.ndarray,
                                   criterion: str = "balanced_accuracy") -> np.ndarray:
    """Per-attribute decision thresholds maximising ``criterion`` on (validation) labels.

    ``"balanced_accuracy"`` (default) is ``(TP / P + TN / N) / 2``, the attribute's term of
    mA: as mA is their mean, the thresholds maximise the mA of these labels exactly (and
    match the headline metric of pedestrian attribute recognition). ``"f1"`` maximises each
    attribute's F1 instead (fewer false positives on rare attributes). The search is exact:
    every distinct probability is a candidate cut, the threshold is the midpoint between
    two consecutive ones. An attribute without both a positive and a negative label keeps
    0.5.

    Args:
        labels: ``(N, A)`` labels, 1 / 0; anything else is ignored.
        probs: ``(N, A)`` predicted probabilities.
        criterion: One of `THRESHOLD_CRITERIA`.

    Returns:
        ``(A,)`` float64 thresholds in ``(0, 1)``; an attribute is positive when
        ``prob > threshold`` (as in `evaluate_attributes`).

    Raises:
        ValueError: Shapes differ or an unknown criterion.
    """
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if labels.shape != probs.shape or labels.ndim != 2:
        raise ValueError(f"labels and probs must both be (N, A); got {labels.shape} and "
                         f"{probs.shape}")
    if criterion not in THRESHOLD_CRITERIA:
        raise ValueError(f"criterion must be one of {THRESHOLD_CRITERIA}, got {criterion!r}")
    thresholds = np.full(labels.shape[1], 0.5)
    for j in range(labels.shape[1]):
        known = (labels[:, j] == 0) | (labels[:, j] == 1)
        positive = labels[known, j] == 1
        if positive.any() and not positive.all():
            thresholds[j] = _best_threshold(probs[known, j], positive, criterion)
    return thresholds
