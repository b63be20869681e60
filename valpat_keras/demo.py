"""`valpat demo`: the whole VAL-PAT story on SynthPed, ending in one results table.

The stages, in order, each reusing the library's own entry points:

1. SynthPed: write the synthetic pretraining, Market-1501, PA-100K and CUHK-PEDES sets
   (`write_synthped`) and a grid of identities across cameras.
2. VAL-PAT pretraining with the three objectives (`pretrain`).
3. The objective ablation: pretraining with each objective alone at the same budget, then a
   cheap, honest downstream number for every encoder (random init included): frozen-feature
   re-ID mAP / rank-1 on the SynthPed Market test split (`evaluate_reid_from_features`) and the
   mA of a short attribute fine-tune (`train_attributes`).
4. The transfers, from random and from VAL-PAT initialisation at the same budget: supervised and
   unsupervised re-ID (`train_reid`), attribute recognition (`train_attributes`, plus zero-shot
   from the pretrained image-text backbone) and text-based person search (`train_search`).
5. One results table, written as ``results.md`` and ``results.json`` next to the figures.

Nothing is caught: a stage that fails stops the demo with its own error.

Example:

```python
from valpat_keras.demo import run_demo

results = run_demo("valpat_demo", quick=True, seed=0)
print(results["transfer"]["reid_supervised"]["valpat"]["mAP"])
```
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: The pretraining runs of the ablation, by the objectives they train.
ABLATION_OBJECTIVES: dict[str, tuple[str, ...]] = {
    "ssl": ("ssl",), "itc": ("itc",), "attr": ("attr",), "ssl+itc+attr": ("ssl", "itc", "attr"),
}

#: Figures copied into the output folder: file name -> the run folder file it comes from.
FIGURES: dict[str, str] = {
    "synthped_grid.png": "synthped/synthped_grid.png",
    "loss_curves.png": "runs/pretrain/loss_curves.png",
    "ranked_results.png": "runs/reid_supervised_valpat/ranked_results.png",
    "attribute_bars.png": "runs/attributes_valpat/attribute_bars.png",
    "attribute_bars_zero_shot.png": "runs/attributes_valpat/attribute_bars_zero_shot.png",
    "retrieval_examples.png": "runs/search_valpat/retrieval_examples.png",
}

_REID_KEYS = ("mAP", "rank1", "rank5", "mINP")
_ATTRIBUTE_KEYS = ("ma", "instance_acc", "instance_f1")
_SEARCH_KEYS = ("R1", "R5", "R10", "mAP")


@dataclasses.dataclass
class DemoBudget:
    """The sizes and training budgets of one demo run.

    `DemoBudget.full()` is the laptop-CPU run (a few minutes), `DemoBudget.quick()` the smoke
    version CI runs (a minute or two, mostly compiling). Every training stage is capped in
    steps, so the run time does not grow with the data.

    Attributes:
        synthped_preset: SynthPed size preset (``"tiny"``, ``"small"``, ``"default"``).
        image_size: ``(height, width)`` of the model inputs (SynthPed renders at this size).
        config: Image encoder configuration (see `IMAGE_ENCODER_CONFIGS`).
        batch_size: Pretraining, attribute and search batch size.
        pretrain_steps: Optimiser steps of every pretraining run (the main one and each
            ablation run, so the ablation compares objectives at the same budget).
        queue_size: MoCo queue length (a multiple of ``batch_size``).
        reid_epochs: Supervised re-ID epochs.
        reid_steps: Supervised re-ID steps per epoch.
        p: Identities per re-ID batch.
        k: Images per identity in a re-ID batch.
        unsupervised_epochs: Cluster Contrast rounds (re-cluster, then train).
        unsupervised_steps: Cluster Contrast steps per round.
        unsupervised_eps: DBSCAN radius of the pseudo-labels.
        attribute_epochs: Attribute fine-tuning epochs.
        attribute_steps: Attribute steps per epoch.
        search_epochs: Text search epochs.
        search_steps: Text search steps per epoch.
        ablation_attribute_steps: Steps of the ablation's attribute fine-tune (one epoch);
            0 leaves that column out (``None``), as the quick run does.
    """

    synthped_preset: str = "small"
    image_size: tuple[int, int] = (128, 64)
    config: str = "tiny"
    batch_size: int = 32
    pretrain_steps: int = 60
    queue_size: int = 1024
    reid_epochs: int = 4
    reid_steps: int = 10
    p: int = 8
    k: int = 4
    unsupervised_epochs: int = 3
    unsupervised_steps: int = 8
    unsupervised_eps: float = 0.6
    attribute_epochs: int = 2
    attribute_steps: int = 10
    search_epochs: int = 3
    search_steps: int = 10
    ablation_attribute_steps: int = 10

    @classmethod
    def full(cls) -> DemoBudget:
        """The default run: SynthPed ``small`` at 128x64, a few minutes on a laptop CPU."""
        return cls()

    @classmethod
    def quick(cls) -> DemoBudget:
        """The smoke run: SynthPed ``tiny`` at 64x32, two steps per stage, no ablation
        fine-tune (most of its time is compiling the train steps)."""
        return cls(synthped_preset="tiny", image_size=(64, 32), batch_size=8,
                   pretrain_steps=2, queue_size=64, reid_epochs=1, reid_steps=2, p=4, k=2,
                   unsupervised_epochs=1, unsupervised_steps=2, attribute_epochs=1,
                   attribute_steps=2, search_epochs=1, search_steps=2,
                   ablation_attribute_steps=0)

    def to_dict(self) -> dict[str, Any]:
        """The budget as a JSON-ready dict."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


