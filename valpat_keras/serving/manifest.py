"""The ``manifest.json`` written beside exported models: what a server needs to use them.

One manifest describes every model of one export folder (`valpat_keras.serving.export`):

```json
{
  "format": "onnx", "library_version": "0.1.0", "keras_version": "3.15.1",
  "export_backend": "torch", "training_backend": "jax", "run_dir": "runs/reid",
  "run_kind": "reid", "image_size": [256, 128], "similarity": "cosine",
  "flip_average": true, "verification_threshold": 0.62,
  "verification": {"threshold": 0.62, "similarity": "cosine", "target_fpr": 0.001, ...},
  "models": {
    "image": {"file": "image.onnx", "input": {...}, "output": "...", "embedding_dim": 256},
    "attributes": {"file": "attributes.onnx", "names": [...], "thresholds": [...], ...}
  }
}
```

Importing this module does not import Keras.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from valpat_keras import __version__
from valpat_keras.errors import InputError

#: The manifest's file name inside an export folder.
MANIFEST_FILE = "manifest.json"
#: The similarity every exported embedding is meant for (they are L2-normalised).
SIMILARITY = "cosine"


def build_manifest(*, format: str, export_backend: str, keras_version: str, run_dir: str,
                   run_kind: str, image_size: tuple[int, int], flip_average: bool,
                   training_backend: str | None, calibration: Mapping[str, Any] | None,
                   models: Mapping[str, Mapping[str, Any]],
                   int8: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of one export folder.

    Args:
        format: The export format (``saved_model``, ``onnx``, ``openvino``, ``litert``).
        export_backend: The Keras backend that exported.
        keras_version: ``keras.__version__``.
        run_dir: The exported run folder.
        run_kind: ``pretraining``, ``search``, ``reid`` or ``attributes``.
        image_size: ``(height, width)`` the graphs resize images to.
        flip_average: Whether the image embedders average an image with its mirror.
        training_backend: The backend the run trained on, when the run folder says so.
        calibration: `valpat_keras.evaluation.verification.read_calibration` of the run
            (None: no calibrated verification threshold).
        models: Per exported model (``image``, ``image_text``, ``text``, ``attributes``), its
            entry: ``file``, ``input``, ``output`` and model-specific fields.
        int8: The int8 accuracy report, when the models were quantised.

    Returns:
        The manifest (JSON-serialisable).
    """
    manifest = {
        "format": format, "library_version": __version__, "keras_version": keras_version,
        "export_backend": export_backend, "training_backend": training_backend,
        "run_dir": str(run_dir), "run_kind": run_kind,
        "image_size": [int(image_size[0]), int(image_size[1])],
        "similarity": SIMILARITY, "flip_average": bool(flip_average),
        "verification_threshold": (None if calibration is None
                                   else float(calibration["threshold"])),
        "verification": None if calibration is None else dict(calibration),
        "models": {name: dict(entry) for name, entry in models.items()},
    }
    if int8 is not None:
        manifest["int8"] = dict(int8)
    return manifest


def write_manifest(out_dir: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Writes ``out_dir/manifest.json`` (indented, keys in insertion order)."""
    path = Path(out_dir) / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def read_manifest(export_dir: str | Path) -> dict[str, Any]:
    """Reads the manifest of an export folder.

    Raises:
        InputError: No ``manifest.json`` in the folder, or one that is not a JSON object
            with ``models``.
    """
    path = Path(export_dir) / MANIFEST_FILE
    if not path.is_file():
        raise InputError(f"{Path(export_dir)}: no {MANIFEST_FILE}; expected a folder written "
                         "by `valpat export`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), dict):
        raise InputError(f"{path}: expected a JSON object with 'models' (written by "
                         "`valpat export`)")
    return manifest
