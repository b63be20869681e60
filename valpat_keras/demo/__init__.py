"""`valpat demo`: the whole VAL-PAT story on SynthPed, ending in one results table.

The stages (`valpat_keras.demo.stages`), each reusing the library's own entry points:

1. SynthPed in the real Market-1501 / PA-100K / CUHK-PEDES / manifest layouts.
2. VAL-PAT pretraining with the three objectives and, for the ablation, with each objective
   alone at the same budget; cached by data, arguments, seed and backend in ``OUT/cache``,
   so a second `valpat demo` reuses them (``fresh=True`` retrains).
3. The objective ablation: frozen re-ID, an attribute linear probe and frozen text search
   for every encoder (random init included).
4. The transfers from random and from VAL-PAT initialisation at the same budget, once per
   fine-tuning seed: supervised and unsupervised re-ID, attributes, text search; then
   zero-shot attributes.
5. One report (`valpat_keras.demo.report`): ``results.md``, ``results.json`` (machine,
   versions, wall time included) and the figures; `publish_results` turns it into the
   documentation's results page.

Model selection reads validation splits only; every test split is scored once, at the end
of its run. Nothing is caught: a stage that fails stops the demo with its own error.

Example:

```python
from valpat_keras.demo import run_demo

results = run_demo("valpat_demo", quick=True)
print(results["transfer"]["reid_supervised"]["valpat"]["mAP"]["mean"])
```
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from valpat_keras.demo import stages
from valpat_keras.demo.budget import DemoBudget
from valpat_keras.demo.report import ablation_leads, publish, results_markdown, summarize_transfer
from valpat_keras.demo.stages import PRETRAINING_RUNS, TRANSFERS
from valpat_keras.run_outputs import environment_info, write_json

__all__ = ["FIGURES", "DemoBudget", "publish_results", "results_markdown", "run_demo"]

#: Figures copied into the output folder: file name -> the file it comes from (under OUT).
FIGURES: dict[str, str] = {
    "synthped_grid.png": "synthped/synthped_grid.png",
    "loss_curves.png": "pretrain/loss_curves.png",
    "ranked_results.png": "runs/reid_supervised_valpat_seed{seed}/ranked_results.png",
    "attribute_bars.png": "runs/attributes_valpat_seed{seed}/attribute_bars.png",
    "retrieval_examples.png": "runs/text_search_valpat_seed{seed}/retrieval_examples.png",
}

#: The prose above the generated tables of ``tutorials/results.md``.
RESULTS_PAGE_INTRO = """# Synthetic-data results

Real pedestrian datasets cannot be shipped with a library, so the whole VAL-PAT story runs on
SynthPed, procedural pedestrians written in the real dataset layouts, with one command:

```bash
valpat demo                      # the default run (its wall time is at the bottom of this page)
valpat demo --quick              # the smoke version CI runs
valpat demo --fresh              # retrain the pretraining runs instead of reusing the cache
```

It generates SynthPed, pretrains VAL-PAT with its three objectives (and with each objective
alone, for the ablation), fine-tunes every transfer from random and from VAL-PAT
initialisation with three seeds, scores zero-shot attributes and writes `results.md`,
`results.json` and the figures into `valpat_demo/`. Best epochs and recipes are chosen on
validation splits; each test split is scored once, at the end of its run.

