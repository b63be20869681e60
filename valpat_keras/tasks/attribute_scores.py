"""Attribute labels of records and the metrics summary every attribute evaluation reports.

The fine-tuned recognizer (`train_attributes`) and the zero-shot scorer
(`evaluate_zero_shot`) report the same numbers, computed here from
`valpat_keras.evaluation.evaluate_attributes`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from valpat_keras.data.records import AttributeRecord
from valpat_keras.evaluation import evaluate_attributes

#: The scalar metrics of an attribute evaluation, in the order they are reported.
ATTRIBUTE_METRICS = ("ma", "instance_acc", "instance_prec", "instance_recall", "instance_f1")


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


def score_attributes(labels: np.ndarray, probs: np.ndarray, names: Sequence[str]) -> dict:
    """The attribute metrics of predicted probabilities, ready for ``metrics.json``.

    Args:
        labels: ``(N, A)`` labels of the evaluated attributes.
        probs: ``(N, A)`` predicted probabilities of the same attributes.
        names: The ``A`` attribute names.

    Returns:
        `ATTRIBUTE_METRICS` as floats, ``label_ma`` (name -> mA) and ``label_ma_array``
        (the same as an array, for plots; not JSON).
    """
    result = evaluate_attributes(labels, probs)
    scores = {key: float(result[key]) for key in ATTRIBUTE_METRICS}
    scores["label_ma"] = dict(zip(names, map(float, result["label_ma"])))
    scores["label_ma_array"] = result["label_ma"]
    return scores
