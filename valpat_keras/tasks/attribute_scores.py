"""Attribute labels of records and the metrics summary every attribute evaluation reports.

The fine-tuned recognizer (`train_attributes`) and the zero-shot scorer
(`evaluate_zero_shot`) report the same numbers, computed here from
`valpat_keras.evaluation.evaluate_attributes`.

Decisions (`decide_attributes`): an attribute is present when its probability exceeds its
threshold (0.5, or one calibrated on validation), except in a mutually exclusive group
(`exclusive_groups_for`: age bins, viewpoints), where exactly one member is chosen.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from valpat_keras.data.records import AttributeRecord
from valpat_keras.evaluation import evaluate_attributes

#: The scalar metrics of an attribute evaluation, in the order they are reported.
ATTRIBUTE_METRICS = ("ma", "instance_acc", "instance_prec", "instance_recall", "instance_f1")

#: Mutually exclusive attributes of the public vocabularies: one age bin, one viewpoint per
#: person. A group applies to a model whose attribute names hold all of its members.
KNOWN_EXCLUSIVE_GROUPS: dict[str, tuple[str, ...]] = {
    "age (PA-100K)": ("AgeLess18", "Age18-60", "AgeOver60"),
    "viewpoint (PA-100K)": ("Front", "Side", "Back"),
    "age (PETA)": ("personalLess15", "personalLess30", "personalLess45", "personalLess60",
                   "personalLarger60"),
    "age (RAP v2)": ("AgeLess16", "Age17-30", "Age31-45", "Age46-60"),
    "age (RAP v1)": ("AgeLess16", "Age17-30", "Age31-45"),
    "viewpoint (RAP)": ("faceFront", "faceBack", "faceLeft", "faceRight"),
}


def exclusive_groups_for(names: Sequence[str] | None) -> list[list[int]]:
    """The `KNOWN_EXCLUSIVE_GROUPS` whose members are all in ``names``, as column indices.

    The largest matching groups first; a group overlapping one already taken (RAP v1's age
    bins inside RAP v2's) is left out, so the groups are disjoint.
    """
    if not names:
        return []
    column = {name: i for i, name in enumerate(names)}
    groups: list[list[int]] = []
    taken: set[int] = set()
    for members in sorted(KNOWN_EXCLUSIVE_GROUPS.values(), key=len, reverse=True):
        if all(m in column for m in members):
            indices = [column[m] for m in members]
            if taken.isdisjoint(indices):
                groups.append(indices)
                taken.update(indices)
    return groups


def decide_attributes(probs: np.ndarray, thresholds: np.ndarray | float = 0.5,
                      exclusive_groups: Sequence[Sequence[int]] | None = ()) -> np.ndarray:
    """Present / absent decisions ``(N, A)`` from probabilities.

    ``prob > threshold`` per attribute; in each exclusive group only the member furthest
    above its threshold (in logits: ``logit(p) - logit(t)``, so a 0.5 threshold is the
    plain argmax) is present, even when none exceeds its threshold: a person has one age
    and one viewpoint.

    Args:
        probs: ``(N, A)`` probabilities.
        thresholds: ``(A,)`` thresholds, or one for all.
        exclusive_groups: Lists of column indices that are mutually exclusive (None: none).
    """
    probs = np.asarray(probs, dtype=np.float64)
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), probs.shape[1:])
    decided = probs > thresholds
    for group in exclusive_groups or ():
        group = list(group)
        p = np.clip(probs[:, group], 1e-7, 1 - 1e-7)
        t = np.clip(thresholds[group], 1e-7, 1 - 1e-7)
        margin = np.log(p / (1 - p)) - np.log(t / (1 - t))
        winner = np.asarray(group)[np.argmax(margin, axis=1)]
        decided[:, group] = False
        decided[np.arange(len(probs)), winner] = True
    return decided


def attribute_labels(records: Sequence[AttributeRecord],
                     columns: Sequence[int] | None = None) -> np.ndarray:
    """The ``(N, A)`` float32 labels (1 / 0 / -1 unknown) of attribute records.

    Args:
        records: Attribute records.
        columns: Attribute columns to keep (e.g. ``dataset.eval_indices``); all when None.
    """
    labels = np.stack([np.asarray(r.attributes) for r in records]).astype(np.float32)
    return labels if columns is None else labels[:, list(columns)]


def paths_of(records: Sequence[AttributeRecord]) -> list[str]:
    """The image paths of records, in order."""
    return [r.path for r in records]


def score_attributes(labels: np.ndarray, probs: np.ndarray, names: Sequence[str],
                     predictions: np.ndarray | None = None) -> dict:
    """The attribute metrics of predicted probabilities, ready for ``metrics.json``.

    Args:
        labels: ``(N, A)`` labels of the evaluated attributes.
        probs: ``(N, A)`` predicted probabilities of the same attributes.
        names: The ``A`` attribute names.
        predictions: ``(N, A)`` bool decisions (`decide_attributes`) instead of
            ``probs > 0.5``.

    Returns:
        `ATTRIBUTE_METRICS` as floats, ``label_ma`` (name -> mA) and ``label_ma_array``
        (the same as an array, for plots; not JSON).
    """
    result = evaluate_attributes(labels, probs, predictions=predictions)
    scores = {key: float(result[key]) for key in ATTRIBUTE_METRICS}
    scores["label_ma"] = dict(zip(names, map(float, result["label_ma"])))
    scores["label_ma_array"] = result["label_ma"]
    return scores
