"""Pretraining speed of `ValPatPretrainer.fit` per Keras backend, next to plain PyTorch.

Each measurement runs in its own subprocess (one backend per process). ``--config tiny`` (the
default): batch 32 at 128x64, the tiny image encoder (ResNet basic blocks 64/128/256, one per
stage, GeM), a 4096-key MoCo queue with a momentum encoder, a 2-layer text transformer (width
128) and a 26-attribute head, all three objectives on. ``--config resnet50``: the paper's
encoders (`PRETRAIN_CONFIGS`): the keras-hub ResNet-50 (bottleneck blocks 3/4/6/3), the base
text tower (6 layers, width 512), 256-d embeddings, a 2048-wide ssl MLP and a 65,536-key queue
(``--queue-size`` to change it). ``--last-stride`` sets the last ResNet stage (1: BoT's, the
library default; 2: ImageNet's). Data are random arrays already in memory, so the figures
are the training step, not the input pipeline (see benchmarks/pipelines.py).

The PyTorch reference (benchmarks/_torch_reference.py) is a hand-written training loop of the
same model (same layers, losses, EMA, queue and AdamW), written as for a GPU: channels_last,
fused AdamW, ``torch._foreach`` EMA, no host sync inside the timed steps; ``--torch-compile``
adds (``both``) or uses (``yes``) ``torch.compile`` of its encoders.

``--device gpu`` checks that each backend sees a GPU (a clear error otherwise) and keeps the
default ``--jit-compile auto`` (XLA for TensorFlow and JAX; Keras does not jit the torch
backend); ``--mixed-precision`` trains under ``mixed_bfloat16`` on every Keras backend and
under bf16 autocast in the PyTorch loop. Keras rows sync with the device only at the first and
last timed step, so asynchronous dispatch is not serialised.

Prints steps/s, images/s and peak resident memory per backend and writes them, with the
settings and the card's name, to ``OUT/results.json``. Each row is the median of
``--repeats`` fresh processes, run round robin: on a small shared CPU the same configuration
varies by 5-10% from one process and minute to the next, more than some of the differences
measured.

```
python benchmarks/pretrain_speed.py                  # all backends, 3 x 20 timed steps
python benchmarks/pretrain_speed.py --steps 2 --warmup 1 --repeats 1 --backends jax,torch
python benchmarks/pretrain_speed.py --config resnet50 --image-size 256x128 --mixed-precision \
    --device gpu                                     # the GPU benchmark, a few minutes
```
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from valpat_keras.tasks.pretrain_config import PRETRAIN_CONFIGS

VOCAB, SEQ_LEN, NUM_ATTRIBUTES = 2000, 32, 26
#: The tiny config's image size before ``--image-size`` existed (the rows the docs quote).
IMAGE_SIZE = (128, 64)
GPU_COMMAND = ("python benchmarks/pretrain_speed.py --config resnet50 --image-size 256x128 "
               "--mixed-precision --device gpu")


def parse_image_size(text: str) -> tuple[int, int]:
    """``"256x128"`` -> (256, 128); argparse reports anything else as a bad option value."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 256x128, got {text!r}")
    if height <= 0 or width <= 0:
        raise argparse.ArgumentTypeError(f"image size must be positive, got {text!r}")
    return height, width


def benchmark_spec(config: str = "tiny", image_size: tuple[int, int] | None = None,
                   queue_size: int | None = None, last_stride: int = 1) -> dict:
    """Every size of the benchmarked model, from the library's named configs.

    Both the Keras model and the PyTorch reference are built from it, so they stay the same
    architecture when a config changes.
    """
    from valpat_keras.models.image_encoder import IMAGE_ENCODER_CONFIGS  # imports Keras
    from valpat_keras.models.text_encoder import TEXT_ENCODER_CONFIGS

    preset = PRETRAIN_CONFIGS[config]
    image = IMAGE_ENCODER_CONFIGS[preset["image"]]
    text = TEXT_ENCODER_CONFIGS[preset["text"]]
    return {
        "config": config, "image": preset["image"], "text": preset["text"],
        "image_size": list(image_size or preset["image_size"]),
        "queue_size": int(queue_size if queue_size is not None else preset["queue_size"]),
        "last_stride": int(last_stride), "filters": list(image["stackwise_num_filters"]),
        "blocks": list(image["stackwise_num_blocks"]), "block_type": image["block_type"],
        "text_width": text["hidden_dim"], "text_layers": text["num_layers"],
        "text_heads": text["num_heads"], "text_intermediate": text["intermediate_dim"],
        "vocabulary": VOCAB, "sequence_length": SEQ_LEN, "num_attributes": NUM_ATTRIBUTES,
        "embedding_dim": preset["embedding_dim"], "ssl_dim": preset["ssl_dim"],
        "ssl_hidden_dim": preset["ssl_hidden_dim"],
    }


