"""Pedestrian attribute recognition metrics (Rethinking_of_PAR ``get_pedestrian_metrics``).

Label-based: mean accuracy mA over attributes; instance-based: accuracy, precision, recall
per image averaged over images, and F1 from the *averaged* precision and recall.
Labels other than 0/1 (e.g. -1 unknown, RAP's 2 uncertain) are masked out per entry.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-20


def evaluate_attributes(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict:
    """Label- and instance-based attribute metrics.

    Args:
        labels: ``(N, A)`` ground truth, 1 positive, 0 negative, anything else ignored.
        probs: ``(N, A)`` predicted probabilities; positive iff ``prob > threshold``.
        threshold: Decision threshold.

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
    pred = (probs > threshold) & (gt_pos | gt_neg)  # unknown entries count nowhere
    pred_neg = (probs <= threshold) & gt_neg
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
