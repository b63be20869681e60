"""Lazy package exports (PEP 562): names resolved from their module on first use.

Packages whose modules import Keras export their names this way, so that importing the package
imports no Keras and the backend can still be chosen afterwards.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str], names: list[str]
                 ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package that exports names lazily.

    Args:
        package: The package's ``__name__``.
        exports: Exported name -> submodule (relative to ``package``) that defines it.
        names: The package's ``__all__``.

    Returns:
        ``(__getattr__, __dir__)`` to assign at the package's module level.
    """

    def __getattr__(name: str) -> object:
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(names) | set(exports))

    return __getattr__, __dir__