def _batch(rng: np.random.Generator, batch_size: int,
           image_size: tuple[int, int] = IMAGE_SIZE) -> dict:
    images = rng.random((batch_size, *image_size, 3), dtype=np.float32)
    return {"view1": images, "view2": images[:, :, ::-1].copy(),
            "token_ids": rng.integers(5, VOCAB, (batch_size, SEQ_LEN)).astype("int32"),
            "attributes": rng.integers(-1, 2, (batch_size, NUM_ATTRIBUTES)).astype("float32")}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_benchmark_pretrainer(spec: dict | None = None):
    """The benchmarked `ValPatPretrainer` of ``spec`` (`benchmark_spec`; default: the tiny
    config), seeded, not compiled; also used by benchmarks/profile_pretrain_step.py."""
    import keras

    from valpat_keras.models import ValPatBackbone, build_image_encoder, build_text_encoder
    from valpat_keras.tasks.pretrainer import ValPatPretrainer

    spec = spec or benchmark_spec()
    keras.utils.set_random_seed(0)
    image = build_image_encoder(spec["image"], image_size=tuple(spec["image_size"]),
                                last_stride=spec["last_stride"])
    text = build_text_encoder(spec["text"], vocabulary_size=spec["vocabulary"],
                              sequence_length=spec["sequence_length"])
    backbone = ValPatBackbone(image, text, embedding_dim=spec["embedding_dim"])
    return ValPatPretrainer(backbone, num_attributes=spec["num_attributes"],
                            queue_size=spec["queue_size"], ssl_dim=spec["ssl_dim"],
                            ssl_hidden_dim=spec["ssl_hidden_dim"])


def check_keras_device(backend: str, device: str) -> str | None:
    """The GPU's name when ``device`` is ``"gpu"`` and ``backend`` sees one.

    Raises:
        SystemExit: ``--device gpu`` but the backend sees no GPU.
    """
    if device != "gpu":
        return None
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        name = gpus and tf.config.experimental.get_device_details(gpus[0]).get("device_name")
    elif backend == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        name = gpus and gpus[0].device_kind
    else:
        import torch

        name = torch.cuda.is_available() and torch.cuda.get_device_name()
    if not name:
        raise SystemExit(f"--device gpu: the {backend} backend sees no GPU (is its CUDA build "
                         "installed and CUDA_VISIBLE_DEVICES set?)")
    return str(name)


def _keras_data(spec: dict, batch_size: int, backend: str):
    """The repeated tf.data batches; TensorFlow keeps off the GPU for the other backends."""
    import tensorflow as tf

    if backend != "tensorflow":
        try:  # else TensorFlow grabs the card's memory the measured backend needs
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # TensorFlow already set up its devices: nothing left to hide
            pass
    rng = np.random.default_rng(0)
    batches = [_batch(rng, batch_size, tuple(spec["image_size"])) for _ in range(4)]
    stacked = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    data = tf.data.Dataset.from_tensor_slices(stacked).batch(batch_size, drop_remainder=True)
    return data.cache().repeat().prefetch(2)


def run_keras(args: argparse.Namespace, spec: dict) -> dict:
    """Times `fit` of the spec's ValPatPretrainer on the current KERAS_BACKEND."""
    import keras

    backend = keras.backend.backend()
    device_name = check_keras_device(backend, args.device)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    data = _keras_data(spec, args.batch_size, backend)
    model = build_benchmark_pretrainer(spec)
    jit = args.jit_compile if args.jit_compile == "auto" else args.jit_compile == "true"
    model.compile(jit_compile=jit)
    steps = args.steps

    class Timer(keras.callbacks.Callback):
        """Syncs (reads the loss) at the first and last timed step only."""

        def __init__(self):
            super().__init__()
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            if batch in (0, steps):
                float(logs["loss"])  # wait for the step (JAX and TF dispatch asynchronously)
                self.ends.append(time.perf_counter())

    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=args.warmup, verbose=0)
    first = time.perf_counter() - start
    timer = Timer()
    model.fit(data, epochs=1, steps_per_epoch=steps + 1, verbose=0, callbacks=[timer])
    result = {"first_steps_s": first, "steps_per_s": steps / (timer.ends[-1] - timer.ends[0]),
              "jit_compile": bool(model.jit_compile)}
    if device_name:
        result["device_name"] = device_name
    return result


