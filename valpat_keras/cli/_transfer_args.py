"""Arguments shared by the transfer subcommands (`valpat reid`, `attributes`, `search`, `evaluate`).

``--data NAME:ROOT`` names a registered dataset; ``--data synthped[:DIR]`` reads the layout the
command needs from a SynthPed set: DIR as it is when it holds one, else one generated (by
`ensure_synthped`, reused while its config is unchanged) into DIR or ``RUN_DIR/synthped``.
``--init RUN_DIR | --init-preset NAME | --random-init`` choose the starting weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from valpat_keras.cli.arg_types import image_size as parse_image_size
from valpat_keras.cli.arg_types import (
    non_negative_int,
    positive_float,
    positive_int,
)
from valpat_keras.cli.common import parse_data_spec
from valpat_keras.data.registry import available, get_entry
from valpat_keras.data.registry import load as load_registered
from valpat_keras.errors import InputError
from valpat_keras.runtime import add_runtime_arguments

#: What each transfer command reads, as a registry kind.
COMMAND_KINDS = {"reid": "reid", "evaluate": "reid", "attributes": "attributes",
                 "search": "text"}
#: Loaders that read any kind (given by their ``kind`` option).
ANY_KIND_LOADERS = ("manifest", "folder", "shards")


def add_common_arguments(parser: argparse.ArgumentParser, default_epochs: int) -> None:
    """Adds --data, --out, the init choice, the training and the runtime options."""
    parser.add_argument("--data", required=True, metavar="NAME:ROOT",
                        help="dataset name and folder (e.g. pa100k:/data), or synthped[:DIR] to "
                             "generate a SynthPed set")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="output folder")
    init = parser.add_mutually_exclusive_group()
    init.add_argument("--init", metavar="RUN_DIR",
                      help="start from a VAL-PAT pretraining run folder")
    init.add_argument("--init-preset", metavar="NAME",
                      help="start from a preset folder or a keras-hub preset name")
    init.add_argument("--random-init", action="store_true",
                      help="start from random weights (the default)")
    parser.add_argument("--epochs", type=positive_int, default=default_epochs,
                        help=f"training epochs (default {default_epochs})")
    parser.add_argument("--steps-per-epoch", type=positive_int, default=None,
                        help="cap on training steps per epoch (default: one pass)")
    parser.add_argument("--config", default="tiny",
                        help="encoder configuration for random init (tiny, resnet18, resnet50, "
                             "vit_tiny, vit_small; default tiny)")
    parser.add_argument("--image-size", type=parse_image_size, default=None, metavar="HxW",
                        help="input size, e.g. 256x128")
    parser.add_argument("--batch-size", type=positive_int, default=32,
                        help="batch size (default 32)")
    parser.add_argument("--lr", type=positive_float, default=None, help="peak learning rate")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="random seed (default 0)")
    parser.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="STEPS",
                        help="write a step checkpoint to RUN_DIR/checkpoints every STEPS "
                             "optimiser steps (default: every 10 minutes, and at each epoch "
                             "end); rerunning the same command resumes exactly")
    parser.add_argument("--synthped-preset", default="tiny",
                        help="SynthPed size preset for --data synthped (default tiny)")
    add_runtime_arguments(parser)  # --mixed-precision, --distribute, --devices


def init_of(args: argparse.Namespace) -> str:
    """The ``init`` argument of the training functions from --init / --init-preset."""
    return args.init or args.init_preset or "random"


def dataset_entry(spec: str, command: str):
    """The registry entry and root of ``--data NAME:ROOT``, checked against the command.

    Args:
        spec: The ``--data`` value.
        command: The subcommand (a key of `COMMAND_KINDS`).

    Returns:
        ``(entry, root)``; ``root`` is None for a bare ``synthped``.

    Raises:
        InputError: No root, an unknown name, or a loader of another kind (the message names
            --data, the loader and the loaders the command accepts).
    """
    name, root = parse_data_spec(spec)
    if name == "synthped":
        return None, root
    if root is None:
        raise InputError(f"--data {spec!r}: expected NAME:ROOT, e.g. {name}:/data")
    if name not in available():
        raise InputError(f"--data {spec!r}: unknown dataset {name!r}; available: "
                         f"{', '.join(available())}")
    entry = get_entry(name)
    kind = COMMAND_KINDS[command]
    if entry.kind != kind and name not in ANY_KIND_LOADERS:
        accepted = [n for n in available(kind) if n not in ANY_KIND_LOADERS]
        raise InputError(
            f"--data {spec!r}: {name} is a {entry.kind} dataset, but valpat {command} reads "
            f"{kind} datasets: {', '.join(accepted)}, or manifest / folder (your own data)")
    return entry, root


def require_splits(dataset, splits: tuple[str, ...], spec: str) -> None:
    """Raises an `InputError` naming the split and folder if a split is empty.

    Args:
        dataset: The loaded dataset.
        splits: The split attributes that must hold records (e.g. ``("query", "gallery")``).
        spec: The ``--data`` value, for the message.
    """
    for split in splits:
        if getattr(dataset, split):
            continue
        dropped = [f"{count} {reason}" for reason, count in dataset.skipped.items()
                   if split in reason]
        why = f" after dropping {', '.join(dropped)}" if dropped else ""
        raise InputError(f"--data {spec!r}: the {split} split of {dataset.name} "
                         f"({dataset.root}) is empty{why}; expected at least one readable "
                         f"{split} image")


def load_dataset(args: argparse.Namespace, synthped_layout: str, **options):
    """Loads ``--data``; for ``synthped[:DIR]`` reads ``synthped_layout`` of a SynthPed set.

    The loader's kind is checked first (`dataset_entry`), so ``valpat reid --data pa100k:...``
    fails with one line naming the loaders ``reid`` reads. A user's data (not SynthPed) is
    loaded with ``verify_images=True``: every image is decoded once (cached) so an unreadable
    one is counted and reported before training or evaluation, not inside ``fit``.

    Args:
        args: Parsed arguments: ``data``, ``out``, ``command`` (a key of `COMMAND_KINDS`;
            ``evaluate`` reads re-ID data) and, when the command has them, ``seed`` and
            ``synthped_preset`` (default ``0`` and ``"tiny"``).
        synthped_layout: The loader that reads the SynthPed set (``"market1501"``,
            ``"pa100k"`` or ``"cuhk_pedes"``).
        **options: Loader options (e.g. ``split``); the registry passes those the loader
            takes and the dataset's summary names the others (`registry.load`).

    Raises:
        InputError: A bad ``--data``, a folder SynthPed cannot write into, or bad data.
    """
    entry, root = dataset_entry(args.data, args.command)
    if entry is None:
        root = _synthped_root(args, root)
        entry = get_entry(synthped_layout)
    else:
        options.setdefault("verify_images", True)
    options.setdefault("kind", COMMAND_KINDS[args.command])
    return load_registered(entry, root, **options)


def _synthped_root(args: argparse.Namespace, root: str | None) -> str:
    """``DIR`` when it holds a SynthPed set (any config); else one generated there."""
    # Deferred: SynthPed rendering is only needed for --data synthped, not at parse time.
    from valpat_keras.data.synthped import SynthPedConfig, ensure_synthped

    if root is not None and (Path(root) / "synthped.json").is_file():
        return root  # a set the user wrote (`valpat synthped DIR`): read as it is
    config = SynthPedConfig.preset(getattr(args, "synthped_preset", "tiny"),
                                   seed=getattr(args, "seed", 0))
    try:
        return ensure_synthped(root or Path(args.out) / "synthped", config).root
    except FileExistsError as error:
        raise InputError(f"--data {args.data!r}: {error}") from None