class _Progress:
    """One line per stage: a bar of the stages done, the stage name, then its time."""

    def __init__(self, total: int, printer: Callable[[str], None]):
        self.total, self.done, self.printer = total, 0, printer
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()

    def stage(self, key: str, title: str):
        """Context manager timing one stage."""
        progress = self

        class _Stage:
            def __enter__(self):
                bar = "#" * progress.done + "." * (progress.total - progress.done)
                progress.printer(f"[{bar}] {progress.done + 1}/{progress.total} {title} ...")
                self.start = time.perf_counter()

            def __exit__(self, kind, value, traceback):
                if kind is None:
                    seconds = time.perf_counter() - self.start
                    progress.seconds[key] = round(seconds, 1)
                    progress.done += 1
                    progress.printer(f"      done in {seconds:.1f} s "
                                     f"(total {time.perf_counter() - progress.started:.0f} s)")
                return False

        return _Stage()


def _pick(metrics: dict, keys: tuple[str, ...]) -> dict[str, float]:
    return {key: float(metrics[key]) for key in keys}


def _frozen_reid(encoder, dataset, image_size: tuple[int, int], batch_size: int) -> dict:
    """Re-ID mAP / rank-1 of an encoder's frozen, L2-normalised features (cosine distance).

    No flip averaging: the ablation compares encoders with each other, and one pass per image
    halves its cost.
    """
    from valpat_keras.evaluation import evaluate_reid_from_features, extract_features

    kwargs = {"image_size": image_size, "batch_size": batch_size, "flip": False,
              "normalize": True, "verbose": False}
    q = extract_features(encoder, dataset.query, **kwargs)
    g = extract_features(encoder, dataset.gallery, **kwargs)
    result = evaluate_reid_from_features(q.features, g.features, q.pids, g.pids, q.camids,
                                         g.camids, metric="cosine")
    return {"mAP": float(result["mAP"]), "rank1": float(result["rank1"])}


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def results_markdown(results: dict) -> str:
    """The results of `run_demo` as Markdown tables (the analogue of the paper's tables).

    Args:
        results: The dict `run_demo` returns (or ``results.json`` read back).

    Returns:
        Markdown text: the transfer table, the zero-shot line and the objective ablation.
    """
    t = results["transfer"]
    budget = results["budget"]
    rows = [
        ("Supervised re-ID (Market layout)", "mAP", "reid_supervised", "mAP"),
        ("", "rank-1", "reid_supervised", "rank1"),
        ("Unsupervised re-ID (Market layout)", "mAP", "reid_unsupervised", "mAP"),
        ("", "rank-1", "reid_unsupervised", "rank1"),
        ("Attribute recognition (PA-100K layout)", "mA", "attributes", "ma"),
        ("", "instance F1", "attributes", "instance_f1"),
        ("Text-based person search (CUHK-PEDES layout)", "R1", "text_search", "R1"),
        ("", "mAP", "text_search", "mAP"),
    ]
    height, width = budget["image_size"]
    title = (f"# VAL-PAT on SynthPed ({budget['synthped_preset']}, {height}x{width}, "
             f"seed {results['seed']}, backend {results['backend']})")
    lines = [
        title, "",
        "## Transfer: random vs VAL-PAT initialisation (same budget, %)", "",
        "| Task | Metric | Random init | VAL-PAT init |", "|---|---|---:|---:|",
    ]
    for task, metric, key, field in rows:
        lines.append(f"| {task} | {metric} | {_fmt(t[key]['random'][field])} | "
                     f"{_fmt(t[key]['valpat'][field])} |")
    lines.append(f"| Zero-shot attributes (no fine-tuning) | mA | — | "
                 f"{_fmt(t['attributes']['zero_shot']['ma'])} |")
    steps = budget["pretrain_steps"]
    header = ("| Pretraining objectives | Frozen re-ID mAP | Frozen re-ID rank-1 "
              "| Attribute mA (short fine-tune) |")
    lines += ["", f"## Objective ablation (pretraining budget {steps} steps each, %)", "",
              header, "|---|---:|---:|---:|"]
    for name, row in results["ablation"].items():
        label = "none (random init)" if name == "random" else name.replace("+", " + ")
        lines.append(f"| {label} | {_fmt(row['reid_mAP'])} | {_fmt(row['reid_rank1'])} | "
                     f"{_fmt(row['attribute_ma'])} |")
    lines += ["", "## Figures", ""]
    lines += [f"- [{name}]({name})" for name in results["figures"]]
    total = sum(results["seconds"].values())
    lines += ["", f"Total time: {total:.0f} s (per stage in `results.json`)."]
    return "\n".join(lines) + "\n"


