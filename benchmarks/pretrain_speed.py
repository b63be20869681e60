"""Pretraining speed of `ValPatPretrainer.fit` per Keras backend, next to plain PyTorch.

Each measurement runs in its own subprocess (one backend per process): batch 32 at 128x64,
the tiny image encoder (ResNet basic blocks 64/128/256, one per stage, last stride 1, GeM),
a 4096-key MoCo queue with a momentum encoder, a 2-layer text transformer (width 128) and
a 26-attribute head, all three objectives on. Data are random arrays already in memory, so
the figures are the training step, not the input pipeline (see benchmarks/pipelines.py).
The PyTorch reference is a hand-written training loop of the same model (same layers,
losses, EMA and queue) with ``torch.optim.AdamW``.

Prints steps/s, images/s and peak resident memory per backend. Each row is the median of
``--repeats`` fresh processes, run round robin: on a small shared CPU the same configuration
varies by 5-10% from one process and minute to the next, more than some of the differences
measured.

```
python benchmarks/pretrain_speed.py                  # all backends, 3 x 20 timed steps
python benchmarks/pretrain_speed.py --steps 2 --warmup 1 --repeats 1 --backends jax,torch
```
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

IMAGE_SIZE = (128, 64)
VOCAB, SEQ_LEN, NUM_ATTRIBUTES, QUEUE = 2000, 32, 26, 4096


def _batch(rng: np.random.Generator, batch_size: int) -> dict:
    images = rng.random((batch_size, *IMAGE_SIZE, 3), dtype=np.float32)
    return {"view1": images, "view2": images[:, :, ::-1].copy(),
            "token_ids": rng.integers(5, VOCAB, (batch_size, SEQ_LEN)).astype("int32"),
            "attributes": rng.integers(-1, 2, (batch_size, NUM_ATTRIBUTES)).astype("float32")}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_benchmark_pretrainer():
    """The benchmarked `ValPatPretrainer` (tiny ResNet, 2-layer text encoder, 4096-key queue),
    seeded, not compiled; also used by benchmarks/profile_pretrain_step.py."""
    import keras

    from valpat_keras.models import ValPatBackbone, build_image_encoder, build_text_encoder
    from valpat_keras.tasks.pretrainer import ValPatPretrainer

    keras.utils.set_random_seed(0)
    backbone = ValPatBackbone(build_image_encoder("tiny", image_size=IMAGE_SIZE),
                              build_text_encoder("tiny", vocabulary_size=VOCAB,
                                                 sequence_length=SEQ_LEN), embedding_dim=128)
    return ValPatPretrainer(backbone, num_attributes=NUM_ATTRIBUTES, queue_size=QUEUE,
                            ssl_dim=128, ssl_hidden_dim=512)


def run_keras(steps: int, warmup: int, batch_size: int, jit_compile: str) -> dict:
    """Times `fit` of the tiny ValPatPretrainer on the current KERAS_BACKEND."""
    import keras
    import tensorflow as tf

    model = build_benchmark_pretrainer()
    model.compile(jit_compile=jit_compile if jit_compile == "auto" else jit_compile == "true")
    rng = np.random.default_rng(0)
    batches = [_batch(rng, batch_size) for _ in range(4)]
    stacked = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    data = tf.data.Dataset.from_tensor_slices(stacked).batch(batch_size, drop_remainder=True)
    data = data.cache().repeat()

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # wait for the step (JAX and TF dispatch asynchronously)
            self.ends.append(time.perf_counter())

    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=warmup, verbose=0)
    first = time.perf_counter() - start
    timer = Timer()
    model.fit(data, epochs=1, steps_per_epoch=steps + 1, verbose=0, callbacks=[timer])
    seconds = timer.ends[-1] - timer.ends[0]
    return {"first_steps_s": first, "steps_per_s": steps / seconds}


def run_torch_manual(steps: int, warmup: int, batch_size: int) -> dict:
    """Times a hand-written PyTorch loop of the same model (no Keras)."""
    import copy
    import math

    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.manual_seed(0)

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
            self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                           nn.BatchNorm2d(cout)) if stride != 1 or cin != cout
                             else nn.Identity())

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))

    class ImageEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                      nn.ReLU(), nn.MaxPool2d(3, 2, 1))
            self.stages = nn.Sequential(BasicBlock(64, 64, 1), BasicBlock(64, 128, 2),
                                        BasicBlock(128, 256, 1))
            self.p = nn.Parameter(torch.tensor(3.0))

        def forward(self, x):
            x = (x.permute(0, 3, 1, 2) - self.mean) / self.std
            x = self.stages(self.stem(x))
            return x.clamp(min=1e-6).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)

    def mlp(din, hidden, dout, last_bn):
        layers = [nn.Linear(din, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
                  nn.Linear(hidden, dout, bias=not last_bn)]
        if last_bn:
            layers.append(nn.BatchNorm1d(dout, affine=False))
        return nn.Sequential(*layers)

    class TextEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens = nn.Embedding(VOCAB, 128)
            self.positions = nn.Embedding(SEQ_LEN, 128)
            layer = nn.TransformerEncoderLayer(128, 4, 256, dropout=0.0, batch_first=True,
                                               norm_first=False)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(128)

        def forward(self, ids):
            x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1]))
            return self.norm(self.encoder(x, src_key_padding_mask=ids == 0))[:, 0]

    image, text = ImageEncoder(), TextEncoder()
    projection, predictor = mlp(256, 512, 128, True), mlp(128, 512, 128, False)
    key_image, key_projection = copy.deepcopy(image), copy.deepcopy(projection)
    for p in [*key_image.parameters(), *key_projection.parameters()]:
        p.requires_grad_(False)
    image_proj, text_proj = nn.Linear(256, 128, bias=False), nn.Linear(128, 128, bias=False)
    attribute_head = nn.Linear(256, NUM_ATTRIBUTES)
    log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    queue = F.normalize(torch.randn(QUEUE, 128), dim=1)
    pointer = 0
    modules = [image, text, projection, predictor, image_proj, text_proj, attribute_head]
    params = [p for m in modules for p in m.parameters()] + [log_scale]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    ratios = torch.full((NUM_ATTRIBUTES,), 0.5)
    rng = np.random.default_rng(0)
    batches = [{k: torch.from_numpy(v) for k, v in _batch(rng, batch_size).items()}
               for _ in range(4)]

    def step(batch):
        nonlocal pointer, queue
        features = image(batch["view1"])
        q = F.normalize(predictor(projection(features)), dim=1)
        with torch.no_grad():
            for qp, kp in zip([*image.parameters(), *projection.parameters()],
                              [*key_image.parameters(), *key_projection.parameters()]):
                kp.mul_(0.999).add_(qp.detach(), alpha=0.001)
            k = F.normalize(key_projection(key_image(batch["view2"])), dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], 1) / 0.2
        ssl = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))
        img = F.normalize(image_proj(features), dim=1)
        txt = F.normalize(text_proj(text(batch["token_ids"])), dim=1)
        sim = log_scale.clamp(max=math.log(100)).exp() * img @ txt.T
        labels = torch.arange(len(sim))
        itc = (F.cross_entropy(sim, labels) + F.cross_entropy(sim.T, labels)) / 2
        y = batch["attributes"]
        mask = (y >= 0).float()
        pos = (y == 1).float()
        weight = torch.exp(pos * (1 - ratios) + (1 - pos) * ratios) * mask
        bce = F.binary_cross_entropy_with_logits(attribute_head(features), pos,
                                                 reduction="none")
        attr = (weight * bce).sum() / mask.sum().clamp(min=1)
        loss = ssl + itc + attr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            queue[pointer:pointer + len(k)] = k
            pointer = (pointer + len(k)) % QUEUE
        return float(loss)

    start = time.perf_counter()
    for i in range(warmup):
        step(batches[i % 4])
    first = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(steps):
        step(batches[i % 4])
    return {"first_steps_s": first, "steps_per_s": steps / (time.perf_counter() - start)}


def worker(args: argparse.Namespace) -> None:
    if args.worker == "torch-manual":
        result = run_torch_manual(args.steps, args.warmup, args.batch_size)
        result["name"] = "pytorch (hand-written loop)"
    else:
        result = run_keras(args.steps, args.warmup, args.batch_size, args.jit_compile)
        result["name"] = f"keras {os.environ['KERAS_BACKEND']} (fit, jit_compile={args.jit_compile})"
    result["images_per_s"] = result["steps_per_s"] * args.batch_size
    result["peak_rss_mb"] = _peak_rss_mb()
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps (20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps (3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3,
                        help="processes per row; the row shows the median (3)")
    parser.add_argument("--backends", default="tensorflow,jax,torch",
                        help="comma-separated Keras backends (default: all three)")
    parser.add_argument("--jit-compile", choices=("auto", "true", "false"), default="auto")
    parser.add_argument("--no-torch-reference", action="store_true",
                        help="skip the hand-written PyTorch loop")
    parser.add_argument("--worker", choices=("keras", "torch-manual"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    runs = [("keras", b) for b in args.backends.split(",") if b]
    if not args.no_torch_reference:
        runs.append(("torch-manual", "torch"))
    common = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size",
              str(args.batch_size), "--jit-compile", args.jit_compile]
    print(f"batch {args.batch_size} at {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, queue {QUEUE}, "
          f"{args.warmup} warm-up + {args.steps} timed steps, median of {args.repeats} "
          "processes per row (steps/s of each in brackets)")
    print(f"{'run':<46} {'steps/s':>8} {'images/s':>9} {'first steps s':>14} {'peak RSS MB':>12}")
    # Round robin (every row once, then again): drift of a shared machine over minutes then
    # touches every row alike instead of whichever ran last.
    results: dict[tuple[str, str], list[dict]] = {run: [] for run in runs}
    for _ in range(max(1, args.repeats)):
        for kind, backend in runs:
            env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
            done = subprocess.run([sys.executable, __file__, "--worker", kind, *common],
                                  env=env, capture_output=True, text=True, check=False)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode or not lines:
                print(f"{kind} {backend}: failed\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
                continue
            results[(kind, backend)].append(json.loads(lines[-1][len("RESULT "):]))
    for run in runs:
        row = sorted(results[run], key=lambda r: r["steps_per_s"])
        if not row:
            continue
        r = row[len(row) // 2]
        each = ", ".join(f"{x['steps_per_s']:.2f}" for x in row)
        print(f"{r['name']:<46} {r['steps_per_s']:>8.2f} {r['images_per_s']:>9.1f} "
              f"{r['first_steps_s']:>14.1f} {r['peak_rss_mb']:>12.0f}  [{each}]")

if __name__ == "__main__":
    main()
