"""The demo's results: summaries over seeds, the claims they support, Markdown tables."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from valpat_keras.demo.stages import TRANSFERS
from valpat_keras.run_outputs import write_json

#: Chance level of mA (the mean of positive and negative recall).
CHANCE_MA = 0.5

_ROWS = [
    ("Supervised re-ID (Market layout)", "reid_supervised", ("mAP", "rank1")),
    ("Unsupervised re-ID (Market layout)", "reid_unsupervised", ("mAP", "rank1")),
    ("Attribute recognition (PA-100K layout)", "attributes", ("ma", "instance_f1")),
    ("Text-based person search (CUHK-PEDES layout)", "text_search", ("R1", "mAP")),
]
_METRIC_LABELS = {"mAP": "mAP", "rank1": "rank-1", "ma": "mA", "instance_f1": "instance F1",
                  "R1": "R1"}
_ABLATION_COLUMNS = [("reid_mAP", "Frozen re-ID mAP"), ("reid_rank1", "Frozen re-ID rank-1"),
                     ("probe_ma", "Attribute probe mA"), ("search_R1", "Frozen text search R1")]
#: How the demo's ablation columns are measured.
ABLATION_NOTE = ("The attribute probe is a logistic regression per attribute whose "
                 "regularisation is chosen on the validation split; text search ranks the "
                 "test images for every test caption in the pretrained image-text space (only "
                 "runs trained with itc have one). The full seven-subset table with three "
                 "pretraining seeds is `benchmarks/ablation.py`'s.")
_ABLATION_NAMES = {"reid_mAP": "frozen re-ID mAP", "probe_ma": "the attribute probe",
                   "search_R1": "frozen text search"}
#: The ablation columns on which the full model is compared with each single objective.
LEAD_COLUMNS = ("reid_mAP", "probe_ma", "search_R1")


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "values"}`` of per-seed values (population std)."""
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std()),
            "values": [float(v) for v in values]}


def summarize_transfer(task: str, per_seed: Mapping[str, Sequence[Mapping[str, Any]]]
                       ) -> dict[str, Any]:
    """Mean ± std over seeds per initialisation, and the gain on the task's main metric.

    The gain is *clear* when it exceeds the sum of the two standard deviations: the two
    seed spreads do not overlap.

    Args:
        task: A key of `TRANSFERS`.
        per_seed: ``{"random": [metrics per seed], "valpat": [...]}``.

    Returns:
        ``{"random": {metric: mean_std}, "valpat": {...}, "metric", "gain", "spread",
        "clear"}``.
    """
    out: dict[str, Any] = {}
    for init, runs in per_seed.items():
        keys = [k for k, v in runs[0].items() if isinstance(v, float)]
        out[init] = {key: mean_std([run[key] for run in runs]) for key in keys}
    metric = TRANSFERS[task][1]
    gain = out["valpat"][metric]["mean"] - out["random"][metric]["mean"]
    spread = out["valpat"][metric]["std"] + out["random"][metric]["std"]
    out.update(metric=metric, gain=float(gain), spread=float(spread),
               clear=bool(gain > spread))
    return out


def ablation_leads(rows: Mapping[str, Mapping[str, float | None]],
                   full: str = "ssl+itc+attr") -> dict[str, Any]:
    """On how many columns the full model beats every other pretraining run of the ablation.

    Args:
        rows: ``{row name: {column: value}}`` (random init included, not compared).
        full: The row of the full model.

    Returns:
        ``{"columns": {column: bool}, "count": int, "of": int}`` over `LEAD_COLUMNS` that
        the full row has a value in.
    """
    others = [name for name in rows if name not in (full, "random")]
    columns = {}
    for column in LEAD_COLUMNS:
        value = rows[full].get(column)
        if value is None:
            continue
        rivals = [rows[o][column] for o in others if rows[o].get(column) is not None]
        columns[column] = bool(all(value > r for r in rivals))
    return {"columns": columns, "count": sum(columns.values()), "of": len(columns)}


def claims(results: Mapping[str, Any]) -> list[str]:
    """What the results show, one sentence each, computed from the numbers."""
    lines = []
    transfer = results["transfer"]
    seeds = len(results["budget"]["seeds"])
    clear = [task for task in TRANSFERS if transfer[task]["clear"]]
    lines.append(f"VAL-PAT init beats random init by more than the spread of {seeds} "
                 f"fine-tuning seed(s) on {len(clear)} of {len(TRANSFERS)} tasks"
                 + (f" (not on: {', '.join(t for t in TRANSFERS if t not in clear)})."
                    if len(clear) < len(TRANSFERS) else "."))
    zs = results["zero_shot"]["ma"]
    lines.append(f"Zero-shot attribute mA is {100 * zs:.1f}, "
                 f"{'above' if zs > CHANCE_MA else 'not above'} chance "
                 f"({100 * CHANCE_MA:.0f}).")
    if results.get("ablation"):
        leads = results["ablation"]["leads"]
        rows = results["ablation"]["rows"]
        won = [_ABLATION_NAMES[c] for c, led in leads["columns"].items() if led]
        lost = []
        for column, led in leads["columns"].items():
            if not led:
                rivals = {n: r[column] for n, r in rows.items()
                          if n not in ("random", "ssl+itc+attr") and r[column] is not None}
                lost.append(f"{max(rivals, key=rivals.get)} alone leads {_ABLATION_NAMES[column]}")
        text = (f"The three objectives together beat every single objective on "
                f"{leads['count']} of {leads['of']} ablation columns"
                + (f" ({', '.join(won)})" if won else ""))
        lines.append(text + (f"; {'; '.join(lost)}." if lost else "."))
    return lines


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _pm(stats: Mapping[str, Any]) -> str:
    return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"