def run_demo(out_dir: str | Path = "valpat_demo", quick: bool = False, seed: int = 0,
             budget: DemoBudget | None = None, verbose: int = 0,
             printer: Callable[[str], None] | None = None) -> dict:
    """Runs the whole story on SynthPed and writes ``results.md``, ``results.json``, figures.

    Args:
        out_dir: Output folder (created; its ``synthped/`` and ``runs/`` are replaced).
        quick: Use `DemoBudget.quick()` (the smoke run) instead of
            `DemoBudget.full()`.
        seed: Seeds SynthPed, the weights, the samplers and the augmentation.
        budget: Explicit sizes and budgets; overrides ``quick``.
        verbose: Keras ``fit`` verbosity of the inner training runs (0: stage lines only).
        printer: Where progress lines go (default `print`, flushed).

    Returns:
        The results (also written to ``results.json``): ``budget``, ``seed``, ``backend``,
        ``synthped`` (counts), ``pretraining`` (final logged losses), ``transfer`` (per task
        ``random`` / ``valpat`` metrics; attributes also ``zero_shot``), ``ablation`` (per
        objective set: ``reid_mAP``, ``reid_rank1``, ``attribute_ma``), ``figures`` and
        ``seconds`` per stage. Metric values are fractions.
    """
    import keras

    from valpat_keras.data import registry
    from valpat_keras.data.synthped import SynthPedConfig, plot_identity_grid, write_synthped
    from valpat_keras.models.init import load_image_encoder
    from valpat_keras.run_outputs import write_json
    from valpat_keras.tasks.attributes import train_attributes
    from valpat_keras.tasks.pretraining import pretrain
    from valpat_keras.tasks.reid_training import ReIDTrainingConfig, train_reid
    from valpat_keras.tasks.search import train_search

    budget = budget or (DemoBudget.quick() if quick else DemoBudget.full())
    printer = printer or (lambda line: print(line, flush=True))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("synthped", "runs"):
        shutil.rmtree(out / stale, ignore_errors=True)
    runs = out / "runs"
    size = tuple(int(v) for v in budget.image_size)
    inits = ("random", "valpat")
    ablation_runs = [name for name in ABLATION_OBJECTIVES if name != "ssl+itc+attr"]
    progress = _Progress(2 + len(ablation_runs) + 1 + 4 * len(inits) + 1, printer)
    printer(f"valpat demo: SynthPed {budget.synthped_preset} at {size[0]}x{size[1]}, "
            f"backend {keras.backend.backend()}, seed {seed} -> {out}")

    with progress.stage("synthped", f"SynthPed ({budget.synthped_preset})"):
        config = SynthPedConfig.preset(budget.synthped_preset, seed=seed, height=size[0],
                                       width=size[1])
        info = write_synthped(out / "synthped", config)
        plot_identity_grid(info, out / "synthped" / "synthped_grid.png")
        pretrain_data = registry.load("luperson_ta", info.paths["pretrain_manifest"])
        market = registry.load("market1501", info.paths["market1501"])
        pa100k = registry.load("pa100k", info.paths["pa100k"])
        cuhk = registry.load("cuhk_pedes", info.paths["cuhk_pedes"])

    def pretrain_run(name: str, objectives: tuple[str, ...]) -> dict:
        return pretrain(pretrain_data, runs / name, config=budget.config,
                        objectives=objectives, steps=budget.pretrain_steps,
                        batch_size=budget.batch_size, image_size=size, seed=seed,
                        queue_size=budget.queue_size, verbose=verbose)

    with progress.stage("pretrain", "VAL-PAT pretraining (ssl + itc + attr)"):
        history = pretrain_run("pretrain", ABLATION_OBJECTIVES["ssl+itc+attr"])
    valpat_run = str(runs / "pretrain")
    run_of = {"ssl+itc+attr": valpat_run}
    for name in ablation_runs:
        with progress.stage(f"pretrain_{name}", f"ablation: pretraining with {name} only"):
            pretrain_run(f"pretrain_{name}", ABLATION_OBJECTIVES[name])
        run_of[name] = str(runs / f"pretrain_{name}")

    ablation: dict[str, dict[str, float | None]] = {}
    with progress.stage("ablation_eval", "ablation: frozen re-ID + short attribute fine-tune"):
        for name in ("random", *ABLATION_OBJECTIVES):
            init = "random" if name == "random" else run_of[name]
            keras.utils.set_random_seed(seed)
            encoder = load_image_encoder(init, config=budget.config, image_size=size)
            row: dict[str, float | None] = {
                f"reid_{k}": v for k, v in _frozen_reid(encoder, market, size,
                                                        budget.batch_size).items()}
            row["attribute_ma"] = None
            if budget.ablation_attribute_steps:
                metrics = train_attributes(
                    pa100k, runs / f"ablation_attributes_{name.replace('+', '_')}", init=init,
                    config=budget.config, epochs=1, batch_size=budget.batch_size,
                    image_size=size, seed=seed, steps_per_epoch=budget.ablation_attribute_steps,
                    verbose=verbose)
                row["attribute_ma"] = float(metrics["ma"])
            ablation[name] = row

    transfer: dict[str, dict[str, Any]] = {"reid_supervised": {}, "reid_unsupervised": {},
                                           "attributes": {}, "text_search": {}}
    for which in inits:
        init = "random" if which == "random" else valpat_run
        label = "random init" if which == "random" else "VAL-PAT init"
        with progress.stage(f"reid_supervised_{which}", f"supervised re-ID ({label})"):
            metrics = train_reid(
                market, runs / f"reid_supervised_{which}", init=init, config=budget.config,
                epochs=budget.reid_epochs, p=budget.p, k=budget.k, image_size=size, seed=seed,
                options=ReIDTrainingConfig(steps_per_epoch=budget.reid_steps,
                                           eval_every=budget.reid_epochs, verbose=verbose))
            transfer["reid_supervised"][which] = _pick(metrics, _REID_KEYS)
        with progress.stage(f"reid_unsupervised_{which}", f"unsupervised re-ID ({label})"):
            metrics = train_reid(
                market, runs / f"reid_unsupervised_{which}", init=init, config=budget.config,
                unsupervised=True, epochs=budget.unsupervised_epochs, p=budget.p, k=budget.k,
                image_size=size, seed=seed,
                options=ReIDTrainingConfig(steps_per_epoch=budget.unsupervised_steps,
                                           eval_every=budget.unsupervised_epochs,
                                           eps=budget.unsupervised_eps, verbose=verbose))
            transfer["reid_unsupervised"][which] = _pick(metrics, _REID_KEYS)
        with progress.stage(f"attributes_{which}", f"attribute recognition ({label})"
                            + (" + zero-shot" if which == "valpat" else "")):
            metrics = train_attributes(
                pa100k, runs / f"attributes_{which}", init=init, config=budget.config,
                epochs=budget.attribute_epochs, batch_size=budget.batch_size, image_size=size,
                seed=seed, zero_shot=which == "valpat", steps_per_epoch=budget.attribute_steps,
                verbose=verbose)
            transfer["attributes"][which] = _pick(metrics, _ATTRIBUTE_KEYS)
            if which == "valpat":
                transfer["attributes"]["zero_shot"] = _pick(metrics["zero_shot"],
                                                            _ATTRIBUTE_KEYS)
        with progress.stage(f"search_{which}", f"text-based person search ({label})"):
            metrics = train_search(
                cuhk, runs / f"search_{which}", init=init, config=budget.config,
                epochs=budget.search_epochs, batch_size=budget.batch_size,
                image_size=size if which == "random" else None, seed=seed,
                steps_per_epoch=budget.search_steps, image_to_text=False, verbose=verbose)
            transfer["text_search"][which] = _pick(metrics, _SEARCH_KEYS)

    with progress.stage("report", "figures and results table"):
        figures = {}
        for name, source in FIGURES.items():
            if (out / source).is_file():
                shutil.copyfile(out / source, out / name)
                figures[name] = name
        logs = getattr(history, "history", history)  # a keras History or its dict
        last = {key: float(np.asarray(values).reshape(-1)[-1]) for key, values in logs.items()
                if np.size(values)}
    results = {
        "budget": budget.to_dict(), "seed": int(seed), "backend": keras.backend.backend(),
        "synthped": dict(info.counts),
        "pretraining": {"run": "runs/pretrain", "final": last},
        "transfer": transfer, "ablation": ablation, "figures": figures,
        "seconds": dict(progress.seconds),
    }
    markdown = results_markdown(results)
    (out / "results.md").write_text(markdown)
    write_json(out / "results.json", results)
    printer("")
    printer(markdown)
    return results
