"""A cache of pretraining runs keyed by their data, `PretrainConfig`, seed and backend.

The demo and the tutorial notebooks pretrain once and reuse that run for every transfer; a
second `valpat demo` (or a notebook opened again) finds the finished run instead of training
it again. A run counts as cached only once `pretrain` has returned and the key file is
written, so an interrupted run is retrained (or resumed from its own checkpoints).

The key hashes every field of the run's `PretrainConfig` (`PretrainConfig.cache_fields`:
``verbose`` left out), so the same settings give the same key however they were spelled
(``seed=0`` given or left at its default).

Example:

```python
config = PretrainConfig(steps=600, image_size=(64, 32), seed=0)
run, reused = cached_pretrain(data, "runs/cache", config)
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

import keras

import valpat_keras
from valpat_keras.data.records import PretrainDataset
from valpat_keras.tasks import pretraining
from valpat_keras.tasks.pretrain_config import RENAMED, PretrainConfig
from valpat_keras.tasks.run_config import resolve_run_config

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


def pretrain_cache_key(dataset: PretrainDataset, config: PretrainConfig) -> dict[str, Any]:
    """What identifies a pretraining run: data fingerprint, settings, backend, version.

    Args:
        dataset: The pretraining records.
        config: The run's settings (hashed as `PretrainConfig.cache_fields`).

    Returns:
        ``{"key": short hex digest, "identity": the hashed fields}``.
    """
    identity = {"data": dataset_fingerprint(dataset), "arguments": config.cache_fields(),
                "backend": keras.backend.backend(), "valpat_keras": valpat_keras.__version__}
    text = json.dumps(identity, sort_keys=True, default=list)
    return {"key": hashlib.sha256(text.encode()).hexdigest()[:16], "identity": identity}


def cached_pretrain(dataset: PretrainDataset, cache_dir: str | Path,
                    config: PretrainConfig | None = None, name: str = "pretrain",
                    fresh: bool = False, printer: Callable[[str], None] = print,
                    **legacy: Any) -> tuple[Path, bool]:
    """Runs `pretrain` unless a finished run with the same key is in ``cache_dir``.

    Args:
        dataset: The pretraining records.
        cache_dir: Folder of cached runs (one sub-folder ``NAME-KEY`` per run).
        config: The run's settings (`PretrainConfig`; its defaults when None).
        name: A readable prefix of the run folder, e.g. the objectives.
        fresh: Retrain even when a cached run exists (it is replaced).
        printer: Where the "reusing" / "training" line goes.
        **legacy: Deprecated: keyword arguments of the old `pretrain` signature
            (``steps``, ``image_size``, ``seed``, ...); they override ``config`` and warn.

    Returns:
        ``(run_dir, reused)``: the run folder, and whether it came from the cache.
    """
    if isinstance(config, str):  # the old `config="tiny"` keyword of `pretrain`
        legacy, config = {"config": config, **legacy}, None
    config = resolve_run_config(PretrainConfig, config, legacy, "cached_pretrain",
                                renamed=RENAMED)
    key = pretrain_cache_key(dataset, config)
    run = Path(cache_dir) / f"{name}-{key['key']}"
    key_file = run / KEY_FILE
    if not fresh and key_file.is_file():
        printer(f"      reusing the cached pretraining run {run} (--fresh retrains)")
        return run, True
    if fresh or (run.exists() and not (run / "checkpoints").exists()):
        shutil.rmtree(run, ignore_errors=True)
    pretraining.pretrain(dataset, run, config)
    tmp = key_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(key, indent=1, default=list) + "\n")
    os.replace(tmp, key_file)
    return run, False