def run_torch_manual(args: argparse.Namespace, spec: dict, compiled: bool) -> dict:
    """Times the hand-written PyTorch loop of the same model (no Keras)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    # Imports torch: only the reference worker pays for it.
    from _torch_reference import time_torch_loop

    if args.device == "gpu":
        check_keras_device("torch", "gpu")
    rng = np.random.default_rng(0)
    batches = [_batch(rng, args.batch_size, tuple(spec["image_size"])) for _ in range(4)]
    return time_torch_loop(spec, batches, args.steps, args.warmup, args.device,
                           args.mixed_precision, compiled)


def worker(args: argparse.Namespace) -> None:
    spec = benchmark_spec(args.config, args.image_size, args.queue_size, args.last_stride)
    precision = ", bf16" if args.mixed_precision else ""
    if args.worker.startswith("torch-manual"):
        compiled = args.worker == "torch-manual-compiled"
        result = run_torch_manual(args, spec, compiled)
        result["name"] = (f"pytorch loop{' + torch.compile' if compiled else ''}"
                          f"{' (AMP bf16)' if args.mixed_precision else ''}")
    else:
        result = run_keras(args, spec)
        result["name"] = (f"keras {os.environ['KERAS_BACKEND']} (fit, jit="
                          f"{result['jit_compile']}{precision})")
    result["images_per_s"] = result["steps_per_s"] * args.batch_size
    result["peak_rss_mb"] = _peak_rss_mb()
    print("RESULT " + json.dumps(result), flush=True)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=("tiny", "resnet50"), default="tiny",
                        help="pretraining config (PRETRAIN_CONFIGS; default tiny)")
    parser.add_argument("--image-size", type=parse_image_size, default=None, metavar="HxW",
                        help="e.g. 256x128 (default: the config's)")
    parser.add_argument("--queue-size", type=int, default=None,
                        help="MoCo queue length (default: the config's, 4096 / 65536)")
    parser.add_argument("--last-stride", type=int, choices=(1, 2), default=1,
                        help="stride of the last ResNet stage (1, the library default)")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="mixed_bfloat16 in Keras, bf16 autocast in the PyTorch loop")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps (3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3,
                        help="processes per row; the row shows the median (3)")
    parser.add_argument("--backends", default="tensorflow,jax,torch",
                        help="comma-separated Keras backends (default: all three)")
    parser.add_argument("--jit-compile", choices=("auto", "true", "false"), default="auto")
    parser.add_argument("--torch-compile", choices=("no", "yes", "both"), default=None,
                        help="torch.compile the PyTorch loop's encoders: no / yes / both rows "
                             "(default: both with --device gpu, else no)")
    parser.add_argument("--no-torch-reference", action="store_true",
                        help="skip the hand-written PyTorch loop")
    parser.add_argument("--out", default="runs/benchmarks/pretrain_speed",
                        help="folder of results.json")
    parser.add_argument("--publish", default=None, metavar="MD",
                        help="also write the table to this Markdown file (for the docs)")
    parser.add_argument("--worker", choices=("keras", "torch-manual", "torch-manual-compiled"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps <= 0 or args.warmup <= 0:
        parser.error("--steps and --warmup must be positive")
    if args.torch_compile is None:
        args.torch_compile = "both" if args.device == "gpu" else "no"
    return args


def _worker_options(args: argparse.Namespace) -> list[str]:
    options = ["--config", args.config, "--steps", str(args.steps), "--warmup",
               str(args.warmup), "--batch-size", str(args.batch_size), "--jit-compile",
               args.jit_compile, "--device", args.device, "--last-stride", str(args.last_stride)]
    if args.image_size:
        options += ["--image-size", f"{args.image_size[0]}x{args.image_size[1]}"]
    if args.queue_size is not None:
        options += ["--queue-size", str(args.queue_size)]
    return options + (["--mixed-precision"] if args.mixed_precision else [])


def _runs(args: argparse.Namespace) -> list[tuple[str, str]]:
    runs = [("keras", b) for b in args.backends.split(",") if b]
    if not args.no_torch_reference:
        if args.torch_compile in ("no", "both"):
            runs.append(("torch-manual", "torch"))
        if args.torch_compile in ("yes", "both"):
            runs.append(("torch-manual-compiled", "torch"))
    return runs


def _run_once(kind: str, backend: str, args: argparse.Namespace) -> dict | None:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if args.device == "cpu":  # a GPU machine measures its CPU when asked to
        env.update(CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, __file__, "--worker", kind, *_worker_options(args)],
                          env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        print(f"{kind} {backend}: failed\n{done.stdout[-2000:]}{done.stderr[-2000:]}",
              flush=True)
        return None
    return json.loads(lines[-1][len("RESULT "):])


def gpu_name() -> str | None:
    """The first card's name from nvidia-smi (None without one)."""
    if not shutil.which("nvidia-smi"):
        return None
    done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                          capture_output=True, text=True, check=False)
    names = done.stdout.strip().splitlines()
    return names[0].strip() if done.returncode == 0 and names else None


