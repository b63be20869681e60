"""Files every training or evaluation run writes: strict JSON with NumPy values converted."""

from __future__ import annotations

import json
import math
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
        ``date`` (UTC, ISO 8601), ``cpu`` (model name), ``cores``, ``memory_gib``,
        ``platform``, ``python`` and the versions of the numerical libraries that are
        installed (``keras``, ``keras_hub``, ``tensorflow``, ``jax``, ``torch``, ``numpy``,
        ``scikit-learn``), plus the Keras ``backend`` when Keras is imported.
    """
    import datetime
    import os
    import platform
    import sys
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
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
