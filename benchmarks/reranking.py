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
```
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

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
    result = {"case": case, "queries": n_q, "gallery": n_g, "seconds": seconds,
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


if __name__ == "__main__":
    main()
