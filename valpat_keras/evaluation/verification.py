"""Verification metrics over query-gallery pairs: ROC, TPR at fixed FPR, EER, thresholds.

"Are these two crops the same person?" is answered by comparing their cosine similarity
with a threshold: pairs with similarity ``>= threshold`` are declared the same person. The
threshold is calibrated on validation pairs (`calibrate_threshold`) and kept in
``RUN_DIR/verification.json`` (`write_calibration` / `read_calibration`).

Pairs follow the re-ID protocol of `valpat_keras.evaluation.reid_metrics` (and fast-reid's
``evaluate_roc``): every query is paired with every gallery item except those of the same
pid AND the same camera (removed, as in CMC / mAP); a pair is positive when the pids agree.

Everything here is exact, with memory ``O(block x G + P)`` (``P`` positive pairs, a few per
query), never ``O(Q x G)``: the positive scores are gathered and sorted once, and the
negatives of each block are only counted between consecutive positive scores
(`numpy.searchsorted`). The ROC's false-positive counts at every positive score, and so the
whole curve, its area, the EER and TPR at any FPR, are exact counts, not histograms.

* ``tpr@fpr=X``: the largest TPR over thresholds whose FPR is ``<= X`` (fast-reid instead
  reports the TPR of the ROC point whose FPR is nearest to ``X``, which may exceed ``X``).
* EER: where the ROC, linearly interpolated between its points, crosses FPR = 1 - TPR.
* ``roc_auc``: the trapezoidal area, equal to scikit-learn's ``roc_auc_score`` (ties count
  one half).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from valpat_keras.errors import InputError
from valpat_keras.evaluation.distances import l2_normalize
from valpat_keras.run_outputs import write_json

CALIBRATION_FILE = "verification.json"
CALIBRATION_KEYS = ("threshold", "similarity", "target_fpr", "split")
#: The false-positive rates TPR is reported at.
REPORTED_FPRS = (1e-2, 1e-3, 1e-4)
#: The FPR a calibrated threshold keeps to on the validation pairs, unless told otherwise.
DEFAULT_TARGET_FPR = 1e-3


def write_calibration(run_dir: str | Path, calibration: dict[str, Any]) -> Path:
    """Writes ``RUN_DIR/verification.json``.

    Args:
        run_dir: The run folder.
        calibration: At least ``threshold`` (cosine similarity: pairs with similarity
            ``>= threshold`` are declared the same person), ``similarity`` (``"cosine"``),
            ``target_fpr`` and ``split`` (``"validation"``); more keys (validation TPR/FPR
            at the threshold, pair counts) are kept as given.

    Returns:
        The path written.

    Raises:
        ValueError: If a required key is missing.
    """
    missing = [key for key in CALIBRATION_KEYS if key not in calibration]
    if missing:
        raise ValueError(f"calibration lacks {missing}; required keys: {CALIBRATION_KEYS}")
    return write_json(Path(run_dir) / CALIBRATION_FILE, dict(calibration))


def read_calibration(run_dir: str | Path) -> dict[str, Any] | None:
    """Reads ``RUN_DIR/verification.json``; None when the run has none.

    Raises:
        InputError: If the file is not JSON or lacks ``threshold`` / ``similarity``.
    """
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        calibration = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from None
    if not isinstance(calibration, dict) or not isinstance(calibration.get("threshold"),
                                                           (int, float)):
        raise InputError(f"{path}: expected a JSON object with a numeric 'threshold' "
                         "(cosine similarity)")
    calibration.setdefault("similarity", "cosine")
    return calibration


# --- Pairs ---------------------------------------------------------------------------------


def _check_pair_ids(num_query: int, num_gallery: int, q_pids, g_pids, q_camids, g_camids,
                    filter_same_camera: bool) -> dict[str, np.ndarray | None]:
    if filter_same_camera and (q_camids is None or g_camids is None):
        raise ValueError("filter_same_camera=True needs q_camids and g_camids")
    ids: dict[str, np.ndarray | None] = {}
    for name, arr, expected in (("q_pids", q_pids, num_query), ("g_pids", g_pids, num_gallery),
                                ("q_camids", q_camids, num_query),
                                ("g_camids", g_camids, num_gallery)):
        if arr is None or (name.endswith("camids") and not filter_same_camera):
            ids[name] = None
            continue
        arr = np.asarray(arr).reshape(-1)
        if arr.shape[0] != expected:
            raise ValueError(f"{name} has {arr.shape[0]} entries, expected {expected}")
        ids[name] = arr
    return ids


def _pair_masks(rows: slice, ids: dict[str, np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """``(positive, negative)`` ``(rows, G)`` masks; same pid and same camera is in neither."""
    same_pid = ids["q_pids"][rows, None] == ids["g_pids"][None, :]
    if ids["q_camids"] is None:
        return same_pid, ~same_pid
    same_cam = ids["q_camids"][rows, None] == ids["g_camids"][None, :]
    return same_pid & ~same_cam, ~same_pid


def verification_pairs(
    similarity: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray | None = None,
    g_camids: np.ndarray | None = None,
    filter_same_camera: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The scores and labels of the kept query-gallery pairs of a similarity matrix.

    Holds all ``Q x G`` pairs: for small sets and tests; `verification_roc` is the
    memory-bounded equivalent on features.

    Args:
        similarity: ``(Q, G)`` similarities (larger = more alike).
        q_pids: ``(Q,)`` query person ids.
        g_pids: ``(G,)`` gallery person ids.
        q_camids: ``(Q,)`` query camera ids (needed when ``filter_same_camera``).
        g_camids: ``(G,)`` gallery camera ids.
        filter_same_camera: Drop the pairs of the same pid under the same camera (the
            Market-1501 protocol); False keeps every pair.

    Returns:
        ``(scores, labels)``: the kept pairs in row-major order, ``labels`` True for the
        same pid.
    """
    similarity = np.asarray(similarity)
    if similarity.ndim != 2:
        raise ValueError(f"similarity must be (num_query, num_gallery), got {similarity.shape}")
    ids = _check_pair_ids(*similarity.shape, q_pids, g_pids, q_camids, g_camids,
                          filter_same_camera)
    positive, negative = _pair_masks(slice(None), ids)
    kept = positive | negative
    return similarity[kept], positive[kept]


