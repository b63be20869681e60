"""A cache of pretraining runs keyed by their data, arguments, seed and backend.

The demo and the tutorial notebooks pretrain once and reuse that run for every transfer; a
second `valpat demo` (or a notebook opened again) finds the finished run instead of training
it again. A run counts as cached only once `pretrain` has returned and the key file is
written, so an interrupted run is retrained (or resumed from its own checkpoints).

Example:

```python
run = cached_pretrain(data, "runs/cache", steps=600, image_size=(128, 64), seed=0)
train_reid(market, "runs/reid", init=str(run))
```
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from valpat_keras.data.records import PretrainDataset

#: Written into a run folder once its pretraining finished: the key and what it hashes.
KEY_FILE = "cache_key.json"


def dataset_fingerprint(dataset: PretrainDataset) -> str:
    """A hash of a pretraining set: relative image paths, file sizes, captions, attributes.

    Paths are taken relative to the dataset root, so the same SynthPed written into two
    folders hashes the same.

    Args:
        dataset: The pretraining records.

    Returns:
        A hex digest.
    """
    digest = hashlib.sha256()
    root = str(dataset.root)
    for record in dataset.records:
        path = os.path.relpath(record.path, root) if root else record.path
        size = os.path.getsize(record.path) if os.path.exists(record.path) else -1
        attributes = None if record.attributes is None else [int(v) for v in record.attributes]
        digest.update(json.dumps([path, size, list(record.captions), attributes]).encode())
    return digest.hexdigest()


def pretrain_cache_key(dataset: PretrainDataset, arguments: dict[str, Any]) -> dict[str, Any]:
    """What identifies a pretraining run: data fingerprint, arguments, backend, version.

    Args:
        dataset: The pretraining records.
        arguments: The keyword arguments given to `pretrain` (JSON-serialisable).

    Returns:
        ``{"key": short hex digest, "identity": the hashed fields}``.
    """
    import keras

    import valpat_keras

    identity = {"data": dataset_fingerprint(dataset), "arguments": arguments,
                "backend": keras.backend.backend(), "valpat_keras": valpat_keras.__version__}
    text = json.dumps(identity, sort_keys=True, default=list)
    return {"key": hashlib.sha256(text.encode()).hexdigest()[:16], "identity": identity}


def cached_pretrain(dataset: PretrainDataset, cache_dir: str | Path, name: str = "pretrain",
                    fresh: bool = False, printer: Callable[[str], None] = print,
                    **arguments: Any) -> tuple[Path, bool]:
    """Runs `pretrain` unless a finished run with the same key is in ``cache_dir``.

    Args:
        dataset: The pretraining records.
        cache_dir: Folder of cached runs (one sub-folder ``NAME-KEY`` per run).
        name: A readable prefix of the run folder, e.g. the objectives.
        fresh: Retrain even when a cached run exists (it is replaced).
        printer: Where the "reusing" / "training" line goes.
        **arguments: Keyword arguments of `pretrain` (``steps``, ``image_size``, ``seed``, ...).

    Returns:
        ``(run_dir, reused)``: the run folder, and whether it came from the cache.
    """
    from valpat_keras.tasks.pretraining import pretrain

    key = pretrain_cache_key(dataset, arguments)
    run = Path(cache_dir) / f"{name}-{key['key']}"
    key_file = run / KEY_FILE
    if not fresh and key_file.is_file():
        printer(f"      reusing the cached pretraining run {run} (--fresh retrains)")
        return run, True
    if fresh or (run.exists() and not (run / "checkpoints").exists()):
        shutil.rmtree(run, ignore_errors=True)
    pretrain(dataset, run, **arguments)
    tmp = key_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(key, indent=1, default=list) + "\n")
    os.replace(tmp, key_file)
    return run, False
