"""The hand-written PyTorch reference of `benchmarks/pretrain_speed.py`: the VAL-PAT pretrainer
as a careful PyTorch engineer would write it, no Keras in the step.

Same architecture as the Keras model of each config: the keras-hub ResNet (7x7 stem, max pool,
basic or bottleneck blocks with the stride on the 3x3 convolution, a projection shortcut where
the shape changes, last stage at ``last_stride``), GeM pooling, the ssl projection /
prediction MLPs, a momentum (EMA) key encoder and a MoCo queue, the post-LN transformer text
tower with ``[CLS]`` pooling, image / text projections with a learnt logit scale, the weighted
attribute BCE; AdamW (lr 1e-3, weight decay 1e-4) over the same parameters.

What makes it a strong reference: channels_last activations (on the CPU too: oneDNN's
channels-last kernels made this step 1.3-1.6x faster than the default layout on a 2-core AMD
EPYC, torch 2.13; ``channels_last=False`` for the default layout), fused
AdamW (foreach on CPU), the EMA as two ``torch._foreach`` calls over all key parameters, the queue a device
tensor written in place, pinned host batches copied with ``non_blocking``, bf16 autocast with
``--mixed-precision``, optional ``torch.compile`` of the encoders, and no host sync inside the
timed steps (one at the end).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    """keras-hub's ``basic_block``: two 3x3 convolutions (stride on the first)."""

    expansion = 1

    def __init__(self, cin: int, filters: int, stride: int, conv_shortcut: bool):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, filters, 3, stride, 1, bias=False), nn.BatchNorm2d(filters),
            nn.ReLU(inplace=True), nn.Conv2d(filters, filters, 3, 1, 1, bias=False),
            nn.BatchNorm2d(filters))
        self.shortcut = _shortcut(cin, filters, stride, conv_shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """keras-hub's ``bottleneck_block`` (ResNet v1.5): 1x1, 3x3 (stride), 1x1 to 4x filters."""

    expansion = 4

    def __init__(self, cin: int, filters: int, stride: int, conv_shortcut: bool):
        super().__init__()
        out = 4 * filters
        self.body = nn.Sequential(
            nn.Conv2d(cin, filters, 1, bias=False), nn.BatchNorm2d(filters),
            nn.ReLU(inplace=True), nn.Conv2d(filters, filters, 3, stride, 1, bias=False),
            nn.BatchNorm2d(filters), nn.ReLU(inplace=True),
            nn.Conv2d(filters, out, 1, bias=False), nn.BatchNorm2d(out))
        self.shortcut = _shortcut(cin, out, stride, conv_shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int, conv_shortcut: bool) -> nn.Module:
    if not conv_shortcut:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ImageEncoder(nn.Module):
    """ImageNet-normalised NHWC images in [0, 1] -> ResNet -> GeM (learnt p, init 3)."""

    def __init__(self, filters: list[int], blocks: list[int], block_type: str,
                 last_stride: int):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        block = Bottleneck if block_type == "bottleneck_block" else BasicBlock
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        strides = [1] + [2] * (len(filters) - 2) + [last_stride]
        layers, cin = [], 64
        for width, count, stride in zip(filters, blocks, strides):
            for i in range(count):
                # As keras-hub: a projection shortcut where the shape changes.
                block_stride = stride if i == 0 else 1
                projection = block_stride != 1 or cin != width * block.expansion
                layers.append(block(cin, width, block_stride, projection))
                cin = width * block.expansion
        self.stages = nn.Sequential(*layers)
        self.feature_dim = cin
        self.p = nn.Parameter(torch.tensor(3.0))
        self.memory_format = torch.contiguous_format  # `make_step` sets channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.permute(0, 3, 1, 2) - self.mean) / self.std  # NHWC -> NCHW
        x = self.stages(self.stem(x.contiguous(memory_format=self.memory_format)))
        return x.float().clamp(min=1e-6).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


class TextEncoder(nn.Module):
    """Token + position embeddings, post-LN transformer layers (ReLU), final LN, ``[CLS]``."""

    def __init__(self, vocabulary: int, sequence_length: int, width: int, layers: int,
                 heads: int, intermediate: int):
        super().__init__()
        self.tokens = nn.Embedding(vocabulary, width)
        self.positions = nn.Embedding(sequence_length, width)
        layer = nn.TransformerEncoderLayer(width, heads, intermediate, dropout=0.0,
                                           batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.tokens(ids) + self.positions(positions)
        return self.norm(self.encoder(x, src_key_padding_mask=ids == 0))[:, 0]


def mlp(din: int, hidden: int, dout: int, last_bn: bool) -> nn.Sequential:
    """The ssl projection (``last_bn``: affine-free BatchNorm output) / prediction head."""
    layers = [nn.Linear(din, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
              nn.Linear(hidden, dout, bias=not last_bn)]
    if last_bn:
        layers.append(nn.BatchNorm1d(dout, affine=False))
    return nn.Sequential(*layers)


class Pretrainer(nn.Module):
    """The query / key towers, heads, queue and logit scale of one benchmark spec."""

    def __init__(self, spec: dict):
        super().__init__()
        self.image = ImageEncoder(spec["filters"], spec["blocks"], spec["block_type"],
                                  spec["last_stride"])
        self.text = TextEncoder(spec["vocabulary"], spec["sequence_length"],
                                spec["text_width"], spec["text_layers"], spec["text_heads"],
                                spec["text_intermediate"])
        feature_dim = self.image.feature_dim
        self.projection = mlp(feature_dim, spec["ssl_hidden_dim"], spec["ssl_dim"], True)
        self.predictor = mlp(spec["ssl_dim"], spec["ssl_hidden_dim"], spec["ssl_dim"], False)
        self.image_proj = nn.Linear(feature_dim, spec["embedding_dim"], bias=False)
        self.text_proj = nn.Linear(spec["text_width"], spec["embedding_dim"], bias=False)
        self.attribute_head = nn.Linear(feature_dim, spec["num_attributes"])
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.key_image = copy.deepcopy(self.image).requires_grad_(False)
        self.key_projection = copy.deepcopy(self.projection).requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(spec["queue_size"],
                                                              spec["ssl_dim"]), dim=1))
        self.register_buffer("ratios", torch.full((spec["num_attributes"],), 0.5))
        self.pointer = 0

    def ema_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(key, query) parameter lists of the momentum update."""
        query = [*self.image.parameters(), *self.projection.parameters()]
        key = [*self.key_image.parameters(), *self.key_projection.parameters()]
        return key, query


def _losses(model: Pretrainer, batch: dict, image_forward: Callable,
            key_forward: Callable, text_forward: Callable) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed ssl + itc + attr loss and the batch's keys (for the queue)."""
    features = image_forward(batch["view1"])
    q = F.normalize(model.predictor(model.projection(features)).float(), dim=1)
    with torch.no_grad():
        k = F.normalize(model.key_projection(key_forward(batch["view2"])).float(), dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ model.queue.T], 1) / 0.2
    labels = torch.zeros(len(q), dtype=torch.long, device=q.device)
    ssl = F.cross_entropy(logits, labels)
    img = F.normalize(model.image_proj(features).float(), dim=1)
    txt = F.normalize(model.text_proj(text_forward(batch["token_ids"])).float(), dim=1)
    sim = model.log_scale.clamp(max=math.log(100)).exp() * img @ txt.T
    pairs = torch.arange(len(sim), device=sim.device)
    itc = (F.cross_entropy(sim, pairs) + F.cross_entropy(sim.T, pairs)) / 2
    y = batch["attributes"]
    mask = (y >= 0).float()
    pos = (y == 1).float()
    weight = torch.exp(pos * (1 - model.ratios) + (1 - pos) * model.ratios) * mask
    bce = F.binary_cross_entropy_with_logits(model.attribute_head(features).float(), pos,
                                             reduction="none")
    attr = (weight * bce).sum() / mask.sum().clamp(min=1)
    return ssl + itc + attr, k