# --- ROC -----------------------------------------------------------------------------------


class RocCurve(NamedTuple):
    """An exact ROC curve: its vertices, as counts, in order of decreasing threshold.

    Collinear points of scikit-learn's ``roc_curve(drop_intermediate=False)`` are left out;
    every vertex is one of its points. A pair is declared positive when its score is
    ``>= threshold``; the first vertex is ``(0, 0)`` at ``+inf``, the last ``(N, P)``.

    Attributes:
        false_positives: Negative pairs at or above each threshold (int64, ascending).
        true_positives: Positive pairs at or above each threshold (int64, ascending).
        thresholds: The thresholds (float64, descending).
        num_positive: Positive pairs ``P``.
        num_negative: Negative pairs ``N``.
        max_score: The largest score of any pair.
        counts_at: ``{threshold: (true_positives, false_positives)}`` counted exactly at the
            thresholds asked for (e.g. a calibrated one).
    """

    false_positives: np.ndarray
    true_positives: np.ndarray
    thresholds: np.ndarray
    num_positive: int
    num_negative: int
    max_score: float
    counts_at: dict[float, tuple[int, int]]

    @property
    def fpr(self) -> np.ndarray:
        """False-positive rates of the vertices."""
        return self.false_positives / self.num_negative

    @property
    def tpr(self) -> np.ndarray:
        """True-positive rates of the vertices."""
        return self.true_positives / self.num_positive


