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

The registry owns loader options: `load` passes a loader the options it takes, checks a
``kind`` option against the loader's kind, and records every other option on the dataset
(``ignored_options``, printed by ``summary()``) instead of failing or dropping it silently.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from valpat_keras.errors import InputError

__all__ = ["KINDS", "DatasetEntry", "available", "get_entry", "load", "note_ignored_options",
           "register_dataset"]

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


def load(name: str | DatasetEntry, root: str | Path, **options: Any) -> Any:
    """Loads a registered dataset, passing the loader the options it takes.

    ``None`` values are no option (a command's unset flag). ``kind`` is checked against the
    loader's kind unless the loader reads several kinds itself (``manifest`` takes a ``kind``
    argument). Options the loader does not take are not an error: they are recorded in the
    dataset's ``ignored_options`` and named by its ``summary()``.

    Args:
        name: A registered name (see `available`), e.g. ``"market1501"``, or its
            `DatasetEntry` (e.g. from `get_entry`).
        root: The dataset's folder or its parent (loaders find the layout).
        **options: Loader options (e.g. ``split=0`` for PETA/RAP, ``verify_images=True``).

    Returns:
        A `ReIDDataset`, `AttributeDataset`, `TextDataset` or `PretrainDataset`.

    Raises:
        KeyError: An unknown name.
        InputError: A ``kind`` other than the loader's.
    """
    entry = name if isinstance(name, DatasetEntry) else get_entry(name)
    options = {k: v for k, v in options.items() if v is not None}
    named, takes_any = _parameters(entry.loader)
    if "kind" in options and "kind" not in named:
        kind = options.pop("kind")
        if kind != entry.kind:
            others = ", ".join(available(kind)) if kind in KINDS else "none"
            raise InputError(f"{entry.name} is a dataset of kind {entry.kind!r}, not {kind!r} "
                             f"(loaders of kind {kind!r}: {others})")
    passed = {k: v for k, v in options.items() if k in named or takes_any}
    dataset = entry.loader(str(root), **passed)
    return note_ignored_options(dataset, {k: v for k, v in options.items() if k not in passed})


def note_ignored_options(dataset: Any, options: dict[str, Any]) -> Any:
    """Records options a loader does not use on the dataset (named by its ``summary()``).

    Loaders taking ``**options`` call it with what they did not use; `load` calls it for
    loaders that take no ``**options``.

    Args:
        dataset: The loaded dataset; one without an ``ignored_options`` mapping (a user's own
            type) is returned unchanged.
        options: The options not used (``None`` values are no option).

    Returns:
        ``dataset``.
    """
    ignored = {k: v for k, v in options.items() if v is not None}
    if ignored and isinstance(getattr(dataset, "ignored_options", None), dict):
        dataset.ignored_options.update(ignored)
    return dataset


def _parameters(loader: Callable[..., Any]) -> tuple[set[str], bool]:
    """The option names a loader takes after ``root``, and whether it takes ``**options``."""
    params = list(inspect.signature(loader).parameters.values())[1:]
    named = {p.name for p in params
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return named, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _ensure_builtin_loaders() -> None:
    # Importing the loader modules registers them; done lazily to keep imports cheap.
    from valpat_keras.data import loaders  # noqa: F401
