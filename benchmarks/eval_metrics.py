"""Speed and peak memory of `evaluate_reid` at Market-1501 and MSMT17 size.

Random features with identities and cameras shaped like the real test sets (an identity
centre plus noise, so rankings look like a trained model's), one subprocess per case so
that each peak RSS (``ru_maxrss``) is its own. Prints, per case: seconds for
`evaluate_reid` on a precomputed distance matrix (the timed part), seconds for
`evaluate_reid_from_features` (distances included, never holding Q x G), and peak RSS
with the size of the Q x G matrix for comparison. Goals: Market well under a second,
MSMT17 in seconds with a peak far below 10.75 GiB.

Usage:

```
python benchmarks/eval_metrics.py [--case market|msmt|all] [--scale 1.0] [--dim 256]
```
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

# (queries, gallery, test identities, cameras, gallery distractors with pid 0)
CASES = {
    "market": (3368, 15913, 750, 6, 2793),
    "msmt": (11659, 82161, 3060, 15, 0),
}


def synthetic_reid(num_query: int, num_gallery: int, num_ids: int, num_cams: int,
                   num_distractors: int, dim: int, seed: int = 0):
    """Query/gallery features, pids and camids with every query id in the gallery."""
    rng = np.random.default_rng(seed)
    # Centre spread shrinks as dim^(1/4) so the difficulty (mAP) does not grow with dim.
    centres = rng.normal(size=(num_ids + 1, dim)).astype(np.float32) * (64 / dim) ** 0.25
    q_pids = np.arange(num_query) % num_ids + 1
    g_pids = np.concatenate([np.arange(num_gallery - num_distractors) % num_ids + 1,
                             np.zeros(num_distractors, dtype=np.int64)])
    q_camids = rng.integers(0, num_cams, num_query)
    g_camids = rng.integers(0, num_cams, num_gallery)
    noise = 1.2  # same-id pairs mostly closer than others, with realistic confusions
    qf = centres[q_pids] + noise * rng.normal(size=(num_query, dim)).astype(np.float32)
    gf = centres[g_pids] + noise * rng.normal(size=(num_gallery, dim)).astype(np.float32)
    gf[g_pids == 0] = rng.normal(size=(num_distractors, dim)) * 1.5
    return qf, gf, q_pids, g_pids, q_camids, g_camids


def run_case(case: str, scale: float, dim: int) -> dict:
    """Runs one case in this process and returns its figures."""
    from valpat_keras.evaluation import (
        evaluate_reid,
        evaluate_reid_from_features,
        pairwise_distance,
    )

    n_q, n_g, n_ids, n_cams, n_dis = CASES[case]
    n_q, n_g, n_dis = (max(1, int(v * scale)) for v in (n_q, n_g, n_dis))
    n_ids = max(2, min(n_ids, n_q, n_g - n_dis))
    data = synthetic_reid(n_q, n_g, n_ids, n_cams, n_dis, dim)
    qf, gf, ids = data[0], data[1], data[2:]
    start = time.perf_counter()
    res_f = evaluate_reid_from_features(qf, gf, *ids, metric="cosine",
                                        compute_dtype=np.float32)
    features_s = time.perf_counter() - start
    rss_features = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    distmat = pairwise_distance(qf, gf, "cosine", compute_dtype=np.float32)
    start = time.perf_counter()
    res = evaluate_reid(distmat, *ids)
    distmat_s = time.perf_counter() - start
    assert abs(res["mAP"] - res_f["mAP"]) < 1e-4
    return {"case": case, "queries": n_q, "gallery": n_g, "evaluate_reid_s": distmat_s,
            "from_features_s": features_s, "peak_rss_from_features_gib": rss_features,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "distmat_gib": distmat.nbytes / 2**30, "mAP": res["mAP"], "rank1": res["rank1"]}


def main() -> None:
    """Runs each case in a fresh subprocess and prints its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the real sizes")
    parser.add_argument("--dim", type=int, default=256, help="feature dimension")
    parser.add_argument("--run-one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        print(json.dumps(run_case(args.case, args.scale, args.dim)))
        return
    for case in CASES if args.case == "all" else [args.case]:
        out = subprocess.run([sys.executable, __file__, "--run-one", "--case", case,
                              "--scale", str(args.scale), "--dim", str(args.dim)],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{case:<7} {r['queries']:>6} x {r['gallery']:<6} evaluate_reid "
              f"{r['evaluate_reid_s']:7.3f} s | from features (cosine, dim {args.dim}) "
              f"{r['from_features_s']:7.2f} s, peak RSS {r['peak_rss_from_features_gib']:.2f} GiB"
              f" | peak RSS with the Q x G matrix ({r['distmat_gib']:.2f} GiB) "
              f"{r['peak_rss_gib']:.2f} GiB | mAP {r['mAP']:.3f} R1 {r['rank1']:.3f}")


if __name__ == "__main__":
    main()
