"""Arguments shared by the transfer subcommands (`valpat attributes`, `valpat search`).

``--data NAME:ROOT`` names a registered dataset; ``--data synthped[:DIR]`` generates a SynthPed
set (into DIR, or ``RUN_DIR/synthped``) and reads the layout the command needs from it.
``--init RUN_DIR | --init-preset NAME | --random-init`` choose the starting weights.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

from valpat_keras.cli.arg_types import image_size as parse_image_size
from valpat_keras.cli.arg_types import (
    non_negative_int,
    positive_float,
    positive_int,
)
from valpat_keras.errors import InputError

#: What each transfer command reads, as a registry kind.
COMMAND_KINDS = {"reid": "reid", "evaluate": "reid", "attributes": "attributes",
                 "search": "text"}
#: Loaders that read any kind (given by their ``kind`` option).
ANY_KIND_LOADERS = ("manifest", "folder")


def add_common_arguments(parser: argparse.ArgumentParser, default_epochs: int) -> None:
    """Adds --data, --out, the init choice and the training options."""
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
    parser.add_argument("--synthped-preset", default="tiny",
                        help="SynthPed size preset for --data synthped (default tiny)")


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
    from valpat_keras.cli.common import parse_data_spec
    from valpat_keras.data.registry import available, get_entry

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
    """Loads ``--data``; for ``synthped[:DIR]`` generates SynthPed and loads ``synthped_layout``.

    The loader's kind is checked first (`dataset_entry`), so ``valpat reid --data pa100k:...``
    fails with one line naming the loaders ``reid`` reads.

    Args:
        args: Parsed arguments (``data``, ``out``, ``seed``, ``synthped_preset``).
        synthped_layout: The loader that reads the generated set (``"pa100k"`` or
            ``"cuhk_pedes"``).
        **options: Loader options (e.g. ``split``), passed when the loader accepts them.
            A user's data (not generated SynthPed) is loaded with ``verify_images=True``.
    """
    from valpat_keras.data.registry import get_entry

    entry, root = dataset_entry(args.data, args.command)
    if entry is None:
        from valpat_keras.data.synthped import SynthPedConfig, write_synthped

        root = root or str(Path(args.out) / "synthped")
        if not (Path(root) / "synthped.json").is_file():
            config = SynthPedConfig.preset(args.synthped_preset, seed=args.seed)
            print(f"generating SynthPed ({args.synthped_preset}) into {root}")
            write_synthped(root, config)
        entry = get_entry(synthped_layout)
    else:
        # A user's files: decode every image now (once, cached), so an unreadable one is
        # counted and reported before training rather than failing inside `fit` later.
        options.setdefault("verify_images", True)
    options.setdefault("kind", COMMAND_KINDS[args.command])
    accepted = inspect.signature(entry.loader).parameters
    kwargs = {k: v for k, v in options.items() if v is not None and k in accepted}
    return entry.loader(root, **kwargs)

