"""Throughput of the tf.data pipelines (images/s, decode + augment + batch, no model).

Writes person-sized JPEGs (smooth random colour fields with noise, 256x128 like the real
crops) to a temporary folder, builds each pipeline and times full passes after a warm-up
batch. Prints one line per pipeline.

Then compares the pretraining input read from the three storage layouts, side by side: the
image folder (one file per read), TFRecord shards (``valpat pack``, parallel interleave) and a
LUPerson LMDB tree (``lmdb`` + ``keys.pkl``), each decoded and augmented (two ``reid`` views)
with the tf.data thread pool limited to ``--cores`` cores: images/s per core, and how many
cores keep one GPU fed at ``--gpu-steps-per-second`` steps of ``--gpu-batch`` images. The
table and ``results.json`` (with the machine and library versions) go to ``--out``.

The default GPU rate, 5 steps/s of 256 images (1,280 images/s), is an estimate, not a
measurement of this project's model: NVIDIA's DeepLearningExamples report about 2,500 images/s
for ResNet-50 v1.5 mixed-precision training on one A100 at 224x224; 256x128 crops have 0.65 of
those pixels (about 3,800 images/s), and a VAL-PAT step runs the query encoder on two views
plus the momentum encoder (about 3x the work per image), so about 1,280 images/s. Pass the
rate your GPU measures (``benchmarks/pretrain_speed.py`` on it).

Usage:

```
python benchmarks/pipelines.py [--images 512] [--height 256 --width 128] [--batch 64] \
    [--cores 1] [--gpu-steps-per-second 5 --gpu-batch 256] [--out benchmark_outputs/pipelines]
```
"""

from __future__ import annotations

import argparse
import json
import pickle
import tempfile
import time
from pathlib import Path

import lmdb
import numpy as np
import tensorflow as tf
from PIL import Image

from valpat_keras import datasets
from valpat_keras.data import pipelines, shards
from valpat_keras.data.records import PretrainRecord, ReIDRecord, TextRecord
from valpat_keras.data.tokenizer import CaptionTokenizer
from valpat_keras.run_outputs import environment_info

CAPTIONS = ("a woman in a red coat with a black backpack",
            "a man wearing blue jeans and white sneakers",
            "a young person with long hair holding an umbrella")


def write_images(folder: Path, num_images: int, seed: int = 0) -> list[str]:
    """Writes ``num_images`` 256x128 JPEGs that compress like photos; returns their paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(num_images):
        coarse = rng.integers(0, 256, (8, 4, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((128, 256), Image.BILINEAR))
        noisy = np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i:06d}.jpg"
        Image.fromarray(noisy).save(path, quality=90)
        paths.append(str(path))
    return paths


def images_per_second(dataset: tf.data.Dataset, images_of) -> float:
    """Times one full pass after a warm-up batch (graph tracing, file cache)."""
    next(iter(dataset))
    start = time.perf_counter()
    count = sum(images_of(batch) for batch in dataset)
    return count / (time.perf_counter() - start)


def write_lmdb_tree(root: Path, paths: list[str]) -> Path:
    """The images as a LUPerson LMDB tree: ``root/lmdb`` (key -> JPEG bytes), ``keys.pkl``."""
    (root / "lmdb").mkdir(parents=True)
    env = lmdb.open(str(root / "lmdb"), map_size=1 << 34)
    with env.begin(write=True) as txn:
        for path in paths:
            txn.put(Path(path).stem.encode(), Path(path).read_bytes())
    env.close()
    (root / "keys.pkl").write_bytes(pickle.dumps([Path(p).stem for p in paths]))
    return root


def limited(dataset: tf.data.Dataset, cores: int) -> tf.data.Dataset:
    """``dataset`` on a private tf.data thread pool of ``cores`` threads."""
    options = tf.data.Options()
    options.threading.private_threadpool_size = cores
    options.threading.max_intra_op_parallelism = 1
    return dataset.with_options(options)


def storage_rows(folder: Path, size: tuple[int, int], batch: int, cores: int,
                 gpu_images_per_second: float) -> list[dict]:
    """Images/s per core and cores per GPU for the folder, shard and LMDB layouts."""
    source = datasets.load("image_folder", str(folder / "images"))
    shards.pack(source, folder / "shards", num_shards=8)
    lup = datasets.load("luperson_lmdb", str(write_lmdb_tree(folder / "lup", [
        r.path for r in source.records])))
    settings = {"image_size": size, "batch_size": batch, "augment": "reid", "seed": 0}
    readers = {
        "folder (one file per image)": pipelines.pretrain_dataset(source.records, **settings),
        "TFRecord shards (interleave)": shards.shard_pretrain_dataset(
            datasets.load("shards", str(folder / "shards")), **settings),
        "LMDB (keys.pkl)": pipelines.pretrain_dataset(lup.records, **settings,
                                                      image_source=lup.image_source),
    }
    rows = []
    for name, dataset in readers.items():
        rate = images_per_second(limited(dataset, cores), lambda b: b["view1"].shape[0])
        per_core = rate / cores
        rows.append({"source": name, "images_per_second": round(rate, 1),
                     "images_per_second_per_core": round(per_core, 1),
                     "cores_per_gpu": round(gpu_images_per_second / per_core, 1)})
    return rows


def storage_table(rows: list[dict], cores: int, gpu: str) -> str:
    """The side-by-side Markdown table of `storage_rows`."""
    lines = [f"| source | images/s ({cores} core(s)) | images/s per core | cores for {gpu} |",
             "| --- | ---: | ---: | ---: |"]
    lines += [f"| {r['source']} | {r['images_per_second']} | "
              f"{r['images_per_second_per_core']} | {r['cores_per_gpu']} |" for r in rows]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    """The command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--cores", type=int, default=1,
                        help="tf.data threads for the storage comparison (per-core figures)")
    parser.add_argument("--gpu-steps-per-second", type=float, default=5.0,
                        help="GPU pretraining steps/s to feed (default 5: an estimate, see "
                             "the module docstring)")
    parser.add_argument("--gpu-batch", type=int, default=256, help="images per GPU step")
    parser.add_argument("--out", default="benchmark_outputs/pipelines",
                        help="folder for table.md and results.json")
    return parser.parse_args()