def results_markdown(results: Mapping[str, Any], figure_prefix: str = "") -> str:
    """The results of `run_demo` as Markdown (the analogue of the paper's tables).

    Args:
        results: The dict `run_demo` returns (or its ``results.json`` read back).
        figure_prefix: Prepended to every figure link (for a page in another folder).

    Returns:
        Markdown: the claims, the transfer table, zero-shot, the ablation, the clustering
        rounds, the figures and the machine.
    """
    budget, transfer = results["budget"], results["transfer"]
    height, width = budget["image_size"]
    seeds = budget["seeds"]
    title = (f"# VAL-PAT on SynthPed ({budget['synthped_preset']}, {height}x{width}, "
             f"backend {results['backend']})")
    lines = [title, ""]
    lines += [f"- {line}" for line in claims(results)]
    heading = (f"## Transfer: random vs VAL-PAT initialisation (%, mean ± std over "
               f"fine-tuning seeds {', '.join(map(str, seeds))})")
    lines += ["", heading, "", "| Task | Metric | Random init | VAL-PAT init | Gain |",
              "|---|---|---:|---:|---:|"]
    for title, task, metrics in _ROWS:
        row = transfer[task]
        for i, metric in enumerate(metrics):
            gain = row["valpat"][metric]["mean"] - row["random"][metric]["mean"]
            lines.append(f"| {title if i == 0 else ''} | {_METRIC_LABELS[metric]} | "
                         f"{_pm(row['random'][metric])} | {_pm(row['valpat'][metric])} | "
                         f"{100 * gain:+.1f} |")
    lines.append(f"| Zero-shot attributes (no fine-tuning; chance {100 * CHANCE_MA:.0f}) | mA "
                 f"| — | {_pct(results['zero_shot']['ma'])} | |")
    if results.get("ablation"):
        steps = budget["pretrain_steps"]
        heading = (f"## Objective ablation (each pretrained {steps} steps, seed "
                   f"{results['seed']}; frozen features, test splits, %)")
        header = "| Pretraining objectives | " + " | ".join(c for _, c in _ABLATION_COLUMNS)
        lines += ["", heading, "", header + " |", "|---|" + "---:|" * len(_ABLATION_COLUMNS)]
        for name, row in results["ablation"]["rows"].items():
            label = "none (random init)" if name == "random" else name.replace("+", " + ")
            lines.append(f"| {label} | " + " | ".join(_pct(row[c]) for c, _ in _ABLATION_COLUMNS)
                         + " |")
        lines += ["", ABLATION_NOTE]
    rounds = {init: [run["rounds"] for run in results["unsupervised_runs"][init]]
              for init in results["unsupervised_runs"]}
    lines += ["", "## Cluster Contrast rounds (clusters found, DBSCAN radius)", ""]
    for init, per_seed in rounds.items():
        text = "; ".join(" → ".join(f"{c} ({e:.2f})" for c, e in seed_rounds)
                         for seed_rounds in per_seed)
        lines.append(f"- {init}: {text}")
    if results["figures"]:
        lines += ["", "## Figures", ""]
        lines += [f"![{name}]({figure_prefix}{name})" for name in results["figures"]]
    env = results["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    run = (f"`{results['command']}` on {env['cpu']} ({env['cores']} cores, "
           f"{env['memory_gib']} GiB), {env['date']}; {versions}. Wall time "
           f"{results['wall_seconds']:.0f} s ({results['cached_runs']} of "
           f"{len(results['pretraining'])} pretraining runs taken from the cache; seconds "
           f"per stage in `results.json`).")
    lines += ["", "## Run", "", run]
    return "\n".join(lines) + "\n"


def publish(results: Mapping[str, Any], out_dir: Path, docs_page: Path,
            intro: str) -> Path:
    """Writes the results page of the documentation from a demo's results (no hand copy).

    Args:
        results: The demo's results.
        out_dir: The demo folder holding the figures and ``results.json``.
        docs_page: The Markdown page to write (its figures go to ``<page stem>/`` beside it).
        intro: Prose placed above the generated tables.

    Returns:
        The page written.
    """
    folder = docs_page.parent / docs_page.stem
    folder.mkdir(parents=True, exist_ok=True)
    for name in results["figures"]:
        shutil.copyfile(out_dir / name, folder / name)
    write_json(folder / "results.json", results)
    body = results_markdown(results, figure_prefix=f"{docs_page.stem}/")
    # The generated title becomes a section of the page.
    body = body.replace("# VAL-PAT on SynthPed", "## Results: VAL-PAT on SynthPed", 1)
    body = "\n".join(("#" + line) if line.startswith("## ") and i > 0 else line
                     for i, line in enumerate(body.splitlines()))
    docs_page.write_text(intro.rstrip() + "\n\n" + body + "\n")
    return docs_page
