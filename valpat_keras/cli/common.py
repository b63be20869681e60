"""Helpers shared by the subcommands: output folders and JSON results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_json(path: str | Path, payload: Any) -> Path:
    """Writes ``payload`` as indented JSON (NumPy values converted); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(payload), indent=2, sort_keys=False) + "\n")
    return path


def parse_data_spec(spec: str) -> tuple[str, str | None]:
    """Splits ``NAME:ROOT`` (or a bare ``NAME``) into the name and the root.

    Raises:
        ValueError: When the name part is empty.
    """
    name, sep, root = spec.partition(":")
    if not name:
        raise ValueError(f"--data {spec!r}: expected NAME:ROOT, e.g. market1501:/data")
    return name, (root or None) if sep else None
