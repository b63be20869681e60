"""Attribute losses: the weighted binary cross-entropy of DeepMAR / Rethinking_of_PAR."""

from __future__ import annotations

import numpy as np
from keras import ops


def positive_ratios(labels: np.ndarray) -> np.ndarray:
    """Fraction of positive labels per attribute among the known ones (NumPy).

    Args:
        labels: (N, A) array of 1 / 0 / -1 (unknown, not counted).

    Returns:
        (A,) float32 ratios; an attribute with no known label gets 0.5 (equal weights).
    """
    labels = np.asarray(labels)
    known = (labels == 0) | (labels == 1)
    positives = (labels == 1).sum(axis=0)
    counts = known.sum(axis=0)
    ratios = np.where(counts > 0, positives / np.maximum(counts, 1), 0.5)
    return ratios.astype("float32")


#: The positive / negative weightings of `weighted_bce`.
LOSS_WEIGHTINGS = ("deepmar", "balanced")


def _check_weighting(weighting: str) -> None:
    if weighting not in LOSS_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {LOSS_WEIGHTINGS}, got {weighting!r}")


def prior_logits(ratios, floor: float = 1e-3, weighting: str = "deepmar") -> np.ndarray:
    """The constant logit per attribute that minimises `weighted_bce` (NumPy).

    For positive ratio ``r`` the DeepMAR weights are ``exp(1 - r)`` (positives) and
    ``exp(r)`` (negatives), so the best constant is ``log(r / (1 - r)) + 1 - 2 r``. A head
    whose bias starts there predicts the weighted base rate from step one instead of
    probability 0.5 for every attribute (the prior initialisation of Lin et al.'s focal loss).
    Under the balanced weighting both classes weigh the same in total, so the best constant
    is 0 for every attribute.

    Args:
        ratios: (A,) positive ratios (see `positive_ratios`).
        floor: Ratios are clipped to ``[floor, 1 - floor]`` (an attribute without positives
            gets a large negative logit, not -inf).
        weighting: ``"deepmar"`` or ``"balanced"`` (see `weighted_bce`).

    Returns:
        (A,) float32 logits.
    """
    _check_weighting(weighting)
    r = np.clip(np.asarray(ratios, dtype=np.float64), floor, 1.0 - floor)
    if weighting == "balanced":
        return np.zeros(r.shape, dtype="float32")
    return (np.log(r / (1.0 - r)) + 1.0 - 2.0 * r).astype("float32")


def weighted_bce(labels, logits, positive_ratio, reduction: str = "mean",
                 weighting: str = "deepmar", floor: float = 0.01):
    """Weighted binary cross-entropy on logits, with unknown (-1) labels masked out.

    ``"deepmar"``: the weighting of Li et al. (DeepMAR) as implemented by
    Rethinking_of_PAR's ``ratio2weight``: ``w = exp(1 - r)`` for a positive label and
    ``exp(r)`` for a negative one, where ``r`` is the attribute's positive ratio in the
    training set, so rare positives weigh more. ``"balanced"``: ``w = 1 / (2 r)`` and
    ``1 / (2 (1 - r))``, so positives and negatives weigh the same in total: the loss whose
    optimum is the one mA (the mean of positive and negative recall) rewards, as
    scikit-learn's ``class_weight="balanced"``. Labels other than 0 and 1 get weight 0.

    Args:
        labels: (B, A) labels, 1 / 0 / -1.
        logits: (B, A) logits.
        positive_ratio: (A,) positive ratios (see `positive_ratios`).
        reduction: ``"mean"``: average over the known label entries; ``"sum"``: sum over
            attributes, mean over images (Rethinking_of_PAR's ``size_sum``).
        weighting: ``"deepmar"`` (default) or ``"balanced"``.
        floor: The balanced weights clip ``r`` to ``[floor, 1 - floor]`` (a positive of an
            attribute seen once does not weigh thousands).

    Returns:
        The float32 scalar loss.
    """
    labels = ops.cast(labels, "float32")
    logits = ops.cast(logits, "float32")
    ratio = ops.cast(ops.convert_to_tensor(positive_ratio), "float32")
    positive = ops.cast(ops.equal(labels, 1.0), "float32")
    mask = ops.cast(ops.logical_or(ops.equal(labels, 0.0), ops.equal(labels, 1.0)), "float32")
    _check_weighting(weighting)
    if weighting == "balanced":
        ratio = ops.clip(ratio, floor, 1.0 - floor)
        weight = (positive * 0.5 / ratio + (1.0 - positive) * 0.5 / (1.0 - ratio)) * mask
    else:
        weight = ops.exp(positive * (1.0 - ratio) + (1.0 - positive) * ratio) * mask
    # Stable BCE with logits: max(x, 0) - x*y + log(1 + exp(-|x|)).
    bce = ops.relu(logits) - logits * positive + ops.log1p(ops.exp(-ops.abs(logits)))
    weighted = weight * bce
    if reduction == "sum":
        return ops.mean(ops.sum(weighted, axis=-1))
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return ops.sum(weighted) / ops.maximum(ops.sum(mask), 1.0)


def batch_mean_accuracy(labels, logits):
    """Label-based mean accuracy (mA) of one batch, with unknown (-1) labels masked out.

    Per attribute, the mean of the true positive rate and the true negative rate over the
    classes present in the batch; then the mean over attributes with a known label.
    A cheap running signal for ``fit`` logs; the evaluation metric lives in
    `valpat_keras.evaluation`.

    Args:
        labels: (B, A) labels, 1 / 0 / -1.
        logits: (B, A) logits (positive prediction: logit > 0, i.e. probability > 0.5).

    Returns:
        The float32 scalar mA.
    """
    labels = ops.cast(labels, "float32")
    predicted = ops.cast(ops.greater(ops.cast(logits, "float32"), 0.0), "float32")
    positive = ops.cast(ops.equal(labels, 1.0), "float32")
    negative = ops.cast(ops.equal(labels, 0.0), "float32")
    num_pos = ops.sum(positive, axis=0)
    num_neg = ops.sum(negative, axis=0)
    tpr = ops.sum(positive * predicted, axis=0) / ops.maximum(num_pos, 1.0)
    tnr = ops.sum(negative * (1.0 - predicted), axis=0) / ops.maximum(num_neg, 1.0)
    has_pos = ops.cast(num_pos > 0, "float32")
    has_neg = ops.cast(num_neg > 0, "float32")
    present = has_pos + has_neg
    per_attribute = (tpr * has_pos + tnr * has_neg) / ops.maximum(present, 1.0)
    valid = ops.cast(present > 0, "float32")
    return ops.sum(per_attribute * valid) / ops.maximum(ops.sum(valid), 1.0)
