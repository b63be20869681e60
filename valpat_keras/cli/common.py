"""Helpers shared by the subcommands."""

from __future__ import annotations

from valpat_keras.run_outputs import write_json

__all__ = ["parse_data_spec", "write_json"]


def parse_data_spec(spec: str) -> tuple[str, str | None]:
    """Splits ``NAME:ROOT`` (or a bare ``NAME``) into the name and the root.

    Raises:
        ValueError: When the name part is empty.
    """
    name, sep, root = spec.partition(":")
    if not name:
        raise ValueError(f"--data {spec!r}: expected NAME:ROOT, e.g. market1501:/data")
    return name, (root or None) if sep else None
