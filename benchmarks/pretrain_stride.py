"""Pretraining at the last ResNet stride 1 or 2: speed and transfer quality, on validation data.

MoCo and LUP pretrain the ResNet at its standard last stride 2; BoT's stride 1 is a fine-tuning
trick (a 2x larger final feature map, 4x its pixels). The convolution weights are the same at
either stride, so an encoder pretrained at 2 fine-tunes at 1 (`TRANSFER_LAST_STRIDE`). This
benchmark pretrains the demo's run (`valpat demo` budget and loss weights, all three
objectives, seed 0) at each stride with ``--seeds`` pretraining seeds, times it, and scores every
encoder as the transfers use it, at stride 1 (and a stride-2 encoder also at its own stride,
frozen as pretrained, to tell the stride's effect on pretraining from the switch's), with the
ablation's columns on *validation* data
only (`evaluate_encoder(split="val")`: frozen re-ID mAP on a query / gallery of the
Market-layout training identities, the attribute probe's validation mA, frozen text-search R1
on the text set's validation split). No test split is read: the default that follows from it
(`DEFAULT_PRETRAIN_LAST_STRIDE`) is a selection.

```
python benchmarks/pretrain_stride.py --publish tutorials/generated/pretrain_stride.md
python benchmarks/pretrain_stride.py --tiny          # smoke run
```
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import keras
from _common import BenchmarkSetup, add_common_arguments, set_up, wall_seconds

from valpat_keras.models.init import TRANSFER_LAST_STRIDE
from valpat_keras.run_outputs import environment_info, write_json, write_report
from valpat_keras.tasks.ablation import evaluate_encoder
from valpat_keras.tasks.pretrain_cache import cached_pretrain

OBJECTIVES = ("ssl", "itc", "attr")
_COLUMNS = (("reid_mAP", "val frozen re-ID mAP"), ("probe_ma", "val attribute probe mA"),
            ("search_R1", "val text search R1"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's options."""
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]),
                                  out="bench_pretrain_stride")
    parser.add_argument("--seeds", type=int, default=2, help="pretraining seeds per stride (2)")
    return parser.parse_args(argv)


def score_stride(setup: BenchmarkSetup, last_stride: int, seed: int) -> dict:
    """Pretrains the demo's run at ``last_stride`` (timed) and scores it on validation data."""
    config = setup.budget.pretrain_config(OBJECTIVES, seed=seed,
                                          loss_weights=setup.budget.loss_weights)
    config = dataclasses.replace(config, last_stride=last_stride)
    started = time.perf_counter()
    run, reused = cached_pretrain(setup.data.pretrain, setup.cache, config,
                                  name=f"stride{last_stride}", printer=print)
    seconds = time.perf_counter() - started
    row = evaluate_encoder(str(run), setup.data.market, setup.data.pa100k, setup.data.cuhk,
                           setup.out / "eval" / f"stride{last_stride}_seed{seed}",
                           setup.measure, objectives=OBJECTIVES, split="val")
    if last_stride != TRANSFER_LAST_STRIDE:
        # The same encoder frozen at the stride it was pretrained at: separates what the
        # stride does to pretraining from what switching it without fine-tuning costs.
        own = evaluate_encoder(str(run), setup.data.market, setup.data.pa100k, setup.data.cuhk,
                               setup.out / "eval" / f"stride{last_stride}_seed{seed}_own",
                               setup.measure, objectives=OBJECTIVES, split="val",
                               last_stride=None)
        row["at_own_stride"] = {key: own[key] for key, _ in _COLUMNS}
    row.update(last_stride=last_stride, seed=seed, reused=reused,
               pretrain_seconds=None if reused else round(seconds, 1),
               steps_per_s=None if reused else round(config.steps / seconds, 2))
    print(f"stride {last_stride} seed {seed}: " + ", ".join(
        f"{name} {row[key]}" for key, name in _COLUMNS)
        + ("" if reused else f", {row['steps_per_s']} steps/s"), flush=True)
    return row


