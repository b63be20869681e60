"""Where a TensorFlow pretraining step spends its time: kernel time per op type and part.

Builds the configuration of benchmarks/pretrain_speed.py (by default batch 32 at 128x64, tiny
ResNet, 4096-key queue, 2-layer text transformer, all three objectives; ``--config resnet50``,
``--image-size``, ``--batch-size`` and ``--last-stride`` as there), traces ``--steps`` steps
of ``fit`` with the TensorFlow profiler and sums the kernel time of every op by (op type,
part of the step): ``query`` (query encoder and heads forward), ``key`` (momentum encoder
branch), ``grad`` (backward pass), ``optimizer``. Figures are milliseconds of kernel time
per step summed over TensorFlow's threads (two compute threads on a 2-core machine), so
they add up to about twice the wall time; the profiler itself slows the step a little.

```
KERAS_BACKEND=tensorflow python benchmarks/profile_pretrain_step.py
python benchmarks/profile_pretrain_step.py --steps 5 --top 15
```
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


def _part(node_name: str) -> str:
    lowered = node_name.lower()
    if "gradient" in lowered:
        return "grad"
    if "adam" in lowered or "optimizer" in lowered:
        return "optimizer"
    if "key_" in lowered or "momentum" in lowered:
        return "key"
    return "query"


def kernel_times(logdir: str, steps: int) -> collections.Counter:
    """Milliseconds per step of kernel time, keyed by (op type, part), from a profiler trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    if not files:
        raise FileNotFoundError(f"No profiler trace (*.xplane.pb) was written under {logdir}")
    space = xplane_pb2.XSpace()
    with open(files[0], "rb") as f:
        space.ParseFromString(f.read())
    totals: collections.Counter = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "")
                node, _, op_type = name.rpartition(":")
                # Executor bookkeeping spans enclose the kernels: count kernels only.
                if not node or name.startswith("ExecutorState"):
                    continue
                totals[(op_type, _part(node))] += event.duration_ps / 1e9 / steps
    return totals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="traced steps (10)")
    parser.add_argument("--top", type=int, default=25, help="rows to print (25)")
    parser.add_argument("--config", choices=("tiny", "resnet50"), default="tiny",
                        help="pretraining config, as in pretrain_speed.py (tiny)")
    parser.add_argument("--image-size", default=None, metavar="HxW",
                        help="e.g. 256x128 (default: the config's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--last-stride", type=int, choices=(1, 2), default=1)
    args = parser.parse_args(argv)

    import tensorflow as tf

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from pretrain_speed import _batch, benchmark_spec, build_benchmark_pretrainer, parse_image_size

    size = parse_image_size(args.image_size) if args.image_size else None
    spec = benchmark_spec(args.config, size, last_stride=args.last_stride)
    model = build_benchmark_pretrainer(spec)
    model.compile(jit_compile=False)
    batch = _batch(np.random.default_rng(0), args.batch_size, tuple(spec["image_size"]))
    data = tf.data.Dataset.from_tensors(batch).repeat()
    model.fit(data, epochs=1, steps_per_epoch=3, verbose=0)  # trace and warm up first
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        model.fit(data, epochs=1, steps_per_epoch=args.steps, verbose=0)
        tf.profiler.experimental.stop()
        totals = kernel_times(logdir, args.steps)
    total = sum(totals.values())
    by_part = collections.Counter()
    for (_, part), ms in totals.items():
        by_part[part] += ms
    print(f"kernel time per step, summed over threads: {total:.0f} ms")
    print("by part: " + ", ".join(f"{p} {ms:.0f} ms" for p, ms in by_part.most_common()))
    conv = sum(ms for (op, _), ms in totals.items() if "Conv2D" in op)
    print(f"convolutions (forward and backward): {conv:.0f} ms ({100 * conv / total:.0f}%)")
    print(f"{'op type':<34} {'part':<10} {'ms/step':>8} {'share':>6}")
    for (op_type, part), ms in totals.most_common(args.top):
        print(f"{op_type:<34} {part:<10} {ms:>8.1f} {100 * ms / total:>5.1f}%")


if __name__ == "__main__":
    main()
