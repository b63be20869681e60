"""Set-up shared by the pretraining benchmarks (`ablation.py`, `loss_weights.py`).

Both measure encoders pretrained at the `valpat demo` budget on the demo's SynthPed (seed 0)
with the ablation's columns, and cache their pretraining runs with the demo's.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from valpat_keras.demo.budget import DemoBudget
from valpat_keras.demo.stages import DemoData, make_data
from valpat_keras.tasks.ablation import AblationBudget


def add_common_arguments(parser: argparse.ArgumentParser, out: str) -> argparse.ArgumentParser:
    """``--out``, ``--cache``, ``--publish`` and ``--tiny``, the options every one takes."""
    parser.add_argument("--out", default=out, help="output folder")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="cache of pretraining runs (default: OUT/cache)")
    parser.add_argument("--publish", default=None, metavar="MD",
                        help="also write the table to this Markdown file (for the docs)")
    parser.add_argument("--tiny", action="store_true", help="smoke run (tiny data, 2 steps)")
    return parser


@dataclasses.dataclass
class BenchmarkSetup:
    """What a pretraining benchmark runs with.

    Attributes:
        started: `time.perf_counter` at the start (for the wall time).
        budget: The demo budget (`DemoBudget.quick` with ``--tiny``).
        out: The output folder.
        cache: The cache of pretraining runs.
        data: The demo's SynthPed sets.
        measure: The ablation's measuring budget.
    """

    started: float
    budget: DemoBudget
    out: Path
    cache: Path
    data: DemoData
    measure: AblationBudget


def set_up(args: argparse.Namespace, search: str = "frozen", **measure) -> BenchmarkSetup:
    """The budget, folders, SynthPed (seed 0) and measuring budget of a benchmark run.

    Args:
        args: The parsed options (`add_common_arguments`).
        search: The text-search column (`AblationBudget.search`).
        **measure: Other `AblationBudget` fields.
    """
    started = time.perf_counter()
    budget = DemoBudget.quick() if args.tiny else DemoBudget.full()
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / "cache"
    data = make_data(out / "synthped", budget, seed=0)
    ablation_budget = AblationBudget(image_size=tuple(budget.image_size),
                                     batch_size=budget.batch_size, search=search,
                                     config=budget.config, **measure)
    return BenchmarkSetup(started=started, budget=budget, out=out, cache=cache, data=data,
                          measure=ablation_budget)


def wall_seconds(setup: BenchmarkSetup) -> float:
    """Seconds since `set_up` started, rounded to 0.1."""
    return round(time.perf_counter() - setup.started, 1)