def _median_rows(runs, results) -> list[dict]:
    rows = []
    for run in runs:
        row = sorted(results[run], key=lambda r: r["steps_per_s"])
        if row:
            rows.append({**row[len(row) // 2],
                         "steps_per_s_each": [round(r["steps_per_s"], 3) for r in row]})
    return rows


def _ratio_to_loop(rows: list[dict]) -> None:
    """Adds ``vs_loop``: each row's steps/s over the (eager) hand-written PyTorch loop's."""
    loop = next((r for r in rows if r["name"].startswith("pytorch loop")
                 and "compile" not in r["name"]), None)
    for r in rows:
        r["vs_loop"] = None if loop is None else r["steps_per_s"] / loop["steps_per_s"]


def table_markdown(record: dict) -> str:
    """The rows of one run (``results.json``) as a Markdown table with its machine."""
    lines = [("| run | steps/s | images/s | vs PyTorch loop | first steps (s) | peak RSS (MB) "
              "| steps/s of each process |"), "|---|---:|---:|---:|---:|---:|---|"]
    for r in record["rows"]:
        ratio = "—" if r.get("vs_loop") is None else f"{100 * r['vs_loop']:.0f} %"
        each = ", ".join(f"{v:.2f}" for v in r["steps_per_s_each"])
        lines.append(f"| {r['name']} | {r['steps_per_s']:.2f} | {r['images_per_s']:.1f} | "
                     f"{ratio} | {r['first_steps_s']:.1f} | {r['peak_rss_mb']:.0f} | {each} |")
    env, spec, settings = record["environment"], record["spec"], record["settings"]
    height, width = spec["image_size"]
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
    lines += ["", (f"`{record['command']}`: config {spec['config']}, batch "
                   f"{settings['batch_size']} at {height}x{width}, queue {spec['queue_size']}, "
                   f"last stride {spec['last_stride']}; {settings['warmup']} warm-up + "
                   f"{settings['steps']} timed steps per process, median of "
                   f"{settings['repeats']} processes per row run round robin. "
                   f"{record['card'] or env['cpu']}, {env['cores']} cores; {versions}; "
                   f"taken {env['date']}, {record['wall_seconds']:.0f} s.")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    if args.worker:
        worker(args)
        return
    started = time.perf_counter()
    spec = benchmark_spec(args.config, args.image_size, args.queue_size, args.last_stride)
    runs = _runs(args)
    card = gpu_name() if args.device == "gpu" else None
    height, width = spec["image_size"]
    print(f"config {args.config}: batch {args.batch_size} at {height}x{width}, queue "
          f"{spec['queue_size']}, last stride {args.last_stride}, device {args.device}"
          f"{f' ({card})' if card else ''}{', bf16' if args.mixed_precision else ''}; "
          f"{args.warmup} warm-up + {args.steps} timed steps, median of {args.repeats} "
          "processes per row (steps/s of each in brackets)", flush=True)
    # Round robin (every row once, then again): drift of a shared machine over minutes then
    # touches every row alike instead of whichever ran last.
    results: dict[tuple[str, str], list[dict]] = {run: [] for run in runs}
    for _ in range(max(1, args.repeats)):
        for kind, backend in runs:
            result = _run_once(kind, backend, args)
            if result is not None:
                results[(kind, backend)].append(result)
    rows = _median_rows(runs, results)
    _ratio_to_loop(rows)
    card = card or next((r["device_name"] for r in rows if r.get("device_name")), None)
    print(f"{'run':<46} {'steps/s':>8} {'images/s':>9} {'vs loop':>8} {'first steps s':>14} "
          f"{'peak RSS MB':>12}")
    for r in rows:
        each = ", ".join(f"{v:.2f}" for v in r["steps_per_s_each"])
        ratio = "" if r["vs_loop"] is None else f"{100 * r['vs_loop']:.0f}%"
        print(f"{r['name']:<46} {r['steps_per_s']:>8.2f} {r['images_per_s']:>9.1f} "
              f"{ratio:>8} {r['first_steps_s']:>14.1f} {r['peak_rss_mb']:>12.0f}  [{each}]")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("worker", "out")}
    from valpat_keras.run_outputs import environment_info, write_report

    command = "python benchmarks/pretrain_speed.py " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:]))
    record = {"device": args.device, "card": card, "settings": settings, "spec": spec,
              "rows": rows, "command": command.strip(), "environment": environment_info(),
              "wall_seconds": time.perf_counter() - started}
    (out / "results.json").write_text(json.dumps(record, indent=2))
    write_report(table_markdown(record), out / "pretrain_speed.md", args.publish)
    print(f"wrote {out / 'results.json'}")
    failed = [f"{kind} {backend}" for kind, backend in runs if not results[(kind, backend)]]
    if failed:
        raise SystemExit(f"no result for: {', '.join(failed)} (see the output above)")


if __name__ == "__main__":
    main()