class _NegativeCounter:
    """Counts negative scores between consecutive distinct positive scores.

    ``hist_ge[i]`` counts the negatives with exactly ``i`` distinct positive values ``<=``
    them, ``hist_gt[i]`` those with ``i`` values ``<`` them: enough for the number of
    negatives ``>=`` and ``>`` every positive score.
    """

    def __init__(self, positive_scores: np.ndarray, thresholds: Sequence[float] = ()):
        positive_scores = np.asarray(positive_scores, dtype=np.float64).reshape(-1)
        if positive_scores.size == 0:
            raise ValueError("no positive pair (same pid, another camera): the ROC is "
                             "undefined; check the pids / camids")
        self.values, self.positive_counts = np.unique(positive_scores, return_counts=True)
        self.hist_ge = np.zeros(self.values.size + 1, dtype=np.int64)
        self.hist_gt = np.zeros(self.values.size + 1, dtype=np.int64)
        self.max_negative = -np.inf
        self.thresholds = [float(t) for t in thresholds]
        self.negatives_at = np.zeros(len(self.thresholds), dtype=np.int64)
        self.positives_at = [int((positive_scores >= t).sum()) for t in self.thresholds]

    def add(self, negative_scores: np.ndarray) -> None:
        negative_scores = np.asarray(negative_scores, dtype=np.float64).reshape(-1)
        if negative_scores.size == 0:
            return
        at_or_below = np.searchsorted(self.values, negative_scores, side="right")
        # A negative equal to a positive value is >= that threshold but not > it.
        tie = (at_or_below > 0) & (self.values[np.maximum(at_or_below - 1, 0)]
                                   == negative_scores)
        self.hist_ge += np.bincount(at_or_below, minlength=self.hist_ge.size)
        self.hist_gt += np.bincount(at_or_below - tie, minlength=self.hist_gt.size)
        self.max_negative = max(self.max_negative, float(negative_scores.max()))
        for i, threshold in enumerate(self.thresholds):
            self.negatives_at[i] += int(np.count_nonzero(negative_scores >= threshold))

    def curve(self) -> RocCurve:
        num_negative = int(self.hist_ge.sum())
        if num_negative == 0:
            raise ValueError("no negative pair (different pids): the ROC is undefined")
        # Per distinct positive value (ascending): negatives >= it, > it, positives >= it.
        neg_ge = np.cumsum(self.hist_ge[::-1])[::-1][1:]
        neg_gt = np.cumsum(self.hist_gt[::-1])[::-1][1:]
        pos_ge = np.cumsum(self.positive_counts[::-1])[::-1]
        pos_above = np.append(pos_ge[1:], 0)
        # Descending thresholds: for each value, first the negatives strictly above it
        # (TPR unchanged), then the value itself (its positives and tied negatives).
        fp = np.stack([neg_gt, neg_ge], axis=1)[::-1].reshape(-1)
        tp = np.stack([pos_above, pos_ge], axis=1)[::-1].reshape(-1)
        thr = np.stack([np.nextafter(self.values, np.inf), self.values], axis=1)[::-1]
        fp = np.concatenate([[0], fp, [num_negative]])
        tp = np.concatenate([[0], tp, [int(pos_ge[0])]])
        thr = np.concatenate([[np.inf], thr.reshape(-1), [-np.inf]])
        new = np.ones(fp.size, dtype=bool)
        new[1:] = (fp[1:] != fp[:-1]) | (tp[1:] != tp[:-1])  # keep the highest threshold
        counts_at = {t: (p, int(n)) for t, p, n in
                     zip(self.thresholds, self.positives_at, self.negatives_at)}
        return RocCurve(fp[new].astype(np.int64), tp[new].astype(np.int64), thr[new],
                        int(pos_ge[0]), num_negative,
                        max(float(self.values[-1]), self.max_negative), counts_at)


