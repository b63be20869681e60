"""Fixtures writing tiny image files, shared by the loader tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image


def _write_image(path: Path, color: tuple[int, int, int] = (120, 60, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image_format = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.new("RGB", (4, 8), color).save(path, format=image_format)
    return path


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """``write_image(path)`` writes a 4x8 JPEG (or PNG for ``.png``) and returns the path."""
    return _write_image


@pytest.fixture
def write_images() -> Callable[[Path, list[str]], list[Path]]:
    """``write_images(folder, names)`` writes one tiny image per name."""
    return lambda folder, names: [_write_image(Path(folder) / n) for n in names]
