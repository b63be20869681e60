"""Where a pretraining step spends its time, per Keras backend, with each backend's profiler.

Builds the configuration of benchmarks/pretrain_speed.py (by default batch 32 at 128x64, tiny
ResNet, 4096-key queue, 2-layer text transformer, all three objectives; ``--config resnet50``,
``--image-size``, ``--batch-size`` and ``--last-stride`` as there), runs ``--steps`` steps of
``fit`` under the profiler of ``--backend`` and sums the time per kind of work:

- ``tensorflow``: the TensorFlow profiler's kernel time per (op type, part of the step):
  ``query`` (query encoder and heads forward), ``key`` (momentum branch), ``grad`` (backward),
  ``optimizer``; summed over TensorFlow's compute threads (two on a 2-core machine), so they
  add up to about twice the wall time.
- ``torch``: ``torch.profiler``'s self CPU time per aten op on the Python thread (oneDNN's
  worker threads run inside those ops), and what is left of the wall time, the Python of
  Keras' layers, ops dispatch and ``fit``.
- ``pytorch-loop``: the hand-written PyTorch loop of pretrain_speed.py, with ``torch``'s
  accounting (the reference the Keras rows are compared with).
- ``jax``: ``jax.profiler``'s XLA thunks (fusions, convolutions, reduce-windows, ...) summed
  over XLA's compute threads, and the share of the wall time they leave idle (dispatch,
  the host loop of ``fit``, the transfer of each batch).

For TensorFlow and JAX it also splits the traced time by how many compute threads were
running an op at once (0, 1, 2 on two cores): summed op time says how busy the threads were
on average, this says whether the work ran in parallel.

The profiler itself slows the step a little. Prints a table; ``--out FILE`` also writes it as
JSON (the figures tutorials/benchmarks.md quotes).

```
python benchmarks/profile_pretrain_step.py --backend torch --steps 5 --top 15
python benchmarks/profile_pretrain_step.py --backend jax
```
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import sys
import tempfile
import time

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


def _xspace(logdir: str):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    if not files:
        raise FileNotFoundError(f"No profiler trace (*.xplane.pb) was written under {logdir}")
    space = xplane_pb2.XSpace()
    with open(files[0], "rb") as f:
        space.ParseFromString(f.read())
    return space


def kernel_times(logdir: str, steps: int) -> collections.Counter:
    """TensorFlow: ms per step of kernel time, keyed by (op type, part), from a trace."""
    totals: collections.Counter = collections.Counter()
    for plane in _xspace(logdir).planes:
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


def xla_thunk_times(logdir: str, steps: int) -> collections.Counter:
    """JAX: ms per step of XLA CPU thunks on the compute threads, keyed by thunk kind."""
    totals: collections.Counter = collections.Counter()
    for plane in _xspace(logdir).planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if "XLAEigen" not in line.name:
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if name.startswith("ThunkExecutor"):  # encloses the thunks
                    continue
                kind = re.sub(r"\.\d+$", "", name)
                totals[(kind, "xla")] += event.duration_ps / 1e9 / steps
    return totals


def _busy_intervals(logdir: str, line_match: str, skip: tuple[str, ...]):
    """(start, end) picoseconds during which each compute line (a line whose name has
    ``line_match``) ran an op, nested spans merged so that a thread counts once."""
    for plane in _xspace(logdir).planes:
        if plane.name != "/host:CPU":
            continue
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if line_match not in line.name:
                continue
            spans = sorted(
                (line.timestamp_ns * 1000 + e.offset_ps,
                 line.timestamp_ns * 1000 + e.offset_ps + e.duration_ps)
                for e in line.events
                if not names.get(e.metadata_id, "").startswith(skip))  # enclosing spans
            merged: list[list[int]] = []
            for start, end in spans:
                if merged and start <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], end)
                else:
                    merged.append([start, end])
            yield from (tuple(span) for span in merged)


def thread_concurrency(logdir: str, steps: int, line_match: str,
                       skip: tuple[str, ...]) -> dict[int, float]:
    """ms per step during which 0, 1, 2, ... compute threads ran an op, over the traced span.

    Summed op time says how busy the threads were on average; this says how the work was
    spread: a step whose ops run one at a time on one thread shows as time at 1.
    """
    changes = []
    for start, end in _busy_intervals(logdir, line_match, skip):
        changes += [(start, 1), (end, -1)]
    changes.sort()
    spans: collections.Counter = collections.Counter()
    busy, last = 0, changes[0][0] if changes else 0
    for time_ps, delta in changes:
        spans[busy] += time_ps - last
        busy, last = busy + delta, time_ps
    return {threads: ps / 1e9 / steps for threads, ps in sorted(spans.items()) if ps > 0}


def _setup(args):
    """The benchmark's pretrainer (compiled) and a repeated in-memory batch, warmed up."""
    import tensorflow as tf

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from pretrain_speed import _batch, benchmark_spec, build_benchmark_pretrainer, parse_image_size

    size = parse_image_size(args.image_size) if args.image_size else None
    spec = benchmark_spec(args.config, size, last_stride=args.last_stride)
    model = build_benchmark_pretrainer(spec)
    # As in pretrain_speed.py's default: Keras' "auto" (XLA for JAX; not for TensorFlow on
    # CPU, where oneDNN's convolutions beat XLA's; eager for torch).
    model.compile(jit_compile="auto")
    batch = _batch(np.random.default_rng(0), args.batch_size, tuple(spec["image_size"]))
    data = tf.data.Dataset.from_tensors(batch).repeat()
    model.fit(data, epochs=1, steps_per_epoch=3, verbose=0)  # trace and warm up first
    return model, data


