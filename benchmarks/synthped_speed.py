"""Rendering speed of SynthPed (images/s on one core) at 128x64 and 256x128.

Renders images in memory (identity, camera, shot, pixels, labels and captions; no JPEG
writing) and prints images/s per size. The target is >= 200 images/s at both sizes.

Usage:

```
python benchmarks/synthped_speed.py [--images 1000]
```
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from valpat_keras.data.synthped import default_cameras, render_sample, sample_identity


def images_per_second(height: int, width: int, num_images: int, seed: int = 0) -> float:
    """Renders ``num_images`` images of 50 identities; returns images per second."""
    rng = np.random.default_rng(seed)
    cameras = default_cameras(seed)
    people = [sample_identity(rng, 0.5, uid=i) for i in range(50)]
    render_sample(people[0], cameras[0], rng, height, width)  # warm-up (noise bank, caches)
    start = time.perf_counter()
    for i in range(num_images):
        render_sample(people[i % len(people)], cameras[i % len(cameras)], rng, height, width)
    return num_images / (time.perf_counter() - start)


def main() -> None:
    """Prints images/s for both sizes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images per size")
    args = parser.parse_args()
    for height, width in ((128, 64), (256, 128)):
        rate = images_per_second(height, width, args.images)
        print(f"SynthPed {height}x{width}: {rate:7.1f} images/s (target >= 200)")


if __name__ == "__main__":
    main()
