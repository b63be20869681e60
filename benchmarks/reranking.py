"""Time and peak memory of sparse k-reciprocal re-ranking at Market-1501 or MSMT17 size.

Runs `iter_re_ranking_blocks` (k1=20, k2=6, lambda=0.3) on random identity-shaped
features in a subprocess and prints its seconds and peak RSS (``ru_maxrss``), and the mAP
before and after re-ranking. The ``(Q, G)`` output is consumed block by block by
`evaluate_reid_from_blocks`, so it is never held (3.8 GiB at MSMT17 size); ``--dense-output``
materialises it instead, as `re_ranking_from_features` returns it. ``--check-dense`` also runs
the dense reference `re_ranking` and prints the largest difference (small scales only).

Usage:

```
python benchmarks/reranking.py [--msmt] [--scale 1.0] [--dim 256] [--dense-output]
    [--out runs/reranking] [--publish tutorials/generated/reranking.md]
```

Writes ``results.json`` (one entry per case and options, earlier cases kept) and
``reranking.md`` (their table) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from valpat_keras.run_outputs import write_json, write_report

sys.path.insert(0, str(Path(__file__).parent))
from eval_metrics import CASES, synthetic_reid


def run(case: str, scale: float, dim: int, dense_output: bool, check_dense: bool) -> dict:
    """Re-ranks one synthetic set in this process and returns its figures."""
    from valpat_keras.evaluation import (
        evaluate_reid_from_blocks,
        evaluate_reid_from_features,
        iter_re_ranking_blocks,
        re_ranking,
        re_ranking_from_features,
    )
    from valpat_keras.evaluation.distances import pairwise_distance

    n_q, n_g, n_ids, n_cams, n_dis = CASES[case]
    n_q, n_g, n_dis = (max(1, int(v * scale)) for v in (n_q, n_g, n_dis))
    n_ids = max(2, min(n_ids, n_q, n_g - n_dis))
    qf, gf, *ids = synthetic_reid(n_q, n_g, n_ids, n_cams, n_dis, dim)
    before = evaluate_reid_from_features(qf, gf, *ids, metric="sqeuclidean")
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    if dense_output:
        out = re_ranking_from_features(qf, gf, compute_dtype=np.float32)
        seconds = time.perf_counter() - start
        after = evaluate_reid_from_blocks([(slice(0, n_q), out)], *ids)
    else:
        blocks = iter_re_ranking_blocks(qf, gf, compute_dtype=np.float32)
        after = evaluate_reid_from_blocks(blocks, *ids)
        seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {"case": case, "queries": n_q, "gallery": n_g, "seconds": seconds,
              "cpu_seconds": usage.ru_utime + usage.ru_stime,  # whole process, robust to load
              "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
              "rss_before_gib": base_rss, "mAP_before": before["mAP"],
              "mAP_after": after["mAP"]}
    if check_dense:
        sparse = re_ranking_from_features(qf, gf)
        dense = re_ranking(*(pairwise_distance(a, b, "sqeuclidean")
                             for a, b in ((qf, gf), (qf, qf), (gf, gf))))
        result["max_abs_diff_vs_dense"] = float(np.abs(sparse - dense).max())
    return result


def main() -> None:
    """Runs the chosen case in a fresh subprocess and prints its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--msmt", action="store_true", help="MSMT17 size (default Market)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the real sizes")
    parser.add_argument("--dim", type=int, default=256, help="feature dimension")
    parser.add_argument("--dense-output", action="store_true",
                        help="materialise the (Q, G) output instead of streaming blocks")
    parser.add_argument("--check-dense", action="store_true",
                        help="compare with the dense reference (small scales only)")
    parser.add_argument("--out", default="runs/reranking", help="output folder")
    parser.add_argument("--publish", default=None, metavar="MD",
                        help="also write the table to this Markdown file (for the docs)")
    parser.add_argument("--run-one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    case = "msmt" if args.msmt else "market"
    if args.run_one:
        print(json.dumps(run(case, args.scale, args.dim, args.dense_output, args.check_dense)))
        return
    cmd = [sys.executable, __file__, "--run-one", "--scale", str(args.scale), "--dim",
           str(args.dim)] + [f for f, on in (("--msmt", args.msmt),
                                             ("--dense-output", args.dense_output),
                                             ("--check-dense", args.check_dense)) if on]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    line = (f"re-ranking {case} {r['queries']} x {r['gallery']} (dim {args.dim}): "
            f"{r['seconds']:.2f} s, peak RSS {r['peak_rss_gib']:.2f} GiB "
            f"(before re-ranking {r['rss_before_gib']:.2f} GiB); "
            f"mAP {r['mAP_before']:.3f} -> {r['mAP_after']:.3f}")
    if "max_abs_diff_vs_dense" in r:
        line += f"; max |sparse - dense| {r['max_abs_diff_vs_dense']:.2e}"
    print(line)
    record(r, args)


def record(result: dict, args: argparse.Namespace) -> None:
    """Adds the case to OUT/results.json (replacing a run with the same options), writes
    the table of all recorded cases and prints it."""
    out = Path(args.out)
    path = out / "results.json"
    key = {"case": result["case"], "scale": args.scale, "dim": args.dim,
           "dense_output": args.dense_output}
    cases = json.loads(path.read_text())["cases"] if path.exists() else []
    cases = [c for c in cases if {k: c.get(k) for k in key} != key] + [{**key, **result}]
    machine = f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores"
    write_json(path, {"machine": machine, "cases": cases})
    markdown = markdown_table(machine, cases)
    write_report(markdown, out / "reranking.md", args.publish)
    print(markdown)


def markdown_table(machine: str, cases: list[dict]) -> str:
    """The Markdown table of the recorded cases."""
    lines = [(f"Sparse k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3), synthetic features; "
              f"{machine}."), "",
             "| case | queries x gallery | dim | output | time | peak RSS | mAP before -> after |",
             "|---|---:|---:|---|---:|---:|---|"]
    for c in cases:
        output = "held (Q x G)" if c["dense_output"] else "streamed blocks"
        cpu = f" ({c['cpu_seconds']:.0f} s CPU)" if "cpu_seconds" in c else ""
        lines.append(f"| {c['case']} | {c['queries']:,} x {c['gallery']:,} | {c['dim']} | "
                     f"{output} | {c['seconds']:.1f} s{cpu} | {c['peak_rss_gib']:.2f} GiB | "
                     f"{c['mAP_before']:.3f} -> {c['mAP_after']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