def _timed_fit(model, data, steps: int) -> float:
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
    return (time.perf_counter() - start) / steps * 1000.0


def profile_tensorflow(args) -> tuple[collections.Counter, float, dict]:
    import tensorflow as tf

    model, data = _setup(args)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        wall = _timed_fit(model, data, args.steps)
        tf.profiler.experimental.stop()
        return (kernel_times(logdir, args.steps), wall,
                thread_concurrency(logdir, args.steps, "tf_Compute", ("ExecutorState",)))


def profile_jax(args) -> tuple[collections.Counter, float, dict]:
    import jax

    model, data = _setup(args)
    with tempfile.TemporaryDirectory() as logdir:
        jax.profiler.start_trace(logdir)
        wall = _timed_fit(model, data, args.steps)
        jax.profiler.stop_trace()
        return (xla_thunk_times(logdir, args.steps), wall,
                thread_concurrency(logdir, args.steps, "XLAEigen", ("ThunkExecutor",)))


def _aten_totals(prof, steps: int) -> collections.Counter:
    """Self CPU milliseconds per step of each aten op (and autograd node) in a torch trace."""
    totals: collections.Counter = collections.Counter()
    for event in prof.key_averages():
        if event.key.startswith("aten::") or "Backward" in event.key:
            totals[(event.key, "aten")] += event.self_cpu_time_total / 1000.0 / steps
    return totals


def profile_torch(args) -> tuple[collections.Counter, float, None]:
    from torch.profiler import ProfilerActivity, profile

    model, data = _setup(args)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        wall = _timed_fit(model, data, args.steps)
    return _aten_totals(prof, args.steps), wall, None


