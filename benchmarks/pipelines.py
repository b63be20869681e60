"""Throughput of the tf.data pipelines (images/s, decode + augment + batch, no model).

Writes person-sized JPEGs (smooth random colour fields with noise, 256x128 like the real
crops) to a temporary folder, builds each pipeline and times full passes after a warm-up
batch. Prints one line per pipeline.

Usage:

```
python benchmarks/pipelines.py [--images 512] [--height 256 --width 128] [--batch 64]
```
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from valpat_keras.data import pipelines
from valpat_keras.data.records import PretrainRecord, ReIDRecord, TextRecord
from valpat_keras.data.tokenizer import CaptionTokenizer

CAPTIONS = ("a woman in a red coat with a black backpack",
            "a man wearing blue jeans and white sneakers",
            "a young person with long hair holding an umbrella")


def write_images(folder: Path, num_images: int, seed: int = 0) -> list[str]:
    """Writes ``num_images`` 256x128 JPEGs that compress like photos; returns their paths."""
    rng = np.random.default_rng(seed)
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


def main() -> None:
    """Builds every pipeline on the temporary images and prints images/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    size, batch = (args.height, args.width), args.batch

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), args.images)
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


if __name__ == "__main__":
    main()
