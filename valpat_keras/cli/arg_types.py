"""``type=`` functions for the numeric options: every value is checked while parsing.

argparse prints ``valpat reid: error: argument --batch-size: expected an integer >= 1, got
'0'`` and exits with status 2, before anything is loaded or trained.

Example::

    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--label-smoothing", type=fraction, default=0.0)
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def int_at_least(minimum: int, why: str = "") -> Callable[[str], int]:
    """A type function accepting integers ``>= minimum``.

    Args:
        minimum: The smallest accepted value.
        why: Optional reason appended to the message, e.g. ``"a triplet needs two"``.
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            reason = f" ({why})" if why else ""
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}{reason}, got {text!r}")
        return value

    parse.__name__ = f"int_at_least_{minimum}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def _finite_float(text: str, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates, radii)."""
    value = _finite_float(text, "a number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def positive_float_or_auto(text: str) -> float | str:
    """``"auto"`` or a finite float > 0 (e.g. DBSCAN's radius, read off the data when auto)."""
    return "auto" if text == "auto" else positive_float(text)


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (loss weights, learning-rate multipliers)."""
    value = _finite_float(text, "a number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1) (label smoothing, momentum)."""
    value = _finite_float(text, "a number in [0, 1)")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def unit_interval(text: str) -> float:
    """A number in [0, 1] (difficulty)."""
    value = _finite_float(text, "a number in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def image_size(text: str) -> tuple[int, int]:
    """Parses ``HxW`` (e.g. ``128x64``) into ``(height, width)``, both positive."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HEIGHTxWIDTH, e.g. 128x64; got {text!r}") from None
    if height <= 0 or width <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a positive HEIGHTxWIDTH, e.g. 128x64; got {text!r}")
    return height, width


def weights(names: tuple[str, ...], example: str) -> Callable[[str], dict[str, float]]:
    """A type function for ``NAME=WEIGHT,...`` with NAME among ``names`` and WEIGHT >= 0.

    Args:
        names: The accepted names.
        example: An example value for the message, e.g. ``"itc=1,sdm=1,id=0"``.
    """
    def parse(text: str) -> dict[str, float]:
        result = {}
        for item in (i.strip() for i in text.split(",") if i.strip()):
            name, sep, value = item.partition("=")
            name = name.strip()
            try:
                weight = float(value) if sep and name in names else math.nan
            except ValueError:
                weight = math.nan
            if not math.isfinite(weight) or weight < 0:
                raise argparse.ArgumentTypeError(
                    f"expected NAME=WEIGHT pairs with NAME in {','.join(names)} and WEIGHT a "
                    f"number >= 0, e.g. {example}; got {item!r} in {text!r}")
            result[name] = weight
        if not result:
            raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT pairs, e.g. {example}")
        if not any(result.values()) and set(result) == set(names):
            raise argparse.ArgumentTypeError(
                f"every weight is 0 in {text!r}: at least one objective must stay on")
        return result

    parse.__name__ = "weights"
    return parse
