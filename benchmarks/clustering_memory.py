"""Peak memory and time of Cluster Contrast's clustering step at MSMT17 size and beyond.

What `pseudo_label_epoch` runs once per round: the k-reciprocal Jaccard distance of all
training features (k1=30, k2=6) and DBSCAN on it (eps 0.6, min_samples 4; the automatic
radius is computed too). The sparse path (`jaccard_neighbour_graph`, the default) stores only
the pairs closer than 1; the dense reference (`jaccard_distance` + `cluster_pseudo_labels_dense`)
holds ``N x N`` matrices and runs only at the sizes given to ``--dense-sizes``, where the two
label vectors are compared.

Features are synthetic and shaped like a re-ID encoder's on MSMT17's training set: 1,041
identities (about 31 images each at 32,621 images), 15 cameras, an identity centre plus a
camera shift plus noise, L2-normalised, ``--dim`` dimensions (default 256, as the re-ranking
and evaluation benchmarks; 2048 is ResNet-50's embedding, and its distance pass is 8 times
slower while the clustering memory beyond the features themselves stays the same).
The noise is set so that DBSCAN's clusters are imperfect (ARI printed), as after the first
rounds of real training. Each case runs in its own subprocess, so its peak RSS
(``ru_maxrss``) is its own; the tracemalloc peak counts the allocations of the clustering
step alone (NumPy and SciPy buffers included).

Writes ``results.json`` and ``clustering_memory.md`` into ``--out``.

Usage:

```
python benchmarks/clustering_memory.py [--sizes 8000,32621,100000] [--dense-sizes 8000]
    [--eps 0.6,auto] [--dim 256] [--merge] [--publish tutorials/generated/clustering_memory.md]
```
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
import tracemalloc
from pathlib import Path

import numpy as np

from valpat_keras.evaluation.reranking import jaccard_distance
from valpat_keras.run_outputs import write_json, write_report
from valpat_keras.tasks.clustering import (
    cluster_pseudo_labels,
    cluster_pseudo_labels_dense,
    clustering_stats,
    eps_from_distances,
    jaccard_dbscan_graph,
)

#: MSMT17's training set: images, identities, cameras.
MSMT17_TRAIN = (32621, 1041, 15)

#: Spread of the identity centres and camera shifts relative to the per-image noise.
CENTRE_SPREAD, CAMERA_SPREAD = 0.8, 0.5


def synthetic_train_features(num_images: int, dim: int, seed: int = 0
                             ) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised float32 features and ids, MSMT17's identity and camera counts scaled.

    Identities keep MSMT17's ~31 images each (more identities at larger ``num_images``).
    """
    rng = np.random.default_rng(seed)
    images, ids_msmt, cams = MSMT17_TRAIN
    num_ids = max(2, round(num_images * ids_msmt / images))
    ids = rng.permutation(np.arange(num_images) % num_ids)
    camids = rng.integers(0, cams, num_images)
    # Spreads shrinking as dim^(1/4) keep the difficulty the same at any dim (as in
    # eval_metrics.py); the camera shift makes same-camera impostors, as in real data.
    scale = (64 / dim) ** 0.25
    centres = CENTRE_SPREAD * scale * rng.normal(size=(num_ids, dim)).astype(np.float32)
    cam_shift = CAMERA_SPREAD * scale * rng.normal(size=(cams, dim)).astype(np.float32)
    features = centres[ids] + cam_shift[camids]
    features += rng.normal(size=(num_images, dim)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return features, ids


def run_case(num_images: int, dim: int, dense: bool, eps: str, labels_out: Path) -> dict:
    """Clusters one synthetic set in this process; returns its figures, saves its labels."""
    features, ids = synthetic_train_features(num_images, dim)
    eps = eps if eps == "auto" else float(eps)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    tracemalloc.start()
    start = time.perf_counter()
    if dense:  # `jaccard_pseudo_labels_dense`, with the matrix size recorded
        distance = jaccard_distance(features, k1=30, k2=6)
        radius = eps_from_distances(distance) if eps == "auto" else eps
        labels, stored = cluster_pseudo_labels_dense(distance, radius, 4), distance.size
    else:  # `jaccard_pseudo_labels`, with the graph size recorded
        graph, radius = jaccard_dbscan_graph(features, eps, k1=30, k2=6)
        labels, stored = cluster_pseudo_labels(graph, radius, 4), graph.nnz
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # CPU seconds of the whole process (features included): robust to a shared machine.
    cpu_seconds = usage.ru_utime + usage.ru_stime
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.save(labels_out, labels)
    stats = clustering_stats(labels, ids)
    return {"images": num_images, "dim": dim, "path": "dense" if dense else "sparse",
            "eps": eps, "radius": radius, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "traced_peak_gib": traced_peak / 2**30,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "rss_before_gib": rss_before, "stored_per_image": stored / num_images,
            **stats.as_dict()}


def _run_in_subprocess(num_images: int, dim: int, dense: bool, eps: str, out: Path) -> dict:
    labels = out / f"labels_{'dense' if dense else 'sparse'}_{num_images}_{eps}.npy"
    cmd = [sys.executable, __file__, "--run-one", str(num_images), "--dim", str(dim),
           "--eps", eps, "--labels-out", str(labels)] + (["--dense"] if dense else [])
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(text.strip().splitlines()[-1])


def markdown_table(results: dict) -> str:
    """The Markdown table of `results` (the ``results.json`` payload)."""
    lines = [(f"Synthetic MSMT17-shaped features, k1=30, k2=6, min_samples 4; "
              f"{results['machine']}."), "",
             ("| images | dim | path | eps | time | tracemalloc peak | peak RSS | stored pairs "
              "/ image | clusters | outliers | ARI | labels equal dense |"),
             "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results["cases"]:
        equal = {True: "yes", False: "**no**", None: ""}[r.get("labels_equal_dense")]
        lines.append(
            f"| {r['images']:,} | {r['dim']} | {r['path']} | {_eps_text(r)} | "
            f"{r['seconds']:.0f} s{_cpu_text(r)} | "
            f"{r['traced_peak_gib']:.2f} GiB | {r['peak_rss_gib']:.2f} GiB | "
            f"{r['stored_per_image']:,.0f} | {r['num_clusters']:,} | {r['num_outliers']:,} | "
            f"{r['ari']:.3f} | {equal} |")
    return "\n".join(lines) + "\n"


def _cpu_text(case: dict) -> str:
    return f" ({case['cpu_seconds']:.0f} s CPU)" if "cpu_seconds" in case else ""


def _eps_text(case: dict) -> str:
    return f"auto ({case['radius']:.4f})" if case["eps"] == "auto" else f"{case['radius']:g}"


def main() -> None:
    """Runs every case in its own subprocess, compares labels, writes the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8000,32621,100000", help="images per sparse case")
    parser.add_argument("--dense-sizes", default="8000",
                        help="sizes also run with the dense reference ('' for none)")
    parser.add_argument("--dim", type=int, default=256, help="feature dimension")
    parser.add_argument("--eps", default="0.6,auto", help="DBSCAN radii, comma-separated")
    parser.add_argument("--out", default="runs/clustering_memory", help="output folder")
    parser.add_argument("--publish", default=None, metavar="MD",
                        help="also write the table to this Markdown file (for the docs)")
    parser.add_argument("--merge", action="store_true",
                        help="append to the cases of OUT/results.json (runs of other dims)")
    parser.add_argument("--table-only", action="store_true",
                        help="only write the table of OUT/results.json (and --publish)")
    parser.add_argument("--run-one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dense", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--labels-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one is not None:
        print(json.dumps(run_case(args.run_one, args.dim, args.dense, args.eps,
                                  Path(args.labels_out))))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.table_only:  # re-render the table of a finished run
        write_report(markdown_table(json.loads((out / "results.json").read_text())),
                     out / "clustering_memory.md", args.publish)
        return
    dense_sizes = {int(v) for v in args.dense_sizes.split(",") if v}
    cases = []
    for size in (int(v) for v in args.sizes.split(",")):
        for eps in args.eps.split(","):
            for dense in ((True, False) if size in dense_sizes else (False,)):
                case = _run_in_subprocess(size, args.dim, dense, eps, out)
                if not dense and size in dense_sizes:
                    case["labels_equal_dense"] = bool(np.array_equal(
                        *(np.load(out / f"labels_{path}_{size}_{eps}.npy")
                          for path in ("dense", "sparse"))))
                cases.append(case)
                print(json.dumps(case), flush=True)
    if args.merge and (out / "results.json").exists():  # add to an earlier run's cases
        cases = json.loads((out / "results.json").read_text())["cases"] + cases
    machine = f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores"
    results = {"machine": machine, "cases": cases}
    write_json(out / "results.json", results)
    markdown = markdown_table(results)
    write_report(markdown, out / "clustering_memory.md", args.publish)
    print(markdown)


if __name__ == "__main__":
    main()
