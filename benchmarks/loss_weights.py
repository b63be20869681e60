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
import time
from pathlib import Path

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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_loss_weights", help="output folder")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="cache of pretraining runs (default: OUT/cache)")
    parser.add_argument("--publish", default=None, metavar="MD",
                        help="also write the table to this Markdown file (for the docs)")
    parser.add_argument("--tiny", action="store_true", help="smoke run (tiny data, 2 steps)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Pretrains every candidate, scores it on validation, prints and writes the table."""
    import keras

    from valpat_keras.demo.budget import DemoBudget
    from valpat_keras.demo.stages import make_data
    from valpat_keras.run_outputs import environment_info, write_json, write_report
    from valpat_keras.tasks.ablation import AblationBudget, evaluate_encoder
    from valpat_keras.tasks.pretrain_cache import cached_pretrain

    args = parse_args(argv)
    started = time.perf_counter()
    budget = DemoBudget.quick() if args.tiny else DemoBudget.full()
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / "cache"
    data = make_data(out / "synthped", budget, seed=0)
    measure = AblationBudget(image_size=tuple(budget.image_size), batch_size=budget.batch_size,
                             search="frozen", config=budget.config)
    rows = []
    for label, objectives, weights in CANDIDATES:
        extra = {"loss_weights": weights} if weights else {}
        # The same arguments as the demo's runs, so the cache is shared with `valpat demo`.
        run, _ = cached_pretrain(data.pretrain, cache, name="_".join(objectives),
                                 printer=print, config=budget.config,
                                 objectives=list(objectives), **extra,
                                 steps=budget.pretrain_steps, batch_size=budget.batch_size,
                                 image_size=list(budget.image_size), seed=0, verbose=0)
        row = evaluate_encoder(str(run), data.market, data.pa100k, data.cuhk, out / "eval",
                               measure, objectives=objectives, split="val")
        history = json.loads((Path(run) / "history.json").read_text())
        row["final_losses"] = {name: float(history[f"{name}_loss"][-1]) for name in objectives}
        scores = [row[key] for key, _ in _COLUMNS]
        row.update(label=label, objectives=list(objectives), weights=weights,
                   total=None if None in scores else float(sum(scores)))
        print(f"{label}: " + ", ".join(f"{name} {row[key]}" for key, name in _COLUMNS),
              flush=True)
        rows.append(row)
    together = [r for r in rows if len(r["objectives"]) == 3]
    chosen = max(together, key=lambda r: r["total"])
    results = {"rows": rows, "chosen": chosen["label"], "chosen_weights": chosen["weights"],
               "budget": budget.to_dict(), "backend": keras.backend.backend(),
               "environment": environment_info(),
               "wall_seconds": round(time.perf_counter() - started, 1)}
    write_json(out / "results.json", results)

    def pct(value):
        return "—" if value is None else f"{100 * value:.1f}"

    lines = ["| pretraining | " + " | ".join(name for _, name in _COLUMNS)
             + " | sum | final ssl / itc / attr loss (unweighted) |",
             "|---|" + "---:|" * (len(_COLUMNS) + 2)]
    for row in rows:
        mark = " **(chosen)**" if row is chosen else ""
        lines.append(f"| {row['label']}{mark} | "
                     + " | ".join(pct(row[key]) for key, _ in _COLUMNS)
                     + f" | {pct(row['total'])} | "
                     + " / ".join(f"{row['final_losses'][n]:.2f}" if n in row["final_losses"]
                                  else "—" for n in ("ssl", "itc", "attr")) + " |")
    env = results["environment"]
    lines += ["", (f"Validation splits only; {budget.pretrain_steps} pretraining steps of "
              f"{budget.batch_size} images at {budget.image_size[0]}x{budget.image_size[1]}, "
              f"seed 0, backend {results['backend']}; {env['cpu']}, {env['cores']} cores, "
              f"{results['wall_seconds']:.0f} s.")]
    markdown = "\n".join(lines) + "\n"
    write_report(markdown, out / "loss_weights.md", args.publish)
    print(markdown)
    return results


if __name__ == "__main__":
    main()
