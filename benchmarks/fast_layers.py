"""Keras' Conv2D / MaxPooling2D against `valpat_keras.models.fast_layers`: pretraining steps/s.

Times the pretraining step of benchmarks/pretrain_speed.py on each backend of ``--backends``
as the library builds it (the image encoders' convolutions and max pooling are
`fast_layers.Conv2D` / `MaxPooling2D`) and with those layers switched back to Keras' own
classes (same weights, same config). On JAX two more variants undo this round's choices:
YNNPACK convolution fusions back on (``ynn``: ``VALPAT_XLA_CPU_DEFAULTS=0``, see
`valpat_keras.xla_flags`), and that plus XLA's own gradient of strided convolutions instead of
the layers' patch product (``ynn-xla-gradient``, the library before 2026-12-03).
Each measurement is its own process, run round robin
(backend x variant, ``--repeats`` times) as in pretrain_speed.py, so that the machine's drift
from one minute to the next falls on every variant; the table gives the median steps/s of each
and the library's speed-up over it. (Two models timed in alternation in one process were unreliable here: some
rounds of either ran at exactly half speed.)

```
python benchmarks/fast_layers.py --publish tutorials/generated/fast_layers.md
python benchmarks/fast_layers.py --backends jax --repeats 1 --steps 3   # smoke run
```
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

#: What each measured variant is (the JAX-only ones change the library's XLA:CPU choices).
VARIANTS = {
    "fast": "the library as shipped (its layers; on JAX, its XLA:CPU setting)",
    "keras": "Keras' own Conv2D / MaxPooling2D",
    "ynn": "JAX: YNNPACK convolution fusions on (VALPAT_XLA_CPU_DEFAULTS=0)",
    "ynn-xla-gradient": ("JAX: YNNPACK on and XLA's own strided-convolution gradient "
                         "(the library before 2026-12-03)"),
}


def _variants(backend: str) -> tuple[str, ...]:
    return tuple(VARIANTS) if backend == "jax" else ("fast", "keras")


def _keras_classes(model) -> int:
    """Switches the fast layers of ``model`` back to Keras' classes; returns how many."""
    import keras

    from valpat_keras.models import fast_layers
    from valpat_keras.models.layer_classes import switch_layer_classes

    return switch_layer_classes(model, {fast_layers.Conv2D: keras.layers.Conv2D,
                                        fast_layers.MaxPooling2D: keras.layers.MaxPooling2D})


def worker(args: argparse.Namespace) -> dict:
    """Times one variant on the current KERAS_BACKEND; returns its steps/s."""
    import keras

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from pretrain_speed import _keras_data, benchmark_spec, build_benchmark_pretrainer

    spec = benchmark_spec("tiny", None, last_stride=1)
    data = _keras_data(spec, 32, keras.backend.backend())
    model = build_benchmark_pretrainer(spec)
    switched = _keras_classes(model) if args.variant == "keras" else 0
    if args.variant == "ynn-xla-gradient":
        from valpat_keras.models import fast_layers

        fast_layers.Conv2D._jax_patch_gradient = lambda self: False
    model.compile(jit_compile="auto")
    model.fit(data, epochs=1, steps_per_epoch=3, verbose=0)  # trace and warm up
    # As pretrain_speed.py: from the end of a first step to the end of the last, so that the
    # start and end of `fit` (iterator set-up and teardown, seconds at times) are not timed.
    ends = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch in (0, args.steps):
                float(logs["loss"])  # wait for the step (JAX dispatches asynchronously)
                ends.append(time.perf_counter())

    model.fit(data, epochs=1, steps_per_epoch=args.steps + 1, verbose=0, callbacks=[Timer()])
    return {"backend": keras.backend.backend(), "variant": args.variant,
            "layers_switched": switched, "steps_per_s": args.steps / (ends[-1] - ends[0])}


def _run_worker(backend: str, variant: str, args: argparse.Namespace) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if variant.startswith("ynn"):
        env["VALPAT_XLA_CPU_DEFAULTS"] = "0"
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", "--variant", variant,
         "--steps", str(args.steps)], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {backend} {variant} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table_markdown(record: dict) -> str:
    """The results as a Markdown table with the command, machine and wall time under it."""
    header = ("| backend | variant | steps/s | the library's speed-up over it "
              "| steps/s of each process |")
    lines = [header, "|---|---|---:|---:|---|"]
    for backend in record["settings"]["backends"].split(","):
        rates = {variant: [row["steps_per_s"] for row in record["rows"]
                           if row["backend"] == backend and row["variant"] == variant]
                 for variant in _variants(backend)}
        fast = statistics.median(rates["fast"])
        for variant, each in rates.items():
            median = statistics.median(each)
            lines.append(f"| {backend} | {VARIANTS[variant]} | {median:.2f} "
                         f"| {fast / median:.2f}x | {', '.join(f'{r:.2f}' for r in each)} |")
    env = record["environment"]
    settings = record["settings"]
    versions = env.get("versions", {})
    lines += ["", (f"`{record['command']}`: the pretraining step of `pretrain_speed.py` (tiny, "
              f"batch 32 at 128x64), 3 warm-up + {settings['steps']} timed steps per process, "
              f"median of {settings['repeats']} processes per variant run round robin. "
              f"{env['cpu']}, "
              f"{env['cores']} cores; keras {versions.get('keras')}, torch {versions.get('torch')}, "
              f"jax {versions.get('jax')}; taken {env['date']}, "
              f"{record['wall_seconds']:.0f} s.")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="torch,jax",
                        help="comma-separated Keras backends (torch,jax; on TensorFlow the "
                             "classes are Keras' own)")
    parser.add_argument("--repeats", type=int, default=3, help="processes per variant (3)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per process (20)")
    parser.add_argument("--variant", choices=tuple(VARIANTS), default="fast",
                        help=argparse.SUPPRESS)
    parser.add_argument("--out", default="runs/benchmarks/fast_layers")
    parser.add_argument("--publish", default=None, metavar="MD",
                        help="also write the table to this Markdown file (for the docs)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    started = time.perf_counter()
    rows = []
    for _ in range(args.repeats):
        for backend in args.backends.split(","):
            for variant in _variants(backend):
                rows.append(_run_worker(backend, variant, args))
                print(f"{backend} {variant}: {rows[-1]['steps_per_s']:.2f} steps/s", flush=True)
    from valpat_keras.run_outputs import environment_info

    command = "python benchmarks/fast_layers.py " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:])
        if a not in (args.publish, "--publish"))
    record = {"settings": {k: v for k, v in vars(args).items()
                           if k not in ("worker", "variant")},
              "rows": rows, "command": command.strip(), "environment": environment_info(),
              "wall_seconds": time.perf_counter() - started}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(record, f, indent=2)
    table = table_markdown(record)
    print(table)
    if args.publish:
        os.makedirs(os.path.dirname(os.path.abspath(args.publish)), exist_ok=True)
        with open(args.publish, "w") as f:
            f.write(table)


if __name__ == "__main__":
    main()
