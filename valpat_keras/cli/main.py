"""Entry point of the `valpat` command.

The global ``--backend`` sets ``KERAS_BACKEND`` before anything imports Keras, so every
subcommand module is imported only after the arguments are parsed. Each subcommand lives
in its own module exposing ``add_parser(subparsers)`` and ``run(args) -> int``.

Errors take one path: a bad option is refused while parsing (argparse, exit status 2); bad
input found later (`valpat_keras.errors.InputError`, which `DatasetFormatError` is, or a
missing file) is one line ``valpat COMMAND: error: ...`` on stderr and exit status 2; a loss
that became NaN or infinite (`NonFiniteLossError`) is one line and exit status 3. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from valpat_keras.cli.recipe_args import apply_recipe
from valpat_keras.data.errors import decode_failure_from
from valpat_keras.errors import InputError, NonFiniteLossError
from valpat_keras.quiet import quiet_frameworks

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
    "pack": "pack",
    "index": "index",
    "query": "query",
    "export": "export",
}

BACKENDS = ("tensorflow", "jax", "torch")

#: Exit status for bad input (the same as argparse's for a bad option).
EXIT_BAD_INPUT = 2
#: Exit status when training stopped on a NaN or infinite loss.
EXIT_NON_FINITE_LOSS = 3


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
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_frameworks()
    try:
        # --recipe / --config-file: the file's values become the flags' defaults.
        args = apply_recipe(parser, argv, args)
        return int(args.run(args) or 0)
    except (InputError, FileNotFoundError) as error:
        print(f"valpat {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NonFiniteLossError as error:
        print(f"valpat {args.command}: error: {error}", file=sys.stderr)
        return EXIT_NON_FINITE_LOSS
    except Exception as error:
        # An image that passed the check but fails to decode inside a tf.data pipeline ends
        # as a TensorFlow error naming the file: one line and exit 2. Anything else is a bug
        # and keeps its traceback.
        failure = decode_failure_from(error)
        if failure is None:
            raise
        print(f"valpat {args.command}: error: {failure}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
