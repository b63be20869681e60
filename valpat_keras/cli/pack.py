"""`valpat pack SRC --out SHARDS`: pack a dataset into TFRecord shards for many parallel readers.

Example:

```
valpat pack luperson_lmdb:/data/LUPerson-NL --out /data/lupnl_shards --shard-size 20000
valpat pack market1501:/data --out /data/market_shards --num-shards 16
valpat pack /data/LUPerson-TA/manifest.jsonl --out /data/lupta_shards
valpat pretrain --data /data/lupta_shards --out runs/r50 --config resnet50
```

``SRC`` is ``NAME:ROOT`` of any registered loader (``valpat datasets`` lists them), or a path:
a LUPerson-TA manifest (or its folder), a LUPerson LMDB tree (``keys.pkl``), a CSV / JSON
Lines manifest (``--kind``), or a folder of images. The images' bytes are copied as stored;
unreadable ones are left out, counted in ``index.json`` and named on stderr. The format is
described in `valpat_keras.data.shards`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from valpat_keras.cli.arg_types import positive_int
from valpat_keras.cli.common import parse_data_spec
from valpat_keras.data.registry import available, load
from valpat_keras.errors import InputError


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Adds the `pack` subcommand."""
    parser = subparsers.add_parser(
        "pack", help="pack a dataset into TFRecord shards (JPEG bytes, captions, labels, ids)",
        description="Pack every record of SRC (NAME:ROOT of a registered loader, a manifest, a "
                    "LUPerson LMDB tree or an image folder) into TFRecord shards with an "
                    "index.json, for parallel readers (valpat pretrain --data SHARDS).")
    parser.add_argument("source", metavar="SRC", help="NAME:ROOT (e.g. market1501:/data) or a "
                                                      "manifest / LMDB tree / image folder")
    parser.add_argument("--out", required=True, metavar="SHARDS", help="shard folder")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--shard-size", type=positive_int, default=None, metavar="N",
                      help="records per shard (default 10000)")
    size.add_argument("--num-shards", type=positive_int, default=None, metavar="N",
                      help="number of shards instead (at least as many as parallel readers)")
    parser.add_argument("--kind", choices=("reid", "attributes", "text"), default=None,
                        help="what a CSV / JSON Lines manifest holds (default reid)")
    parser.add_argument("--no-verify", action="store_true",
                        help="do not decode every image while packing (missing and empty "
                             "files are still left out and counted)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the shards of an earlier pack in SHARDS")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="reading threads (default: Python's choice)")
    parser.set_defaults(run=run)
    return parser


def load_source(source: str, kind: str | None = None):
    """The dataset ``SRC`` names (see the module docstring).

    Raises:
        InputError: An unknown name or a path that does not exist (or the loader's error).
    """
    name, root = parse_data_spec(source) if ":" in source else (source, None)
    if root is not None and name in available():
        return load(name, root, kind=kind)
    path = Path(source)
    if not path.exists():
        raise InputError(f"SRC {source!r}: no such file or folder, and not NAME:ROOT of a "
                         f"registered loader ({', '.join(available())})")
    if (path / "index.json").is_file():
        return load("shards", str(path))
    if (path / "keys.pkl").is_file() or (path / "lupnl_lmdb" / "keys.pkl").is_file():
        return load("luperson_lmdb", str(path))
    if (path / "manifest.jsonl").is_file() or _is_pretrain_manifest(path):
        return load("luperson_ta", str(path))
    if path.is_file() or (path / "manifest.csv").is_file():
        return load("manifest", str(path), kind=kind or "reid")
    return load("image_folder", str(path))


def _is_pretrain_manifest(path: Path) -> bool:
    """Whether ``path`` is a JSON Lines file whose first line is the pretraining header."""
    if not path.is_file() or path.suffix.lower() != ".jsonl":
        return False
    with path.open(encoding="utf-8", errors="replace") as handle:
        return '"valpat-pretrain-v1"' in handle.readline()


def run(args: argparse.Namespace) -> int:
    """Packs ``SRC`` into ``--out``; returns 0.

    Raises:
        InputError: Bad source, options or output folder (printed by `valpat_keras.cli.main`).
    """
    # Imported here: it imports TensorFlow, which must wait until `--backend` is applied.
    from valpat_keras.data.shards import pack

    dataset = load_source(args.source, args.kind)
    report = pack(dataset, args.out, shard_size=args.shard_size, num_shards=args.num_shards,
                  source=args.source, verify=not args.no_verify, overwrite=args.overwrite,
                  workers=args.workers)
    print(report.summary().splitlines()[0])
    if len(report.skipped):
        print(f"valpat pack: warning: {report.skipped.report()} (listed in "
              f"{Path(args.out) / 'index.json'})", file=sys.stderr)
    return 0
