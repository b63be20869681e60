"""Arguments shared by the transfer subcommands (`valpat attributes`, `valpat search`).

``--data NAME:ROOT`` names a registered dataset; ``--data synthped[:DIR]`` generates a SynthPed
set (into DIR, or ``RUN_DIR/synthped``) and reads the layout the command needs from it.
``--init RUN_DIR | --init-preset NAME | --random-init`` choose the starting weights.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path


def parse_image_size(text: str) -> tuple[int, int]:
    """Parses ``HxW`` (e.g. ``128x64``) into ``(height, width)``."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH, e.g. 128x64; got {text!r}")
    if height <= 0 or width <= 0:
        raise argparse.ArgumentTypeError(f"image size must be positive, got {text!r}")
    return height, width


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
    parser.add_argument("--epochs", type=int, default=default_epochs,
                        help=f"training epochs (default {default_epochs})")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="cap on training steps per epoch (default: one pass)")
    parser.add_argument("--config", default="tiny",
                        help="encoder configuration for random init (tiny, resnet18, resnet50, "
                             "vit_tiny, vit_small; default tiny)")
    parser.add_argument("--image-size", type=parse_image_size, default=None, metavar="HxW",
                        help="input size, e.g. 256x128")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--synthped-preset", default="tiny",
                        help="SynthPed size preset for --data synthped (default tiny)")


def init_of(args: argparse.Namespace) -> str:
    """The ``init`` argument of the training functions from --init / --init-preset."""
    return args.init or args.init_preset or "random"


def load_dataset(args: argparse.Namespace, synthped_layout: str, **options):
    """Loads ``--data``; for ``synthped[:DIR]`` generates SynthPed and loads ``synthped_layout``.

    Args:
        args: Parsed arguments (``data``, ``out``, ``seed``, ``synthped_preset``).
        synthped_layout: The loader that reads the generated set (``"pa100k"`` or
            ``"cuhk_pedes"``).
        **options: Loader options (e.g. ``split``), passed when the loader accepts them.
            A user's data (not generated SynthPed) is loaded with ``verify_images=True``.
    """
    from valpat_keras.cli.common import parse_data_spec
    from valpat_keras.data.registry import get_entry

    name, root = parse_data_spec(args.data)
    if name == "synthped":
        from valpat_keras.data.synthped import SynthPedConfig, write_synthped

        root = root or str(Path(args.out) / "synthped")
        if not (Path(root) / "synthped.json").is_file():
            config = SynthPedConfig.preset(args.synthped_preset, seed=args.seed)
            print(f"generating SynthPed ({args.synthped_preset}) into {root}")
            write_synthped(root, config)
        name = synthped_layout
    elif root is None:
        raise ValueError(f"--data {args.data!r}: expected NAME:ROOT, e.g. {name}:/data")
    else:
        # A user's files: read every header now, so an unreadable image is counted and
        # reported before training rather than failing inside the input pipeline later.
        options.setdefault("verify_images", True)
    entry = get_entry(name)
    accepted = inspect.signature(entry.loader).parameters
    kwargs = {k: v for k, v in options.items() if v is not None and k in accepted}
    return entry.loader(root, **kwargs)