def main() -> None:
    """Builds every pipeline on the temporary images and prints images/s."""
    args = parse_args()
    size, batch = (args.height, args.width), args.batch

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp) / "images", args.images)
        captions = [(CAPTIONS[i % 3], CAPTIONS[(i + 1) % 3]) for i in range(len(paths))]
        tokenizer = CaptionTokenizer.from_captions(list(CAPTIONS) * 10, vocabulary_size=500)
        pretrain = [PretrainRecord(p, c, np.zeros(26, np.int8)) for p, c in zip(paths, captions)]
        reid = [ReIDRecord(p, pid=i // 8, camid=i % 6) for i, p in enumerate(paths)]
        text = [TextRecord(p, pid=i // 4, captions=c) for i, (p, c) in
                enumerate(zip(paths, captions))]
        labels = np.zeros((len(paths), 26), np.float32)
        p = max(2, min(16, len(paths) // 32))
        reid_dataset, _ = pipelines.reid_train_dataset(reid, size, p=p, k=4)

        runs = [
            ("image_dataset (decode only)", pipelines.image_dataset(paths, size, batch),
             lambda b: b.shape[0]),
            ("labeled_image_dataset (training)",
             pipelines.labeled_image_dataset(paths, labels, size, batch, training=True),
             lambda b: b[0].shape[0]),
            ("reid_train_dataset (BoT augment)", reid_dataset, lambda b: b[0].shape[0]),
            ("text_image_dataset (+ tokenizer)",
             pipelines.text_image_dataset(text, tokenizer, size, batch),
             lambda b: b["images"].shape[0]),
            ("pretrain_dataset (2 SSL views)",
             pipelines.pretrain_dataset(pretrain, size, batch, tokenizer=tokenizer),
             lambda b: b["view1"].shape[0]),
        ]
        print(f"{len(paths)} JPEGs at {size[0]}x{size[1]}, batch {batch}")
        for name, dataset, images_of in runs:
            print(f"  {name:<36} {images_per_second(dataset, images_of):8.1f} images/s")
        gpu_rate = args.gpu_steps_per_second * args.gpu_batch
        rows = storage_rows(Path(tmp), size, batch, args.cores, gpu_rate)
    gpu = f"{args.gpu_steps_per_second:g} steps/s x {args.gpu_batch}"
    table = storage_table(rows, args.cores, gpu)
    print(f"\nPretraining input by storage (decode + 2 reid views, {size[0]}x{size[1]}):\n"
          f"{table}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps({
        "machine": environment_info(), "images": args.images, "image_size": list(size),
        "batch": batch, "cores": args.cores, "gpu_steps_per_second": args.gpu_steps_per_second,
        "gpu_batch": args.gpu_batch, "gpu_images_per_second": gpu_rate, "rows": rows},
        indent=1) + "\n")
    print(f"Wrote {out / 'table.md'} and {out / 'results.json'}")


if __name__ == "__main__":
    main()
