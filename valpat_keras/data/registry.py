"""A registry of dataset loaders, so users add their own with a decorator.

Example:

```python
from valpat_keras import datasets

@datasets.register_dataset("my_reid", kind="reid")
def load_my_reid(root, **kwargs):
    ...
    return datasets.ReIDDataset("my_reid", root, train, query, gallery)

data = datasets.load("my_reid", "/data/my_reid")
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

KINDS = ("reid", "attributes", "text", "pretraining")


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """A registered loader.

    Attributes:
        name: The name passed to `load`.
        kind: One of ``reid``, ``attributes``, ``text``, ``pretraining``.
        loader: ``loader(root, **kwargs)`` returning the dataset object.
        description: First docstring line of the loader.
    """

    name: str
    kind: str
    loader: Callable[..., Any]
    description: str


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(name: str, kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``loader(root, **kwargs)`` under ``name``.

    Args:
        name: The dataset name used with `load` (lower case, e.g. ``"market1501"``).
        kind: ``"reid"``, ``"attributes"``, ``"text"`` or ``"pretraining"``.

    Returns:
        The decorator; it returns the loader unchanged.
    """
    if kind not in KINDS:
        raise ValueError(f"register_dataset: kind must be one of {KINDS}, got {kind!r}")

    def decorator(loader: Callable[..., Any]) -> Callable[..., Any]:
        doc = (loader.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = DatasetEntry(name, kind, loader, doc[0] if doc else "")
        return loader

    return decorator


def available(kind: str | None = None) -> list[str]:
    """Names of the registered datasets, optionally only those of one kind."""
    _ensure_builtin_loaders()
    return sorted(n for n, e in _REGISTRY.items() if kind is None or e.kind == kind)


def get_entry(name: str) -> DatasetEntry:
    """The registry entry of ``name``; raises `KeyError` listing the known names."""
    _ensure_builtin_loaders()
    if name not in _REGISTRY:
        raise KeyError(f"unknown dataset {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def load(name: str, root: str | Path, **kwargs: Any) -> Any:
    """Loads a registered dataset.

    Args:
        name: A registered name (see `available`), e.g. ``"market1501"``.
        root: The dataset's folder or its parent (loaders find the layout).
        **kwargs: Loader options (e.g. ``split=0`` for PETA/RAP).

    Returns:
        A `ReIDDataset`, `AttributeDataset`, `TextDataset` or `PretrainDataset`.
    """
    return get_entry(name).loader(str(root), **kwargs)


def _ensure_builtin_loaders() -> None:
    # Importing the loader modules registers them; done lazily to keep imports cheap.
    from valpat_keras.data import loaders  # noqa: F401