def make_step(spec: dict, device: torch.device, mixed_precision: bool,
              compile_encoders: bool, channels_last: bool = True,
              ) -> tuple[Callable[[dict], torch.Tensor], Pretrainer]:
    """The model on ``device`` and one training step (returns the loss tensor, no sync)."""
    torch.manual_seed(0)
    model = Pretrainer(spec).to(device)
    if channels_last:  # what cuDNN's tensor cores and oneDNN's CPU kernels both want
        model.to(memory_format=torch.channels_last)
        model.image.memory_format = model.key_image.memory_format = torch.channels_last
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4,
                                  **({"fused": True} if device.type == "cuda"
                                     else {"foreach": True}))
    key_params, query_params = model.ema_pairs()
    forwards = [model.image, model.key_image, model.text]
    if compile_encoders:
        forwards = [torch.compile(f) for f in forwards]
    queue_size = spec["queue_size"]
    # A disabled autocast still slowed the CPU step (torch 2.13): enter one only for bf16.
    autocast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if mixed_precision
                else contextlib.nullcontext)

    def step(batch: dict) -> torch.Tensor:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.no_grad():  # EMA of the key tower: two fused calls over every tensor
            torch._foreach_mul_(key_params, 0.999)
            torch._foreach_add_(key_params, [p.detach() for p in query_params], alpha=0.001)
        with autocast():
            loss, k = _losses(model, batch, *forwards)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.queue[model.pointer:model.pointer + len(k)] = k
            model.pointer = (model.pointer + len(k)) % queue_size
        return loss.detach()

    return step, model


def time_torch_loop(spec: dict, batches: list[dict[str, np.ndarray]], steps: int, warmup: int,
                    device: str, mixed_precision: bool, compile_encoders: bool) -> dict:
    """Times ``warmup`` then ``steps`` steps of the loop; one host sync per phase."""
    target = torch.device("cuda" if device == "gpu" else "cpu")
    step, _ = make_step(spec, target, mixed_precision, compile_encoders)
    pin = target.type == "cuda"
    host = [{k: (torch.from_numpy(v).pin_memory() if pin else torch.from_numpy(v))
             for k, v in b.items()} for b in batches]

    def run(count: int) -> float:
        start = time.perf_counter()
        loss = None
        for i in range(count):
            loss = step(host[i % len(host)])
        if loss is not None:
            float(loss)  # the only sync: waits for every queued step
        return time.perf_counter() - start

    first = run(warmup)
    seconds = run(steps)
    result = {"first_steps_s": first, "steps_per_s": steps / seconds}
    if pin:
        result["device_name"] = torch.cuda.get_device_name()
    return result