def roc_from_scores(
    scores: np.ndarray, labels: np.ndarray, thresholds: Sequence[float] = (),
) -> RocCurve:
    """The exact `RocCurve` of scored pairs.

    Args:
        scores: ``(n,)`` similarities (larger = more alike).
        labels: ``(n,)`` bool, True for positive pairs.
        thresholds: Thresholds to count true / false positives at (``counts_at``).

    Raises:
        ValueError: Shapes disagree, or there is no positive or no negative pair.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(bool)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    counter = _NegativeCounter(scores[labels], thresholds)
    counter.add(scores[~labels])
    return counter.curve()


def _positive_scores(qn: np.ndarray, gn: np.ndarray, ids: dict, block_size: int) -> np.ndarray:
    """Cosine similarities of the positive pairs, gathered (no ``Q x G`` products)."""
    scores = []
    for start in range(0, len(qn), block_size):
        rows = slice(start, min(start + block_size, len(qn)))
        q_index, g_index = np.nonzero(_pair_masks(rows, ids)[0])
        scores.append(np.einsum("ij,ij->i", qn[start + q_index], gn[g_index]))
    return np.concatenate(scores) if scores else np.zeros(0)


def verification_roc(
    qf: np.ndarray,
    gf: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray | None = None,
    g_camids: np.ndarray | None = None,
    filter_same_camera: bool = True,
    block_size: int = 256,
    thresholds: Sequence[float] = (),
) -> RocCurve:
    """The exact ROC of the cosine similarities of the query-gallery pairs of features.

    Equal to ``roc_from_scores(*verification_pairs(cosine similarity matrix, ...))`` but in
    memory ``O(block_size x G + P)``: the positive pairs' similarities are gathered first
    (float64 dot products), then each block of queries is compared with the whole gallery
    and its negatives only counted (`_NegativeCounter`). One ``Q x G x D`` product in all.

    Args:
        qf: ``(Q, D)`` query features.
        gf: ``(G, D)`` gallery features.
        q_pids: Query person ids.
        g_pids: Gallery person ids.
        q_camids: Query camera ids (needed when ``filter_same_camera``).
        g_camids: Gallery camera ids.
        filter_same_camera: See `verification_pairs`.
        block_size: Queries per block.
        thresholds: Similarity thresholds to count exactly (``counts_at``).

    Returns:
        The `RocCurve`.
    """
    qf, gf = np.asarray(qf), np.asarray(gf)
    if qf.ndim != 2 or gf.ndim != 2 or qf.shape[1] != gf.shape[1]:
        raise ValueError(f"expected (Q, D) and (G, D) features, got {qf.shape} and {gf.shape}")
    ids = _check_pair_ids(len(qf), len(gf), q_pids, g_pids, q_camids, g_camids,
                          filter_same_camera)
    qn = l2_normalize(qf.astype(np.float64))
    gn = l2_normalize(gf.astype(np.float64))
    counter = _NegativeCounter(_positive_scores(qn, gn, ids, block_size), thresholds)
    for start in range(0, len(qn), block_size):
        rows = slice(start, min(start + block_size, len(qn)))
        counter.add((qn[rows] @ gn.T)[_pair_masks(rows, ids)[1]])
    return counter.curve()


# --- Operating points ----------------------------------------------------------------------


def roc_auc(curve: RocCurve) -> float:
    """Trapezoidal area under the ROC (scikit-learn's ``roc_auc_score``)."""
    fpr, tpr = curve.fpr, curve.tpr
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)


def operating_point(curve: RocCurve, target_fpr: float) -> dict[str, float]:
    """The highest-TPR threshold whose FPR is ``<= target_fpr``, and its rates.

    The largest TPR over the thresholds with at most ``target_fpr x N`` false positives,
    at the highest threshold giving it (so the fewest false positives). When even the
    highest threshold admits too many negatives, the threshold is just above every score
    (TPR = FPR = 0).

    Returns:
        ``threshold`` (a pair is positive when its similarity is ``>= threshold``),
        ``tpr``, ``fpr`` and ``target_fpr``.
    """
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target_fpr must be in [0, 1], got {target_fpr}")
    allowed = curve.false_positives <= target_fpr * curve.num_negative
    best_tp = curve.true_positives[np.flatnonzero(allowed)[-1]]
    index = int(np.searchsorted(curve.true_positives, best_tp, side="left"))
    threshold = float(curve.thresholds[index])
    if not np.isfinite(threshold):  # +inf is not JSON: just above the largest score
        threshold = float(np.nextafter(curve.max_score, np.inf))
    return {"threshold": threshold, "tpr": float(curve.tpr[index]),
            "fpr": float(curve.fpr[index]), "target_fpr": float(target_fpr)}


def tpr_at_fpr(curve: RocCurve, target_fpr: float) -> float:
    """The largest TPR over thresholds whose FPR is ``<= target_fpr`` (`operating_point`)."""
    return operating_point(curve, target_fpr)["tpr"]


def equal_error_rate(curve: RocCurve) -> float:
    """Where the ROC, linear between its vertices, crosses FPR = 1 - TPR (FPR = FNR)."""
    fpr, tpr = curve.fpr, curve.tpr
    gap = (1.0 - tpr) - fpr  # FNR - FPR: 1 at the first vertex, -1 at the last, decreasing
    i = int(np.flatnonzero(gap <= 0.0)[0])
    if gap[i] == 0.0:
        return float(fpr[i])
    share = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + share * (fpr[i] - fpr[i - 1]))


def calibrate_threshold(
    similarities: np.ndarray, labels: np.ndarray, target_fpr: float = DEFAULT_TARGET_FPR,
) -> float:
    """The similarity threshold keeping the FPR of the given pairs ``<= target_fpr``.

    The highest-TPR such threshold (`operating_point`): on these pairs, declaring
    ``similarity >= threshold`` the same person has at most ``target_fpr`` false positives.

    Args:
        similarities: ``(n,)`` pair similarities (validation pairs, never test).
        labels: ``(n,)`` bool, True for the same person.
        target_fpr: The false-positive rate to keep to.
    """
    return operating_point(roc_from_scores(similarities, labels), target_fpr)["threshold"]