**This page is generated.** Everything below the line comes from the `results.json` of
`valpat demo --publish tutorials/results.md` (`valpat_keras.demo.publish_results`); nothing
is copied by hand. SynthPed is easier than real data and the budgets are small, so the
numbers show the direction and size of each comparison on a laptop CPU, not the paper's
figures; `benchmarks/` holds the longer runs. Why the three objectives together do not lead
every column of the ablation, and how the loss weights were chosen on validation data:
[Design](design.md#the-demo-what-it-must-show-and-the-choices-that-let-it-show-it-in-20-minutes).

---
"""


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


def _final_logs(run: Path) -> dict[str, float]:
    logs = json.loads((run / "history.json").read_text())
    return {key: float(np.asarray(values, dtype=float).reshape(-1)[-1])
            for key, values in logs.items() if np.size(values)}


def _say_stage_result(task: str, runs: list[dict], printer: Callable[[str], None]) -> None:
    metric = TRANSFERS[task][1]
    values = ", ".join(f"{100 * run[metric]:.1f}" for run in runs)
    printer(f"      {metric} per seed: {values}")
    if task == "reid_unsupervised":
        for run in runs:
            printer("      clusters per round: "
                    + ", ".join(f"{c} (eps {e:.2f})" for c, e in run["rounds"]))


def _backend() -> str:
    # Imported here: the demo package must stay importable before the backend is chosen
    # (`valpat --backend ... demo` parses its arguments first).
    import keras

    return keras.backend.backend()


@dataclasses.dataclass
class _DemoRun:
    """What every stage of one demo run shares."""

    out: Path
    budget: DemoBudget
    seed: int
    verbose: int
    fresh: bool
    printer: Callable[[str], None]
    progress: _Progress

    @property
    def runs_dir(self) -> Path:
        """The folder of the ablation and transfer runs."""
        return self.out / "runs"


def _start(out_dir: str | Path, budget: DemoBudget, seed: int, verbose: int, fresh: bool,
           printer: Callable[[str], None]) -> _DemoRun:
    """Clears the stale outputs, counts the stages and prints the banner."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("runs", "pretrain"):
        shutil.rmtree(out / stale, ignore_errors=True)
    names = _pretraining_names(budget)
    progress = _Progress(1 + len(names) + int(budget.ablation) + len(TRANSFERS) * 2 + 2,
                         printer)
    size = tuple(budget.image_size)
    printer(f"valpat demo: SynthPed {budget.synthped_preset} at {size[0]}x{size[1]}, "
            f"backend {_backend()}, seed {seed}, fine-tuning seeds "
            f"{list(budget.seeds)} -> {out}")
    return _DemoRun(out=out, budget=budget, seed=seed, verbose=verbose, fresh=fresh,
                    printer=printer, progress=progress)


def _pretraining_names(budget: DemoBudget) -> list[str]:
    return list(PRETRAINING_RUNS) if budget.ablation else ["ssl+itc+attr"]


def _data_stage(run: _DemoRun) -> stages.DemoData:
    """Stage 1: SynthPed in the real layouts."""
    with run.progress.stage("synthped", f"SynthPed ({run.budget.synthped_preset})"):
        return stages.make_data(run.out / "synthped", run.budget, run.seed)


def _pretraining_stage(run: _DemoRun, data: stages.DemoData
                       ) -> tuple[dict[str, Path], dict[str, dict[str, Any]]]:
    """Stage 2: the pretraining runs (cached); the full one is copied to ``OUT/pretrain``."""
    runs: dict[str, Path] = {}
    pretraining: dict[str, dict[str, Any]] = {}
    for name in _pretraining_names(run.budget):
        title = ("VAL-PAT pretraining (ssl + itc + attr)" if name == "ssl+itc+attr"
                 else f"ablation: pretraining with {name} only")
        with run.progress.stage(f"pretrain_{name}", title):
            folder, reused = stages.pretraining_run(data, run.out / "cache", name, run.budget,
                                                    run.seed, run.fresh, run.printer,
                                                    run.verbose)
        runs[name] = folder
        pretraining[name] = {"run": str(folder), "reused": reused,
                             "final": _final_logs(folder)}
    shutil.copytree(runs["ssl+itc+attr"], run.out / "pretrain",
                    ignore=shutil.ignore_patterns("*.keras"))
    return runs, pretraining


def _ablation_stage(run: _DemoRun, data: stages.DemoData,
                    runs: dict[str, Path]) -> dict[str, Any] | None:
    """Stage 3: the objective ablation (None when the budget skips it)."""
    if not run.budget.ablation:
        return None
    with run.progress.stage("ablation", "ablation: frozen re-ID, attribute probe, text search"):
        rows = stages.ablation_rows(data, runs, run.runs_dir / "ablation", run.budget,
                                    run.seed)
    return {"rows": rows, "leads": ablation_leads(rows)}


def _transfer_stage(run: _DemoRun, data: stages.DemoData,
                    valpat_run: Path) -> tuple[dict[str, Any], dict[str, list]]:
    """Stage 4: every transfer from random and VAL-PAT init, once per fine-tuning seed."""
    transfer: dict[str, Any] = {}
    unsupervised_runs: dict[str, list] = {}
    seeds = run.budget.seeds
    for task, (title, _) in TRANSFERS.items():
        per_seed: dict[str, list[dict]] = {}
        for which in ("random", "valpat"):
            init = "random" if which == "random" else str(valpat_run)
            label = "random init" if which == "random" else "VAL-PAT init"
            with run.progress.stage(f"{task}_{which}",
                                    f"{title} ({label}, {len(seeds)} seed(s))"):
                per_seed[which] = [
                    stages.transfer(task, data, init, run.runs_dir / f"{task}_{which}_seed{s}",
                                    run.budget, s, run.verbose) for s in seeds]
                _say_stage_result(task, per_seed[which], run.printer)
        transfer[task] = summarize_transfer(task, per_seed)
        if task == "reid_unsupervised":
            unsupervised_runs = per_seed
    return transfer, unsupervised_runs


def _zero_shot_stage(run: _DemoRun, data: stages.DemoData,
                     valpat_run: Path) -> dict[str, float]:
    """Stage 5: zero-shot attributes of the pretrained image-text space."""
    with run.progress.stage("zero_shot", "zero-shot attributes (VAL-PAT, no fine-tuning)"):
        return stages.zero_shot(data, valpat_run, run.budget)


def _copy_figures(run: _DemoRun) -> dict[str, str]:
    """The `FIGURES` of the first fine-tuning seed, copied into the output folder."""
    figures = {}
    for name, source in FIGURES.items():
        path = run.out / source.format(seed=run.budget.seeds[0])
        if path.is_file():
            shutil.copyfile(path, run.out / name)
            figures[name] = name
    return figures


def _command() -> str:
    if Path(sys.argv[0]).name in ("valpat", "__main__.py"):
        return "valpat " + " ".join(sys.argv[1:])
    return "valpat_keras.demo.run_demo"


def _report_stage(run: _DemoRun, data: stages.DemoData, parts: dict[str, Any]) -> dict:
    """Stage 6: the figures, ``results.json`` and ``results.md`` (printed)."""
    with run.progress.stage("report", "figures and results table"):
        figures = _copy_figures(run)
    pretraining = parts["pretraining"]
    results = {
        "command": _command(), "budget": run.budget.to_dict(), "seed": int(run.seed),
        "backend": _backend(), "environment": environment_info(),
        "synthped": dict(data.info.counts), "pretraining": pretraining,
        "transfer": parts["transfer"], "zero_shot": parts["zero_shot"],
        "unsupervised_runs": parts["unsupervised_runs"], "ablation": parts["ablation"],
        "figures": figures, "seconds": dict(run.progress.seconds),
        "wall_seconds": round(time.perf_counter() - run.progress.started, 1),
        "cached_runs": sum(entry["reused"] for entry in pretraining.values()),
    }
    markdown = results_markdown(results)
    (run.out / "results.md").write_text(markdown)
    write_json(run.out / "results.json", results)
    run.printer("")
    run.printer(markdown)
    return results


def run_demo(out_dir: str | Path = "valpat_demo", quick: bool = False, seed: int = 0,
             budget: DemoBudget | None = None, verbose: int = 0, fresh: bool = False,
             printer: Callable[[str], None] | None = None) -> dict:
    """Runs the whole story on SynthPed and writes ``results.md``, ``results.json``, figures.

    Args:
        out_dir: Output folder (created; its ``runs/`` and ``pretrain/`` are replaced, its
            ``synthped/`` is reused when written with the same config, its ``cache/`` of
            pretraining runs is kept).
        quick: Use `DemoBudget.quick()` (the smoke run) instead of `DemoBudget.full()`.
        seed: Seeds SynthPed and the pretraining runs; fine-tuning seeds are the budget's.
        budget: Explicit sizes and budgets; overrides ``quick``.
        verbose: Keras ``fit`` verbosity of the inner training runs (0: stage lines only).
        fresh: Retrain the pretraining runs even when the cache holds them.
        printer: Where progress lines go (default `print`, flushed).

    Returns:
        The results (also written to ``results.json``): ``budget``, ``seed``, ``backend``,
        ``environment``, ``synthped`` (counts), ``pretraining`` (per run: folder, whether it
        came from the cache, final logged losses), ``transfer`` (per task and init: mean,
        std and per-seed values of each metric; the gain on the main metric and whether it
        exceeds the seed spread), ``zero_shot``, ``unsupervised_runs`` (clusters per round),
        ``ablation`` (rows and on how many columns the full model leads), ``figures``,
        ``seconds`` per stage and ``wall_seconds``. Metric values are fractions.
    """
    budget = budget or (DemoBudget.quick() if quick else DemoBudget.full())
    run = _start(out_dir, budget, seed, verbose, fresh,
                 printer or (lambda line: print(line, flush=True)))
    data = _data_stage(run)
    runs, pretraining = _pretraining_stage(run, data)
    ablation = _ablation_stage(run, data, runs)
    transfer, unsupervised_runs = _transfer_stage(run, data, runs["ssl+itc+attr"])
    zero_shot = _zero_shot_stage(run, data, runs["ssl+itc+attr"])
    return _report_stage(run, data, {
        "pretraining": pretraining, "transfer": transfer, "zero_shot": zero_shot,
        "unsupervised_runs": unsupervised_runs, "ablation": ablation})


def publish_results(out_dir: str | Path, docs_page: str | Path) -> Path:
    """Writes the documentation's results page from a finished demo's ``results.json``.

    Args:
        out_dir: The demo's output folder.
        docs_page: The page to write, e.g. ``tutorials/results.md`` (figures and a copy of
            ``results.json`` go to ``tutorials/results/``).

    Returns:
        The page written.
    """
    out = Path(out_dir)
    results = json.loads((out / "results.json").read_text())
    return publish(results, out, Path(docs_page), RESULTS_PAGE_INTRO)
