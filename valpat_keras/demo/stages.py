"""The stages of `valpat demo`, one function each, every one calling the library's entry points.

1. `make_data`: SynthPed in the real layouts (`ensure_synthped`: reused when already written
   with the same config), loaded back through the dataset registry.
2. `pretraining_run`: VAL-PAT pretraining with all three objectives and, for the ablation,
   with each objective alone (`cached_pretrain`: a second demo reuses the runs).
3. `ablation_rows`: the same cheap, honest numbers for every encoder (`evaluate_encoder`).
4. `transfer`: one downstream task from one initialisation, once per fine-tuning seed.
5. `zero_shot`: attributes from the pretrained image-text space, no fine-tuning.

The library's task modules import Keras, so each stage imports them when it runs: the demo
package stays importable before the Keras backend is chosen (``valpat --backend ... demo``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from valpat_keras.data import registry
from valpat_keras.data.synthped import ensure_synthped, plot_identity_grid
from valpat_keras.demo.budget import DemoBudget

#: The pretraining runs of the demo, by the objectives they train (all three first).
PRETRAINING_RUNS: dict[str, tuple[str, ...]] = {
    "ssl+itc+attr": ("ssl", "itc", "attr"), "ssl": ("ssl",), "itc": ("itc",),
    "attr": ("attr",),
}

#: The transfers: task key -> (title, the metric the comparison is read on).
TRANSFERS: dict[str, tuple[str, str]] = {
    "reid_supervised": ("supervised re-ID", "mAP"),
    "reid_unsupervised": ("unsupervised re-ID", "mAP"),
    "attributes": ("attribute recognition", "ma"),
    "text_search": ("text-based person search", "R1"),
}

#: The metrics kept per task.
TRANSFER_METRICS: dict[str, tuple[str, ...]] = {
    "reid_supervised": ("mAP", "rank1", "rank5", "mINP"),
    "reid_unsupervised": ("mAP", "rank1", "rank5", "mINP"),
    "attributes": ("ma", "instance_acc", "instance_f1"),
    "text_search": ("R1", "R5", "R10", "mAP"),
}


@dataclasses.dataclass
class DemoData:
    """SynthPed as written and loaded back.

    Attributes:
        info: What `write_synthped` wrote.
        pretrain: The LUPerson-TA-style pretraining set.
        market: The Market-1501-layout re-ID set.
        pa100k: The PA-100K-layout attribute set.
        cuhk: The CUHK-PEDES-layout text set.
    """

    info: Any
    pretrain: Any
    market: Any
    pa100k: Any
    cuhk: Any


def make_data(root: Path, budget: DemoBudget, seed: int) -> DemoData:
    """SynthPed in ``root`` (with its identity grid figure), every set loaded back."""
    info = ensure_synthped(root, budget.synthped_config(seed), progress=None)
    grid = Path(root) / "synthped_grid.png"
    if not grid.is_file():
        plot_identity_grid(info, grid)
    return DemoData(info=info,
                    pretrain=registry.load("luperson_ta", info.paths["pretrain_manifest"]),
                    market=registry.load("market1501", info.paths["market1501"]),
                    pa100k=registry.load("pa100k", info.paths["pa100k"]),
                    cuhk=registry.load("cuhk_pedes", info.paths["cuhk_pedes"]))


def pretraining_run(data: DemoData, cache_dir: Path, name: str, budget: DemoBudget,
                    seed: int, fresh: bool, printer: Callable[[str], None],
                    verbose: int) -> tuple[Path, bool]:
    """One pretraining run (cached by data, `PretrainConfig` and backend).

    Args:
        data: The SynthPed sets.
        cache_dir: The cache of pretraining runs.
        name: The objectives, joined by ``+`` (``"ssl+itc"``).
        budget: The demo budget (steps, batch, image size, encoder).
        seed: The pretraining seed.
        fresh: Retrain even when cached.
        printer: Where the cache line goes.
        verbose: Keras ``fit`` verbosity.

    Returns:
        ``(run_dir, reused)``.
    """
    from valpat_keras.tasks.ablation import objectives_of
    from valpat_keras.tasks.pretrain_cache import cached_pretrain

    objectives = objectives_of(name)
    weights = None
    # Only the ratio of the weights matters (AdamW is invariant to the scale of the loss):
    # a run of one objective trains it at weight 1, and its cache entry serves every budget.
    if budget.loss_weights and len(objectives) > 1:
        weights = {k: float(budget.loss_weights[k]) for k in objectives}
    config = budget.pretrain_config(objectives, seed, loss_weights=weights, verbose=verbose)
    return cached_pretrain(data.pretrain, cache_dir, config, name=name.replace("+", "_"),
                           fresh=fresh, printer=printer)


def ablation_rows(data: DemoData, runs: dict[str, Path], out: Path, budget: DemoBudget,
                  seed: int) -> dict[str, dict[str, float | None]]:
    """The ablation's numbers for random init and every pretraining run (`evaluate_encoder`).

    The search column is the frozen image-text space (rows pretrained with ``itc``), so the
    demo's ablation costs no fine-tuning; ``benchmarks/ablation.py`` fine-tunes every row.
    """
    from valpat_keras.tasks.ablation import AblationBudget, evaluate_encoder

    measure = AblationBudget(image_size=tuple(budget.image_size), batch_size=budget.batch_size,
                             search="frozen", config=budget.config)
    rows = {"random": evaluate_encoder("random", data.market, data.pa100k, data.cuhk,
                                       out / "random", measure, seed)}
    for name, run in runs.items():
        rows[name] = evaluate_encoder(str(run), data.market, data.pa100k, data.cuhk,
                                      out / name.replace("+", "_"), measure, seed,
                                      objectives=PRETRAINING_RUNS[name])
    return rows


def _run_config(task: str, init: str, budget: DemoBudget, seed: int, verbose: int):
    """The run config of one transfer at the demo's budget."""
    from valpat_keras.tasks.attributes import AttributesRunConfig
    from valpat_keras.tasks.reid_training import ReIDRunConfig
    from valpat_keras.tasks.search import SearchRunConfig

    size = tuple(int(v) for v in budget.image_size)
    common = {"init": init, "encoder_config": budget.config, "seed": seed, "verbose": verbose}
    if task == "reid_supervised":
        return ReIDRunConfig(epochs=budget.reid_epochs, p=budget.p, k=budget.k,
                             image_size=size, steps_per_epoch=budget.reid_steps, **common)
    if task == "reid_unsupervised":
        return ReIDRunConfig(unsupervised=True, epochs=budget.unsupervised_epochs, p=budget.p,
                             k=budget.k, image_size=size, eps=budget.unsupervised_eps,
                             steps_per_epoch=budget.unsupervised_steps, **common)
    if task == "attributes":
        return AttributesRunConfig(epochs=budget.attribute_epochs, batch_size=budget.batch_size,
                                   image_size=size, steps_per_epoch=budget.attribute_steps,
                                   **common)
    if task == "text_search":
        return SearchRunConfig(epochs=budget.search_epochs, batch_size=budget.batch_size,
                               image_size=size if init == "random" else None,
                               steps_per_epoch=budget.search_steps, image_to_text=False,
                               **common)
    raise ValueError(f"unknown demo task {task!r}; choose from {sorted(TRANSFERS)}")


