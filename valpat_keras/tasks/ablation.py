"""The objective ablation: how good is an encoder pretrained with a subset of the objectives?

The paper's ablation pretrains with each subset of {ssl, itc, attr} and compares the
transfers. Here every encoder (random init included) gets three cheap, honest numbers at the
same budget, which the demo and ``benchmarks/ablation.py`` share:

- frozen-feature re-ID mAP / rank-1 on the Market-layout test query / gallery (cosine
  distance of L2-normalised features, no fine-tuning);
- attribute mA of a linear probe on frozen features (`attribute_linear_probe`: the
  regularisation picked on the validation split, the test split scored once);
- text-search R1 / mAP on the CUHK-PEDES-layout test split, either of the frozen
  image-text space (``search="frozen"``: only subsets with ``itc`` have one) or of a short
  fine-tune (``search="finetune"``: `train_search` at the same budget from every encoder).

Example:

```python
row = evaluate_encoder("runs/pretrain_ssl", market, pa100k, cuhk, "runs/ablation/ssl",
                       image_size=(64, 32), search_steps=60)
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np

from valpat_keras.data.splits import split_reid_validation
from valpat_keras.evaluation.callbacks import ReIDEvaluator
from valpat_keras.evaluation.features import extract_features
from valpat_keras.evaluation.linear_probe import attribute_linear_probe
from valpat_keras.models.init import TRANSFER_LAST_STRIDE, load_backbone, load_image_encoder
from valpat_keras.tasks.search import SearchRunConfig, evaluate_search, train_search

OBJECTIVES: tuple[str, ...] = ("ssl", "itc", "attr")

#: The seven non-empty subsets, singles first, then pairs, then all three.
OBJECTIVE_SUBSETS: tuple[str, ...] = ("ssl", "itc", "attr", "ssl+itc", "ssl+attr",
                                      "itc+attr", "ssl+itc+attr")

#: The ablation's columns: result key -> label.
COLUMNS: dict[str, str] = {"reid_mAP": "Frozen re-ID mAP", "reid_rank1": "Frozen re-ID rank-1",
                           "probe_ma": "Attribute probe mA", "search_R1": "Text search R1"}


def objectives_of(subset: str) -> tuple[str, ...]:
    """``"ssl+itc"`` -> ``("ssl", "itc")``; raises ValueError naming an unknown objective."""
    names = tuple(subset.split("+"))
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown or not names:
        raise ValueError(f"objective subset {subset!r}: unknown {unknown}; use names among "
                         f"{OBJECTIVES} joined by '+'")
    return names


@dataclasses.dataclass
class AblationBudget:
    """What every encoder of the ablation is measured with (the same for all rows).

    Attributes:
        image_size: ``(height, width)`` of the inputs.
        batch_size: Images per forward pass and per search fine-tuning step.
        search: ``"frozen"`` (the pretrained image-text space, rows with ``itc`` only),
            ``"finetune"`` (a short `train_search` from every encoder) or ``"none"``.
        search_epochs: Epochs of the short text-search fine-tune.
        search_steps: Steps per epoch of that fine-tune.
        config: Encoder configuration of the random-init row.
    """

    image_size: tuple[int, int] = (64, 32)
    batch_size: int = 32
    search: str = "frozen"
    search_epochs: int = 3
    search_steps: int = 20
    config: str = "tiny"


def frozen_reid(encoder, dataset, image_size: tuple[int, int], batch_size: int) -> dict:
    """Re-ID mAP / rank-1 of an encoder's frozen, L2-normalised features on the test split.

    The query / gallery extraction and scoring of every re-ID evaluation (`ReIDEvaluator`,
    as `evaluate_reid_model`), without flip averaging: the ablation compares encoders with
    each other, and one pass per image halves its cost.

    Args:
        encoder: Maps float32 images in [0, 1] to features.
        dataset: A `ReIDDataset` (its ``query`` and ``gallery`` are scored).
        image_size: ``(height, width)``.
        batch_size: Images per forward pass.

    Returns:
        ``{"mAP", "rank1"}`` as fractions.
    """
    evaluator = ReIDEvaluator(dataset.query, dataset.gallery, tuple(image_size), batch_size,
                              metric="cosine", flip=False, normalize=True)
    result = evaluator.evaluate(encoder)
    return {"mAP": float(result["mAP"]), "rank1": float(result["rank1"])}


def probe_attributes(encoder, dataset, image_size: tuple[int, int], batch_size: int) -> dict:
    """The attribute linear probe (`attribute_linear_probe`) on an encoder's frozen features.

    Args:
        encoder: Maps float32 images in [0, 1] to features.
        dataset: An `AttributeDataset` with non-empty train, val and test.
        image_size: ``(height, width)``.
        batch_size: Images per forward pass.

    Returns:
        The probe's result: ``test_ma``, ``val_ma``, ``c``, ``val_ma_by_c``.
    """
    def split(records):
        x = extract_features(encoder, [r.path for r in records], image_size, batch_size,
                             flip=False, normalize=False, verbose=False).features
        return x, np.stack([r.attributes for r in records])

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (
        split(dataset.train), split(dataset.val), split(dataset.test))
    return attribute_linear_probe(train_x, train_y, val_x, val_y, test_x, test_y,
                                  dataset.eval_indices)


#: Share of the Market-layout training identities scored by ``split="val"``.
VALIDATION_FRACTION = 0.95


def validation_reid_split(market, seed: int = 0):
    """A query / gallery of the Market-layout *training* identities, for choices on validation.

    Pretraining never sees these identities (SynthPed's sets are disjoint) and the frozen
    ablation trains nothing on them, so they can score pretraining choices (loss weights)
    without reading the test query / gallery.

    Args:
        market: The `ReIDDataset`.
        seed: Seed of the split.

    Returns:
        An object with ``query`` and ``gallery`` record lists.
    """
    _, query, gallery = split_reid_validation(market.train, VALIDATION_FRACTION, seed)
    return SimpleNamespace(query=query, gallery=gallery)


def evaluate_encoder(init: str, market, pa100k, cuhk, out_dir: str | Path,
                     budget: AblationBudget | None = None, seed: int = 0,
                     objectives: Sequence[str] = (), split: str = "test",
                     last_stride: int | None = TRANSFER_LAST_STRIDE) -> dict:
    """The ablation's numbers for one encoder (see the module docstring).

    Args:
        init: ``"random"`` or a pretraining run folder.
        market: The `ReIDDataset` of the frozen re-ID column.
        pa100k: The `AttributeDataset` of the probe column.
        cuhk: The `TextDataset` of the search column.
        out_dir: Folder of the search fine-tune's run.
        budget: The shared measuring budget.
        seed: Seeds the random-init weights and the fine-tune.
        objectives: The objectives ``init`` was pretrained with (``search="frozen"`` scores
            only encoders trained with ``itc``).
        split: ``"test"`` (the reported numbers) or ``"val"``: the same columns on
            validation data (`validation_reid_split`, the probe's validation mA, the text
            set's ``val``), for choosing pretraining settings; the fine-tuned search column
            is test-only.

    Returns:
        ``reid_mAP``, ``reid_rank1``, ``probe_ma``, ``probe_val_ma``, ``search_R1``,
        ``search_mAP`` (fractions; the search keys are None where the row has no score).
    """
    budget = budget or AblationBudget()
    if budget.search not in ("frozen", "finetune", "none"):
        raise ValueError(f"AblationBudget.search must be 'frozen', 'finetune' or 'none', got "
                         f"{budget.search!r}")

    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    size = tuple(budget.image_size)
    keras.utils.set_random_seed(seed)
    encoder = load_image_encoder(init, config=budget.config, image_size=size,
                                 last_stride=last_stride)
    reid_data = market if split == "test" else validation_reid_split(market)
    reid = frozen_reid(encoder, reid_data, size, budget.batch_size)
    probe = probe_attributes(encoder, pa100k, size, budget.batch_size)
    row = {"reid_mAP": reid["mAP"], "reid_rank1": reid["rank1"],
           "probe_ma": probe["test_ma" if split == "test" else "val_ma"],
           "probe_val_ma": probe["val_ma"], "search_R1": None, "search_mAP": None}
    if budget.search == "finetune" and split == "test":
        config = SearchRunConfig(init=init, encoder_config=budget.config,
                                 epochs=budget.search_epochs, batch_size=budget.batch_size,
                                 image_size=size if init == "random" else None, seed=seed,
                                 steps_per_epoch=budget.search_steps, image_to_text=False,
                                 verbose=0)
        metrics = train_search(cuhk, Path(out_dir) / "search", config)
        row.update(search_R1=float(metrics["R1"]), search_mAP=float(metrics["mAP"]))
    elif budget.search == "frozen" and "itc" in objectives:
        backbone, tokenizer = load_backbone(init, last_stride=last_stride)
        records = cuhk.test if split == "test" else cuhk.val
        metrics = evaluate_search(backbone, tokenizer, records, batch_size=budget.batch_size)
        row.update(search_R1=float(metrics["R1"]), search_mAP=float(metrics["mAP"]))
    return row


def summarize(rows_by_seed: Sequence[Mapping[str, Mapping[str, float | None]]]
              ) -> dict[str, dict[str, dict[str, float | None]]]:
    """Mean and standard deviation over seeds of every row and column.

    Args:
        rows_by_seed: One ``{row name: {column: value}}`` mapping per seed.

    Returns:
        ``{row name: {column: {"mean", "std", "values"}}}`` (population std; None where a
        column has no value).
    """
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for name in rows_by_seed[0]:
        out[name] = {}
        for column in rows_by_seed[0][name]:
            values = [rows[name][column] for rows in rows_by_seed]
            if any(v is None for v in values):
                out[name][column] = {"mean": None, "std": None, "values": values}
                continue
            array = np.asarray(values, dtype=np.float64)
            out[name][column] = {"mean": float(array.mean()), "std": float(array.std()),
                                 "values": [float(v) for v in values]}
    return out


def leaders(summary: Mapping[str, Mapping[str, Mapping[str, float | None]]],
            columns: Sequence[str] = ("reid_mAP", "probe_ma", "search_R1")) -> dict[str, str]:
    """The row with the highest mean in each column (random init included)."""
    best = {}
    for column in columns:
        scored = {name: row[column]["mean"] for name, row in summary.items()
                  if row.get(column, {}).get("mean") is not None}
        if scored:
            best[column] = max(scored, key=scored.get)
    return best
