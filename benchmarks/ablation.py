"""The objective ablation: all seven subsets of {ssl, itc, attr} plus random init, three seeds.

Every subset is pretrained at the same budget (the `valpat demo` default: SynthPed small at
64x32, 600 steps of 32 images) once per pretraining seed, on the same data; each encoder,
random init included, then gets the numbers of `valpat_keras.tasks.ablation.evaluate_encoder`:
frozen-feature re-ID mAP / rank-1 (Market-layout test split), the attribute linear probe mA
(regularisation chosen on validation, test scored once) and text-search R1 (the frozen
image-text space of subsets with itc, or with ``--search finetune`` a short fine-tune from
every encoder). Prints the table (mean ± std over seeds), says on how many columns the full
model beats every single objective and pair, and writes ``results.json`` and ``ablation.md``
into ``--out``.

Pretraining runs are cached (`cached_pretrain`); ``--cache valpat_demo/cache`` reuses the four
runs a default `valpat demo` trained for seed 0.

```
python benchmarks/ablation.py                                   # about an hour on 2 cores
python benchmarks/ablation.py --cache valpat_demo/cache --publish tutorials/generated/ablation.md
python benchmarks/ablation.py --tiny                            # smoke run
```
"""

from __future__ import annotations

import argparse

import keras
from _common import add_common_arguments, set_up, wall_seconds

from valpat_keras.demo.stages import pretraining_run
from valpat_keras.run_outputs import environment_info, write_json, write_report
from valpat_keras.tasks.ablation import (
    COLUMNS,
    OBJECTIVE_SUBSETS,
    evaluate_encoder,
    leaders,
    objectives_of,
    summarize,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's options; ``--tiny`` is a smoke run."""
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]),
                                  out="bench_ablation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="SEED",
                        help="pretraining seeds (default 0 1 2); the data is SynthPed seed 0")
    parser.add_argument("--search", choices=("frozen", "finetune", "none"), default="frozen",
                        help="text-search column: frozen image-text space (itc rows), a short "
                             "fine-tune of every encoder, or none")
    return parser.parse_args(argv)


def _cell(stats: dict) -> str:
    if stats["mean"] is None:
        return "—"
    return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"


def table_markdown(results: dict) -> str:
    """The ablation table (percent, mean ± std over seeds) and its verdict, as Markdown."""
    columns = [c for c in COLUMNS if c in next(iter(results["summary"].values()))]
    lines = ["| Pretraining objectives | " + " | ".join(COLUMNS[c] for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for name, row in results["summary"].items():
        label = "none (random init)" if name == "random" else name.replace("+", " + ")
        lines.append(f"| {label} | " + " | ".join(_cell(row[c]) for c in columns) + " |")
    leads = results["leads"]
    budget = results["budget"]
    leaders_text = ", ".join(f"{COLUMNS[c]}: {leader}" for c, leader in leads["leaders"].items())
    env = results["environment"]
    verdict = (f"Pretraining: {budget['pretrain_steps']} steps of {budget['batch_size']} images "
               f"at {budget['image_size'][0]}x{budget['image_size'][1]}, seeds "
               f"{', '.join(map(str, results['seeds']))}; text search: {results['search']}. "
               f"The three objectives together lead (highest mean of all pretraining runs) on "
               f"{leads['count']} of {leads['of']} columns ({leaders_text}). {env['cpu']}, "
               f"{env['cores']} cores, {results['wall_seconds']:.0f} s.")
    lines += ["", verdict]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict:
    """Pretrains and evaluates every row for every seed; returns the results dict."""
    setup = set_up(args, search=args.search, search_epochs=1 if args.tiny else 3,
                   search_steps=2 if args.tiny else 20)
    data, out, measure = setup.data, setup.out, setup.measure
    rows_by_seed = []
    for seed in args.seeds:
        rows = {"random": evaluate_encoder("random", data.market, data.pa100k, data.cuhk,
                                           out / f"seed{seed}" / "random", measure, seed)}
        print(f"seed {seed} random: {rows['random']}", flush=True)
        for subset in OBJECTIVE_SUBSETS:
            run_dir, _ = pretraining_run(data, setup.cache, subset, setup.budget, seed,
                                         fresh=False, printer=print, verbose=0)
            rows[subset] = evaluate_encoder(str(run_dir), data.market, data.pa100k, data.cuhk,
                                            out / f"seed{seed}" / subset.replace("+", "_"),
                                            measure, seed, objectives=objectives_of(subset))
            print(f"seed {seed} {subset}: {rows[subset]}", flush=True)
        rows_by_seed.append(rows)
    summary = summarize(rows_by_seed)
    lead_columns = ("reid_mAP", "probe_ma", "search_R1")
    pretrained = {k: v for k, v in summary.items() if k != "random"}
    best = leaders(pretrained, lead_columns)
    results = {
        "budget": setup.budget.to_dict(), "seeds": list(args.seeds), "search": args.search,
        "backend": keras.backend.backend(), "environment": environment_info(),
        "rows_by_seed": rows_by_seed, "summary": summary,
        "leads": {"leaders": best, "count": sum(v == "ssl+itc+attr" for v in best.values()),
                  "of": len(best)},
        "wall_seconds": wall_seconds(setup),
    }
    write_json(out / "results.json", results)
    markdown = table_markdown(results)
    write_report(markdown, out / "ablation.md", args.publish)
    print(markdown)
    return results


if __name__ == "__main__":
    run(parse_args())