def transfer(task: str, data: DemoData, init: str, out: Path, budget: DemoBudget,
             seed: int, verbose: int) -> dict[str, Any]:
    """Fine-tunes one task from one initialisation with one seed; returns its test metrics.

    Args:
        task: A key of `TRANSFERS`.
        data: The SynthPed sets.
        init: ``"random"`` or a pretraining run folder.
        out: The run folder of this fine-tune.
        budget: The demo budget.
        seed: The fine-tuning seed.
        verbose: Keras ``fit`` verbosity.

    Returns:
        The metrics of `TRANSFER_METRICS` (fractions); unsupervised re-ID adds ``rounds``:
        ``(clusters, eps)`` of every clustering round.
    """
    from valpat_keras.tasks.attributes import train_attributes
    from valpat_keras.tasks.reid_training import train_reid
    from valpat_keras.tasks.search import train_search

    config = _run_config(task, init, budget, seed, verbose)
    if task in ("reid_supervised", "reid_unsupervised"):
        metrics = train_reid(data.market, out, config)
    elif task == "attributes":
        metrics = train_attributes(data.pa100k, out, config)
    else:
        metrics = train_search(data.cuhk, out, config)
    kept = {key: float(metrics[key]) for key in TRANSFER_METRICS[task]}
    if task == "reid_unsupervised":
        history = json.loads((Path(out) / "history.json").read_text())
        kept["rounds"] = [[int(h["num_clusters"]), float(h["eps"])] for h in history]
    return kept


def zero_shot(data: DemoData, run: Path, budget: DemoBudget) -> dict[str, float]:
    """Zero-shot attribute metrics of the pretrained image-text space on the test split."""
    from valpat_keras.tasks.zero_shot import evaluate_zero_shot

    metrics = evaluate_zero_shot(data.pa100k, run, batch_size=budget.batch_size)
    return {key: float(metrics[key]) for key in ("ma", "instance_acc", "instance_f1")}
