"""Entry point of the `valpat` command.

The global ``--backend`` sets ``KERAS_BACKEND`` before anything imports Keras, so every
subcommand module is imported only after the arguments are parsed. Each subcommand lives
in its own module exposing ``add_parser(subparsers)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

#: Subcommand name -> module under `valpat_keras.cli`.
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "synthped": "synthped",
    "datasets": "datasets",
    "attributes": "attributes",
    "search": "search",
    "reid": "reid",
    "evaluate": "evaluate",
    "pretrain": "pretrain",
}

BACKENDS = ("tensorflow", "jax", "torch")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (imports each subcommand module, but not Keras)."""
    parser = argparse.ArgumentParser(
        prog="valpat",
        description="VAL-PAT pedestrian representation pretraining and transfer (Keras 3).")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="Keras backend (sets KERAS_BACKEND; default: the environment's).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS.values():
        importlib.import_module(f"valpat_keras.cli.{module}").add_parser(sub)
    return parser


def _preparse_backend(argv: list[str]) -> None:
    # Set the backend from argv before any subcommand module can import Keras.
    for i, arg in enumerate(argv):
        value = None
        if arg == "--backend" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--backend="):
            value = arg.split("=", 1)[1]
        if value in BACKENDS:
            os.environ["KERAS_BACKEND"] = value
            return


def main(argv: list[str] | None = None) -> int:
    """Runs the `valpat` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _preparse_backend(argv)
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
