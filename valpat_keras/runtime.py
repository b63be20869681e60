"""Runtime settings every training command shares: mixed precision and data parallelism.

This module imports no Keras, so a command can add the flags (`add_runtime_arguments`) and
check the values (`check_runtime_settings`) before the backend is chosen. What the settings do
during a run is `valpat_keras.distribute` (`runtime_scope`).

Each run config (`PretrainConfig`, `ReIDRunConfig`, `AttributesRunConfig`,
`SearchRunConfig`) has the three fields of `RUNTIME_FIELDS`:

- ``mixed_precision``: None, ``"mixed_bfloat16"`` or ``"mixed_float16"`` (the global Keras
  dtype policy during the run; losses are computed in float32);
- ``distribute``: None or ``"data"`` (`keras.distribution.DataParallel`, JAX only);
- ``devices``: how many devices ``"data"`` uses (None: all of them, on every host).

Example::

    add_runtime_arguments(parser)           # --mixed-precision, --distribute, --devices
    config = ReIDRunConfig(..., **runtime_fields(args))
"""

from __future__ import annotations

import argparse
from typing import Any

from valpat_keras.errors import InputError

__all__ = ["DISTRIBUTE_CHOICES", "MIXED_PRECISION_CHOICES", "RUNTIME_FIELDS",
           "add_runtime_arguments", "check_runtime_settings", "runtime_fields"]

#: The distribution strategies ``--distribute`` accepts.
DISTRIBUTE_CHOICES: tuple[str, ...] = ("data",)
#: The dtype policies ``--mixed-precision`` accepts.
MIXED_PRECISION_CHOICES: tuple[str, ...] = ("mixed_bfloat16", "mixed_float16")
#: The run-config fields of this module (on every training run config).
RUNTIME_FIELDS: tuple[str, ...] = ("mixed_precision", "distribute", "devices")


def check_runtime_settings(mixed_precision: str | None, distribute: str | None,
                           devices: int | None) -> None:
    """Checks the runtime fields of a run config (no backend needed).

    Raises:
        InputError: An unknown policy or strategy, a device count below 1, or ``devices``
            without ``distribute`` (named by field).
    """
    if mixed_precision is not None and mixed_precision not in MIXED_PRECISION_CHOICES:
        raise InputError(f"mixed_precision: expected one of {list(MIXED_PRECISION_CHOICES)} "
                         f"or None, got {mixed_precision!r}")
    if distribute is not None and distribute not in DISTRIBUTE_CHOICES:
        raise InputError(f"distribute: expected one of {list(DISTRIBUTE_CHOICES)} or None, "
                         f"got {distribute!r}")
    if devices is not None:
        if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
            raise InputError(f"devices: expected a positive integer, got {devices!r}")
        if distribute is None:
            raise InputError(f"devices={devices} needs distribute='data' (--distribute data): "
                             "without a distribution a run uses one device")


def _device_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--mixed-precision``, ``--distribute`` and ``--devices`` to a command."""
    parser.add_argument("--mixed-precision", nargs="?", const="mixed_bfloat16", default=None,
                        choices=MIXED_PRECISION_CHOICES,
                        help="mixed precision policy (flag alone: mixed_bfloat16); losses "
                             "stay float32")
    parser.add_argument("--distribute", choices=DISTRIBUTE_CHOICES, default=None,
                        help="data: data parallelism with keras.distribution.DataParallel "
                             "(JAX backend only; the batch size is the global batch, split "
                             "over the devices; several hosts: see tutorials/distributed.md)")
    parser.add_argument("--devices", type=_device_count, default=None, metavar="N",
                        help="devices --distribute data uses (default: all)")


def runtime_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The `RUNTIME_FIELDS` of parsed arguments, as run-config keywords.

    Raises:
        InputError: ``--devices`` without ``--distribute``.
    """
    fields = {name: getattr(args, name, None) for name in RUNTIME_FIELDS}
    if fields["devices"] is not None and fields["distribute"] is None:
        raise InputError(f"--devices {fields['devices']} needs --distribute data")
    return fields
