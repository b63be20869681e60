"""Inference speed: images/s of the image embedder (Keras and each exported runtime) and index
build / query latency.

Embeds uint8 images at 256x128 on CPU (or the GPU when the backend has one) with the serving
image model of a re-ID run folder (random weights: speed does not depend on them), first in
Keras on the current backend, then read back from each export format this backend can write
(SavedModel with TensorFlow, ONNX with onnxruntime). Then, when
`valpat_keras.serving.index.PersonIndex` exists, builds an index from random unit features
of 10k and 100k entries and times exact queries (and the faiss graph, when installed).
Prints a table and writes ``OUT/results.json``.

Example::

    KERAS_BACKEND=tensorflow python benchmarks/inference.py --out benchmarks/results/inference
    python benchmarks/inference.py --tiny          # a smoke run: small encoder, few iterations
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from valpat_keras.models import build_image_encoder
from valpat_keras.models.loading import save_task
from valpat_keras.models.preprocessors import ImagePreprocessor
from valpat_keras.run_outputs import environment_info
from valpat_keras.serving import export as serving_export
from valpat_keras.tasks.reid import ReIDModel

QUERIES = 20


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/inference", help="output folder")
    parser.add_argument("--config", default="resnet50", help="image encoder configuration")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=5, help="timed batches per runtime")
    parser.add_argument("--gallery-sizes", default="10000,100000")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke run: tiny encoder at 64x32, 2 batches of 4, 1k/5k gallery")
    args = parser.parse_args()
    args.image_size = (256, 128)
    if args.tiny:
        args.config, args.image_size, args.batch_size, args.iterations = "tiny", (64, 32), 4, 2
        args.gallery_sizes = "1000,5000"
    return args


def make_run(folder: Path, config: str, image_size: tuple[int, int]) -> Path:
    """A re-ID run folder with random weights (a `ReIDModel` task preset)."""
    encoder = build_image_encoder(config, image_size=image_size)
    save_task(ReIDModel(encoder, num_classes=10,
                        preprocessor=ImagePreprocessor.for_encoder(encoder)), folder)
    return folder


def images_per_second(embed, images: np.ndarray, iterations: int) -> float:
    """Images/s of ``embed`` over ``iterations`` batches, after one warm-up batch."""
    embed(images)
    started = time.perf_counter()
    for _ in range(iterations):
        embed(images)
    return iterations * len(images) / (time.perf_counter() - started)


def embedding_speed(run: Path, out: Path, args: argparse.Namespace) -> list[dict]:
    """One row per runtime: Keras, then each format this backend exports."""
    images = np.random.default_rng(0).integers(
        0, 256, (args.batch_size, *args.image_size, 3)).astype(np.uint8)
    source = serving_export.load_export_source(run)
    model = serving_export.serving_models(source, ["image"])["image"]
    rows = [{"runtime": f"keras ({keras.backend.backend()})",
             "images_per_s": images_per_second(lambda x: model.predict_on_batch(x), images,
                                               args.iterations)}]
    runtimes = {"saved_model": "SavedModel (TensorFlow)", "onnx": "ONNX Runtime"}
    for fmt, name in runtimes.items():
        try:
            serving_export.check_format(fmt)
        except ValueError as why:  # InputError: this backend cannot export the format
            rows.append({"runtime": name, "images_per_s": None, "note": str(why)[:120]})
            continue
        manifest = serving_export.export_run(run, out / fmt, fmt, what="image")
        runner = serving_export.load_exported(out / fmt / manifest["models"]["image"]["file"],
                                              fmt)
        rows.append({"runtime": name,
                     "images_per_s": images_per_second(runner, images, args.iterations)})
    return rows


def index_latency(sizes: list[int], dim: int) -> list[dict]:
    """Index build and query latency from random unit features (needs `PersonIndex`)."""
    if importlib.util.find_spec("valpat_keras.serving.index") is None:
        return []
    from valpat_keras.serving.index import PersonIndex, build_faiss_index  # optional part

    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        features = rng.normal(size=(size, dim)).astype(np.float32)
        features /= np.linalg.norm(features, axis=1, keepdims=True)
        manifest = {"spaces": {"image": {"dim": dim, "run_dir": "random"}},
                    "query_kinds": ["image"], "verification": None, "ann": []}
        started = time.perf_counter()
        index = PersonIndex(manifest, [f"{i}.jpg" for i in range(size)], {"image": features})
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        for query in features[:QUERIES]:
            index.query(image=query, k=10)
        row = {"entries": size, "build_s": build_s,
               "exact_query_ms": 1000 * (time.perf_counter() - started) / QUERIES}
        if importlib.util.find_spec("faiss") is not None:
            started = time.perf_counter()
            graph = build_faiss_index(features)
            row["faiss_build_s"] = time.perf_counter() - started
            started = time.perf_counter()
            graph.search(features[:QUERIES], 10)
            row["faiss_query_ms"] = 1000 * (time.perf_counter() - started) / QUERIES
        rows.append(row)
    return rows


def format_table(speed: list[dict], index: list[dict], args: argparse.Namespace) -> str:
    height, width = args.image_size
    lines = [f"embedding, {args.config} at {height}x{width}, batch {args.batch_size}",
             f"{'runtime':<28}{'images/s':>10}"]
    for row in speed:
        value = "n/a" if row["images_per_s"] is None else f"{row['images_per_s']:.1f}"
        lines.append(f"{row['runtime']:<28}{value:>10}  {row.get('note', '')}")
    if index:
        lines.append(f"{'index entries':<16}{'build s':>9}{'query ms':>10}"
                     f"{'faiss build s':>15}{'faiss query ms':>16}")
        for row in index:
            lines.append(f"{row['entries']:<16}{row['build_s']:>9.3f}"
                         f"{row['exact_query_ms']:>10.2f}"
                         f"{row.get('faiss_build_s', float('nan')):>15.2f}"
                         f"{row.get('faiss_query_ms', float('nan')):>16.3f}")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        run = make_run(Path(work) / "run", args.config, args.image_size)
        speed = embedding_speed(run, Path(work) / "exports", args)
        dim = int(serving_export.load_export_source(run).image.outputs[0].shape[-1])
    index = index_latency([int(s) for s in args.gallery_sizes.split(",")], dim)
    print(format_table(speed, index, args))
    results = {"config": args.config, "image_size": list(args.image_size),
               "batch_size": args.batch_size, "iterations": args.iterations,
               "embedding": speed, "index": index, "environment": environment_info()}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