def summarize(rows: list[dict]) -> list[dict]:
    """Per stride: the mean of every column over the seeds."""
    summary = []
    for stride in sorted({r["last_stride"] for r in rows}):
        mine = [r for r in rows if r["last_stride"] == stride]
        entry = {"last_stride": stride, "seeds": [r["seed"] for r in mine]}
        for key in [k for k, _ in _COLUMNS] + ["steps_per_s", "pretrain_seconds"]:
            values = [r[key] for r in mine if r[key] is not None]
            entry[key] = statistics.fmean(values) if values else None
        own = [r["at_own_stride"] for r in mine if "at_own_stride" in r]
        if own:
            entry["at_own_stride"] = {key: statistics.fmean(o[key] for o in own)
                                      for key, _ in _COLUMNS}
        summary.append(entry)
    return summary


def _fmt(value: float | None, scale: float = 100.0, digits: int = 1) -> str:
    return "—" if value is None else f"{scale * value:.{digits}f}"


def table_markdown(results: dict) -> str:
    """The per-stride means (and each seed), as Markdown.

    Pretraining times are in ``results.json`` but not in the table: this benchmark runs for
    many minutes and shares the machine; benchmarks/pretrain_speed.py ``--last-stride``
    measures the speed of each stride, round robin.
    """
    lines = ["| pretraining last stride | " + " | ".join(n for _, n in _COLUMNS) + " |",
             "|---|" + "---:|" * len(_COLUMNS)]
    for entry in results["summary"]:
        mark = " **(default)**" if entry["last_stride"] == results["chosen"] else ""
        lines.append(f"| {entry['last_stride']}{mark} (mean of seeds {entry['seeds']}) | "
                     + " | ".join(_fmt(entry[k]) for k, _ in _COLUMNS) + " |")
    for entry in results["summary"]:
        if "at_own_stride" in entry:
            lines.append(f"| {entry['last_stride']}, frozen at its own stride "
                         f"{entry['last_stride']} (mean of seeds {entry['seeds']}) | "
                         + " | ".join(_fmt(entry["at_own_stride"][k]) for k, _ in _COLUMNS)
                         + " |")
    for row in results["rows"]:
        lines.append(f"| {row['last_stride']}, seed {row['seed']} | "
                     + " | ".join(_fmt(row[k]) for k, _ in _COLUMNS) + " |")
    env, budget = results["environment"], results["budget"]
    lines += ["", (f"Every encoder scored at last stride 1 (as the transfers fine-tune it; the "
                   f"'own stride' row keeps the pretraining stride), on validation splits only; "
                   f"{budget['pretrain_steps']} pretraining steps of {budget['batch_size']} "
                   f"images at {budget['image_size'][0]}x{budget['image_size'][1]}, backend "
                   f"{results['backend']}; {env['cpu']}, {env['cores']} cores; benchmark wall "
                   f"time {results['wall_seconds']:.0f} s.")]
    return "\n".join(lines) + "\n"


def choose(summary: list[dict]) -> int:
    """Stride 2 (the faster) unless its validation columns sum lower than stride 1's by more
    than one point: "the quality holds" within the seed-to-seed spread of this budget."""
    totals = {e["last_stride"]: sum(e[k] or 0.0 for k, _ in _COLUMNS) for e in summary}
    if 1 in totals and 2 in totals and totals[2] < totals[1] - 0.01:
        return 1
    return 2


def main(argv: list[str] | None = None) -> dict:
    """Pretrains at both strides, scores on validation, prints and writes the table."""
    args = parse_args(argv)
    setup = set_up(args, search="frozen")
    seeds = range(1 if args.tiny else args.seeds)
    rows = [score_stride(setup, stride, seed) for seed in seeds for stride in (1, 2)]
    summary = summarize(rows)
    results = {"rows": rows, "summary": summary, "chosen": choose(summary),
               "budget": setup.budget.to_dict(), "backend": keras.backend.backend(),
               "environment": environment_info(), "wall_seconds": wall_seconds(setup)}
    write_json(setup.out / "results.json", results)
    markdown = table_markdown(results)
    write_report(markdown, setup.out / "pretrain_stride.md", args.publish)
    print(markdown)
    return results


if __name__ == "__main__":
    main()