def fpr_key(fpr: float) -> str:
    """The metrics key of TPR at ``fpr``: ``"tpr@fpr=1e-03"`` (fast-reid's spelling)."""
    return f"tpr@fpr={fpr:.0e}"


def verification_metrics(curve: RocCurve, threshold: float | None = None,
                         fprs: Sequence[float] = REPORTED_FPRS) -> dict[str, Any]:
    """The JSON summary of a ROC: AUC, EER, TPR at ``fprs``, and the rates at ``threshold``.

    Args:
        curve: The `RocCurve` (with ``threshold`` in its ``counts_at`` when given).
        threshold: A calibrated similarity threshold, or None.
        fprs: The false-positive rates to report TPR at.

    Returns:
        ``roc_auc``, ``eer``, ``tpr@fpr=1e-02`` ... (fractions), ``num_positive_pairs``,
        ``num_negative_pairs`` and, with ``threshold``, ``threshold``, ``tpr_at_threshold``
        and ``fpr_at_threshold``.
    """
    out: dict[str, Any] = {"roc_auc": roc_auc(curve), "eer": equal_error_rate(curve)}
    out.update({fpr_key(fpr): tpr_at_fpr(curve, fpr) for fpr in fprs})
    out.update(num_positive_pairs=curve.num_positive, num_negative_pairs=curve.num_negative)
    if threshold is not None:
        if float(threshold) not in curve.counts_at:
            raise ValueError(f"threshold {threshold} was not counted: pass it as "
                             "thresholds= when building the curve")
        tp, fp = curve.counts_at[float(threshold)]
        out.update(threshold=float(threshold), tpr_at_threshold=tp / curve.num_positive,
                   fpr_at_threshold=fp / curve.num_negative)
    return out


def calibrate_on_pairs(curve: RocCurve, target_fpr: float = DEFAULT_TARGET_FPR,
                       split: str = "validation") -> dict[str, Any]:
    """The ``verification.json`` content of a threshold calibrated on ``curve``'s pairs.

    Returns:
        ``threshold``, ``similarity`` (``"cosine"``), ``target_fpr``, ``split``, the
        ``tpr`` / ``fpr`` at the threshold on these pairs, their ``roc_auc`` and ``eer``,
        and ``num_positive_pairs`` / ``num_negative_pairs``.
    """
    point = operating_point(curve, target_fpr)
    return {"threshold": point["threshold"], "similarity": "cosine",
            "target_fpr": float(target_fpr), "split": split, "tpr": point["tpr"],
            "fpr": point["fpr"], "roc_auc": roc_auc(curve), "eer": equal_error_rate(curve),
            "num_positive_pairs": curve.num_positive,
            "num_negative_pairs": curve.num_negative}


# --- Feature sets ---------------------------------------------------------------------------


def calibrate_from_features(query: Any, gallery: Any, target_fpr: float = DEFAULT_TARGET_FPR,
                            split: str = "validation") -> dict[str, Any]:
    """A threshold calibrated on the pairs of a query / gallery `FeatureSet` (validation).

    Args:
        query: Query features with ``features``, ``pids``, ``camids`` (e.g. a `FeatureSet`
            of the held-out validation query).
        gallery: Gallery features, likewise.
        target_fpr: The false-positive rate to keep to on these pairs.
        split: Which split the pairs are from (recorded; never the test split).

    Returns:
        The `calibrate_on_pairs` dict, ready for `write_calibration`.
    """
    curve = verification_roc(query.features, gallery.features, query.pids, gallery.pids,
                             query.camids, gallery.camids)
    return calibrate_on_pairs(curve, target_fpr, split)


def verification_from_features(query: Any, gallery: Any,
                               threshold: float | None = None) -> dict[str, Any]:
    """`verification_metrics` of the pairs of a query / gallery `FeatureSet` (cosine).

    Args:
        query: Query features with ``features``, ``pids``, ``camids``.
        gallery: Gallery features, likewise.
        threshold: A similarity threshold calibrated elsewhere, to report TPR / FPR at.
    """
    thresholds = () if threshold is None else (float(threshold),)
    curve = verification_roc(query.features, gallery.features, query.pids, gallery.pids,
                             query.camids, gallery.camids, thresholds=thresholds)
    return verification_metrics(curve, threshold)
