"""`valpat datasets NAME:ROOT [NAME:ROOT ...]`: load datasets and print their summaries.

Without arguments it lists the registered loaders. A format problem in one dataset is printed
as one line and the others are still loaded; the exit status is 2 (bad input) if any failed.
Each summary names what its loader left out and the options it does not use.
"""

from __future__ import annotations

import argparse
import sys

from valpat_keras.cli.arg_types import non_negative_int
from valpat_keras.cli.common import parse_data_spec
from valpat_keras.data.registry import available, get_entry, load
from valpat_keras.errors import InputError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``datasets`` subcommand."""
    parser = subparsers.add_parser(
        "datasets", help="load datasets and print their summaries (or list the loaders)",
        description="Load each NAME:ROOT (e.g. market1501:/data) and print its summary.")
    parser.add_argument("specs", nargs="*", metavar="NAME:ROOT",
                        help="dataset name and folder; no argument lists the loaders")
    parser.add_argument("--split", type=non_negative_int, default=None,
                        help="partition index for PETA / RAP (default 0)")
    parser.add_argument("--kind", choices=("reid", "attributes", "text"), default=None,
                        help="what a manifest/folder dataset holds (default reid)")
    parser.add_argument("--verify-images", action="store_true",
                        help="decode every image (cached); drop and count unreadable images")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Loads and summarises each dataset; returns 0, or 2 if any failed."""
    if not args.specs:
        for name in available():
            entry = get_entry(name)
            print(f"{name:<15} {entry.kind:<12} {entry.description}")
        return 0
    status = 0
    for spec in args.specs:
        try:
            name, root = parse_data_spec(spec)
            if root is None:
                raise ValueError(f"{spec!r}: expected NAME:ROOT, e.g. {name}:/data")
            entry = get_entry(name)
        except (ValueError, KeyError) as err:
            print(f"error: {err.args[0]}", file=sys.stderr)
            status = 2
            continue
        try:
            print(load(entry, root, split=args.split, kind=args.kind,
                       verify_images=args.verify_images or None).summary())
        except InputError as err:
            print(f"error: {name}: {err}", file=sys.stderr)
            status = 2
    return status
