"""Files every training or evaluation run writes: strict JSON with NumPy values converted,
the per-epoch history and its figure, and the run folder of a pretraining run.

This module imports no Keras at the top: the commands import it while they parse their
arguments, before the backend is chosen.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    # JSON has no NaN or Infinity: a non-finite number (a diverged loss) is written as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, payload: Any) -> Path:
    """Writes ``payload`` as indented, strict JSON; returns the path.

    NumPy arrays and scalars become lists and numbers; NaN and infinite floats become
    ``null``, so every file parses with any JSON reader (no ``NaN`` literals).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_jsonable(payload), indent=2, sort_keys=False, allow_nan=False)
    path.write_text(text + "\n")
    return path


def environment_info() -> dict[str, Any]:
    """The machine and library versions a run's figures depend on (for ``results.json``).

    Returns:
        ``date`` (UTC, ISO 8601), ``cpu`` (model name, with its widest vector
        instructions on x86: ``"AMD EPYC (AVX2)"``), ``cores``, ``memory_gib``,
        ``platform``, ``python`` and the versions of the numerical libraries that are
        installed (``keras``, ``keras_hub``, ``tensorflow``, ``jax``, ``torch``, ``numpy``,
        ``scikit-learn``), plus the Keras ``backend`` when Keras is imported.
    """
    cpu = platform.processor() or platform.machine()
    try:
        flags: set[str] = set()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
        # Machines sold under one model name differ in the vector units the kernels use
        # (the same "AMD EPYC" VM was seen with and without AVX-512, at different speeds).
        isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
        if isa:
            cpu = f"{cpu} ({isa})"
    except OSError:
        pass
    memory = None
    try:
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    versions = {}
    for name in ("valpat-keras", "keras", "keras-hub", "tensorflow", "jax", "torch", "numpy",
                 "scikit-learn"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory,
            "platform": platform.platform(), "python": sys.version.split()[0],
            "versions": versions}
    if "keras" in sys.modules:
        info["backend"] = sys.modules["keras"].backend.backend()
    return info


def write_report(markdown: str, path: str | Path, publish: str | Path | None = None) -> Path:
    """Writes a benchmark's Markdown table, and a copy for the documentation when asked.

    Args:
        markdown: The text.
        path: The file in the benchmark's output folder.
        publish: A second file, e.g. under ``tutorials/generated/`` (folders are created).

    Returns:
        ``path``.
    """
    for target in (path, publish):
        if target is not None:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            Path(target).write_text(markdown)
    return Path(path)


def history_values(history: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    """``History.history`` as plain floats per metric and epoch."""
    return {k: [float(v) for v in vs] for k, vs in history.items()}


def write_history(path: str | Path, history: Mapping[str, Sequence[float]]) -> Path:
    """Writes ``history.json``: per-epoch value of every logged loss and metric."""
    return write_json(path, history_values(history))


def plot_history(history: Mapping[str, Sequence[float]], path: str | Path) -> Path:
    """Draws the per-epoch losses (left) and accuracies (right) of a pretraining run.

    Args:
        history: ``History.history``-like mapping of metric name to per-epoch values.
        path: The PNG file to write.

    Returns:
        The path written.
    """
    # Imported here: matplotlib is heavy and only the runs that draw need it. A bare Figure
    # (no pyplot) leaves the caller's matplotlib backend alone, e.g. in Jupyter.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for name, values in history.items():
        axis = ax_loss if name.endswith("loss") else ax_acc
        epochs = np.arange(1, len(values) + 1)
        axis.plot(epochs, values, marker="o", label=name)
    ax_loss.set(title="losses", xlabel="epoch")
    ax_acc.set(title="top-1 accuracy / attribute mA", xlabel="epoch", ylim=(0, 1))
    for axis in (ax_loss, ax_acc):
        if axis.lines:
            axis.legend()
        axis.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def write_pretraining_run(out_dir: str | Path, pretrainer: Any, tokenizer: Any,
                          history: Mapping[str, Sequence[float]]) -> Path:
    """Writes what a finished pretraining run leaves besides ``config.json`` / ``history.json``.

    ``loss_curves.png``, ``pretrainer.keras`` (the whole `ValPatPretrainer`), the
    ``image_encoder/`` preset with its `ImagePreprocessor`, the ``backbone/`` preset with its
    `ValPatPreprocessor` (image size and, with captions, the tokenizer) and, for readers of
    earlier versions, the tokenizer also in ``backbone/tokenizer/`` (the layout of
    `valpat_keras.tasks.pretraining`).

    Args:
        out_dir: The run folder.
        pretrainer: The trained `ValPatPretrainer`.
        tokenizer: The `CaptionTokenizer`, or None (no captions).
        history: ``History.history`` of the run.

    Returns:
        ``out_dir``.
    """
    # Imported here: the folder names live with the loaders (valpat_keras.models.init),
    # which import Keras; this module must not (see the module docstring).
    from valpat_keras.models.init import BACKBONE_DIR, IMAGE_ENCODER_DIR, TOKENIZER_DIR
    from valpat_keras.models.loading import save_backbone
    from valpat_keras.models.preprocessors import ImagePreprocessor, ValPatPreprocessor

    out_dir = Path(out_dir)
    plot_history(history_values(history), out_dir / "loss_curves.png")
    backbone = pretrainer.backbone
    pretrainer.save(str(out_dir / "pretrainer.keras"))
    save_backbone(backbone.image_encoder, out_dir / IMAGE_ENCODER_DIR,
                  ImagePreprocessor.for_encoder(backbone.image_encoder))
    if tokenizer is None:
        backbone.save_to_preset(str(out_dir / BACKBONE_DIR))
    else:
        save_backbone(backbone, out_dir / BACKBONE_DIR,
                      ValPatPreprocessor.for_backbone(backbone, tokenizer,
                                                      image_keys=("images", "view1", "view2")))
        tokenizer.save_to_preset(out_dir / BACKBONE_DIR / TOKENIZER_DIR)
    return out_dir
