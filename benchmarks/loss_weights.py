"""Choosing VAL-PAT's loss weights on validation data: the demo's budget, a few weightings.

Pretrains the three objectives together with each candidate weighting (and each objective
alone, for reference) at the `valpat demo` budget, then scores every encoder with the
ablation's columns on *validation* data only (`evaluate_encoder(split="val")`: frozen re-ID on
a query / gallery of the Market-layout training identities, the attribute probe's validation
mA, text-search R1 on the text set's validation split). The weighting with the highest sum of
the three columns is the one `DemoBudget` uses; no test split is read. Prints the table and
writes ``results.json`` and ``loss_weights.md`` into ``--out``.

```
python benchmarks/loss_weights.py --cache valpat_demo/cache --publish tutorials/generated/loss_weights.md
```
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import keras
from _common import BenchmarkSetup, add_common_arguments, set_up, wall_seconds

from valpat_keras.run_outputs import environment_info, write_json, write_report
from valpat_keras.tasks.ablation import evaluate_encoder
from valpat_keras.tasks.pretrain_cache import cached_pretrain

#: (label, objectives, weights): the candidates and the single-objective references.
CANDIDATES: tuple[tuple[str, tuple[str, ...], dict[str, float] | None], ...] = (
    ("ssl 1, itc 1, attr 1", ("ssl", "itc", "attr"), None),
    ("ssl 0.3, itc 1, attr 1", ("ssl", "itc", "attr"), {"ssl": 0.3, "itc": 1, "attr": 1}),
    ("ssl 0.1, itc 1, attr 1", ("ssl", "itc", "attr"), {"ssl": 0.1, "itc": 1, "attr": 1}),
    ("ssl 1, itc 1, attr 3", ("ssl", "itc", "attr"), {"ssl": 1, "itc": 1, "attr": 3}),
    ("ssl 0.3, itc 1, attr 3", ("ssl", "itc", "attr"), {"ssl": 0.3, "itc": 1, "attr": 3}),
    ("ssl 0.1, itc 1, attr 3", ("ssl", "itc", "attr"), {"ssl": 0.1, "itc": 1, "attr": 3}),
    ("ssl alone", ("ssl",), None),
    ("itc alone", ("itc",), None),
    ("attr alone", ("attr",), None),
)

_COLUMNS = (("reid_mAP", "val frozen re-ID mAP"), ("probe_ma", "val attribute probe mA"),
            ("search_R1", "val text search R1"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's options."""
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]),
                                  out="bench_loss_weights")
    return parser.parse_args(argv)


def score_candidate(setup: BenchmarkSetup, label: str, objectives: tuple[str, ...],
                    weights: dict[str, float] | None) -> dict:
    """Pretrains one candidate (cached) and scores its encoder on validation data."""
    # The demo's `PretrainConfig` for these objectives, so the cache is shared with
    # `valpat demo` (whose weights are one of the candidates).
    config = setup.budget.pretrain_config(objectives, seed=0, loss_weights=weights)
    data = setup.data
    run, _ = cached_pretrain(data.pretrain, setup.cache, config, name="_".join(objectives),
                             printer=print)
    row = evaluate_encoder(str(run), data.market, data.pa100k, data.cuhk, setup.out / "eval",
                           setup.measure, objectives=objectives, split="val")
    history = json.loads((Path(run) / "history.json").read_text())
    row["final_losses"] = {name: float(history[f"{name}_loss"][-1]) for name in objectives}
    scores = [row[key] for key, _ in _COLUMNS]
    row.update(label=label, objectives=list(objectives), weights=weights,
               total=None if None in scores else float(sum(scores)))
    print(f"{label}: " + ", ".join(f"{name} {row[key]}" for key, name in _COLUMNS), flush=True)
    return row


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def table_markdown(results: dict) -> str:
    """The candidates' validation columns, their sum and final losses, as Markdown."""
    lines = ["| pretraining | " + " | ".join(name for _, name in _COLUMNS)
             + " | sum | final ssl / itc / attr loss (unweighted) |",
             "|---|" + "---:|" * (len(_COLUMNS) + 2)]
    for row in results["rows"]:
        mark = " **(chosen)**" if row["label"] == results["chosen"] else ""
        lines.append(f"| {row['label']}{mark} | "
                     + " | ".join(_pct(row[key]) for key, _ in _COLUMNS)
                     + f" | {_pct(row['total'])} | "
                     + " / ".join(f"{row['final_losses'][n]:.2f}" if n in row["final_losses"]
                                  else "—" for n in ("ssl", "itc", "attr")) + " |")
    env, budget = results["environment"], results["budget"]
    lines += ["", (f"Validation splits only; {budget['pretrain_steps']} pretraining steps of "
              f"{budget['batch_size']} images at {budget['image_size'][0]}x"
              f"{budget['image_size'][1]}, seed 0, backend {results['backend']}; {env['cpu']}, "
              f"{env['cores']} cores, {results['wall_seconds']:.0f} s.")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    """Pretrains every candidate, scores it on validation, prints and writes the table."""
    args = parse_args(argv)
    setup = set_up(args, search="frozen")
    rows = [score_candidate(setup, label, objectives, weights)
            for label, objectives, weights in CANDIDATES]
    together = [r for r in rows if len(r["objectives"]) == 3]
    chosen = max(together, key=lambda r: r["total"])
    results = {"rows": rows, "chosen": chosen["label"], "chosen_weights": chosen["weights"],
               "budget": setup.budget.to_dict(), "backend": keras.backend.backend(),
               "environment": environment_info(), "wall_seconds": wall_seconds(setup)}
    write_json(setup.out / "results.json", results)
    markdown = table_markdown(results)
    write_report(markdown, setup.out / "loss_weights.md", args.publish)
    print(markdown)
    return results


if __name__ == "__main__":
    main()