def profile_pytorch_loop(args) -> tuple[collections.Counter, float, None]:
    """The hand-written loop of pretrain_speed.py (benchmarks/_torch_reference.py), on CPU."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _torch_reference import make_step
    from pretrain_speed import _batch, benchmark_spec, parse_image_size

    size = parse_image_size(args.image_size) if args.image_size else None
    spec = benchmark_spec(args.config, size, last_stride=args.last_stride)
    step, _ = make_step(spec, torch.device("cpu"), mixed_precision=False,
                        compile_encoders=False)
    rng = np.random.default_rng(0)
    batches = [{k: torch.from_numpy(v) for k, v in
                _batch(rng, args.batch_size, tuple(spec["image_size"])).items()}
               for _ in range(4)]
    for i in range(3):  # warm up, as _setup does for fit
        step(batches[i % 4])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for i in range(args.steps):
            loss = step(batches[i % 4])
        float(loss)
        wall = (time.perf_counter() - start) / args.steps * 1000.0
    return _aten_totals(prof, args.steps), wall, None


def _category(op: str) -> str:
    lowered = op.lower()
    if "conv" in lowered or lowered.startswith("ynn_fusion"):
        # XLA CPU (jaxlib 0.10) runs convolutions, and the dots and element-wise ops it fuses
        # with them, as YNNPACK fusions.
        return "convolutions (JAX: YNNPACK fusions)"
    if "pool" in lowered or "reduce-window" in lowered or "select-and-scatter" in lowered:
        return "pooling"
    if "batch_norm" in lowered or "customgradient" in lowered:
        return "batch norm"
    if lowered in ("aten::mm", "aten::bmm", "aten::addmm") or lowered.startswith("dot"):
        return "matmul"
    return "other ops"


def summarize(totals: collections.Counter, wall_ms: float, backend: str) -> dict:
    """Totals per category, the wall time and what the ops leave of it."""
    total = sum(totals.values())
    categories: collections.Counter = collections.Counter()
    for (op, _), ms in totals.items():
        categories[_category(op)] += ms
    # torch: ops on the Python thread, so the rest of the wall time is Python; TF and JAX:
    # ops summed over the compute threads, so compare with wall x threads.
    threads = 1 if backend in ("torch", "pytorch-loop") else max(1, os.cpu_count() or 1)
    return {"backend": backend, "wall_ms_per_step": wall_ms, "ops_ms_per_step": total,
            "threads_counted": threads,
            "outside_ops_ms_per_step": max(0.0, wall_ms * threads - total) / threads,
            "categories_ms": dict(categories.most_common()),
            "top_ops_ms": [[op, part, ms] for (op, part), ms in totals.most_common(40)]}


def summary_markdown(summary: dict, command: str, top: int = 8) -> str:
    """One backend's profile as Markdown: time per kind of work, then the largest ops."""
    threads = summary["threads_counted"]
    outside = "of Python outside the ops" if threads == 1 else "idle per thread"
    headline = (f"**{summary['backend']}** (`{command}`): {summary['wall_ms_per_step']:.0f} ms "
                f"per step under the profiler; ops {summary['ops_ms_per_step']:.0f} ms summed "
                f"over {threads} thread(s), leaving {summary['outside_ops_ms_per_step']:.0f} ms "
                f"per step {outside}.")
    lines = [headline, "", "| kind of work | ms per step | share of the ops |", "|---|---:|---:|"]
    total = summary["ops_ms_per_step"] or 1.0
    for kind, ms in summary["categories_ms"].items():
        lines.append(f"| {kind} | {ms:.0f} | {100 * ms / total:.0f} % |")
    for part, ms in sorted(summary.get("parts_ms", {}).items(), key=lambda kv: -kv[1]):
        lines.append(f"| part of the step: {part} | {ms:.0f} | {100 * ms / total:.0f} % |")
    busy = summary.get("busy_threads_ms")
    if busy:
        traced = sum(busy.values()) or 1.0
        lines += ["", "| compute threads running an op | ms per step | share of the traced time |",
                  "|---|---:|---:|"]
        for threads, ms in busy.items():
            lines.append(f"| {threads} | {ms:.0f} | {100 * ms / traced:.0f} % |")
    lines += ["", "| largest ops | part | ms per step |", "|---|---|---:|"]
    for op, part, ms in summary["top_ops_ms"][:top]:
        lines.append(f"| `{op}` | {part} | {ms:.1f} |")
    env = summary["environment"]
    lines += ["", f"{env['cpu']}, {env['cores']} cores; taken {env['date']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("tensorflow", "torch", "jax", "pytorch-loop"),
                        default="tensorflow",
                        help="a Keras backend, or pytorch-loop: the hand-written reference")
    parser.add_argument("--steps", type=int, default=10, help="profiled steps (10)")
    parser.add_argument("--top", type=int, default=25, help="rows to print (25)")
    parser.add_argument("--config", choices=("tiny", "resnet50"), default="tiny",
                        help="pretraining config, as in pretrain_speed.py (tiny)")
    parser.add_argument("--image-size", default=None, metavar="HxW",
                        help="e.g. 256x128 (default: the config's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--last-stride", type=int, choices=(1, 2), default=1)
    parser.add_argument("--out", default=None, metavar="FILE", help="also write JSON here")
    parser.add_argument("--publish", default=None, metavar="MD",
                        help="also write a Markdown summary here (for the docs)")
    args = parser.parse_args(argv)
    # Before Keras is imported; the loop imports Keras only for the environment record.
    os.environ["KERAS_BACKEND"] = "torch" if args.backend == "pytorch-loop" else args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    run = {"tensorflow": profile_tensorflow, "torch": profile_torch, "jax": profile_jax,
           "pytorch-loop": profile_pytorch_loop}
    totals, wall, concurrency = run[args.backend](args)
    summary = summarize(totals, wall, args.backend)
    if concurrency:
        summary["busy_threads_ms"] = concurrency
    from valpat_keras.run_outputs import environment_info

    summary["environment"] = environment_info()
    print(f"{args.backend}: {wall:.0f} ms per step under the profiler; ops "
          f"{summary['ops_ms_per_step']:.0f} ms per step summed over "
          f"{summary['threads_counted']} thread(s); outside the ops "
          f"{summary['outside_ops_ms_per_step']:.0f} ms per step")
    print("by kind: " + ", ".join(f"{k} {v:.0f} ms" for k, v in summary["categories_ms"].items()))
    if concurrency:
        print("traced time by compute threads running an op: " + ", ".join(
            f"{threads} busy {ms:.0f} ms" for threads, ms in concurrency.items()))
    if args.backend == "tensorflow":
        by_part = collections.Counter()
        for (_, part), ms in totals.items():
            by_part[part] += ms
        summary["parts_ms"] = dict(by_part)
        print("by part: " + ", ".join(f"{p} {ms:.0f} ms" for p, ms in by_part.most_common()))
    print(f"{'op':<40} {'part':<10} {'ms/step':>8} {'share':>6}")
    total = summary["ops_ms_per_step"] or 1.0
    for (op, part), ms in totals.most_common(args.top):
        print(f"{op[:40]:<40} {part:<10} {ms:>8.1f} {100 * ms / total:>5.1f}%")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"settings": vars(args), **summary}, f, indent=2)
    if args.publish:
        command = "python benchmarks/profile_pretrain_step.py " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:]) if a != args.publish
            and a != "--publish")
        os.makedirs(os.path.dirname(os.path.abspath(args.publish)), exist_ok=True)
        with open(args.publish, "w") as f:
            f.write(summary_markdown(summary, command.strip()))
    return summary


if __name__ == "__main__":
    main()
