"""`valpat index`: embed a folder of person crops once, for `valpat query`.

Example::

    valpat index --images my_crops/ --init runs/pretrain --out my_index
    valpat index --images gallery.csv --init runs/reid --text-from runs/search --out my_index

Writes INDEX/index.json (the manifest), paths.json, features.npy and, when the run (or
--text-from / --attributes-from) provides them, text_features.npy and attributes.npy; the
unreadable images are left out, counted and listed in INDEX/skipped.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from valpat_keras.cli.arg_types import positive_int

ANN_CHOICES = ("faiss",)
#: Unreadable images named in the output (all are in INDEX/skipped.json).
SHOWN_SKIPPED = 5


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``index`` subcommand."""
    parser = subparsers.add_parser(
        "index", help="embed a folder of person images for image / sentence / attribute "
                      "queries",
        description="Embed an image folder (searched recursively) or a manifest (.csv with a "
                    "'path' column, or .jsonl) with a run's models into an index folder that "
                    "`valpat query` searches by image, sentence and attributes.")
    parser.add_argument("--images", required=True, metavar="DIR_OR_MANIFEST",
                        help="image folder (recursive) or manifest file")
    parser.add_argument("--init", required=True, metavar="RUN_DIR",
                        help="run folder of `valpat pretrain`, `reid`, `attributes` or "
                             "`search` whose models embed the gallery and the queries")
    parser.add_argument("--out", required=True, metavar="INDEX", help="index folder to write")
    parser.add_argument("--text-from", default=None, metavar="RUN_DIR",
                        help="pretraining or search run adding the sentence space (default: "
                             "--init's, if it has one)")
    parser.add_argument("--attributes-from", default=None, metavar="RUN_DIR",
                        help="attributes run (or pretraining run with attributes) adding "
                             "attribute probabilities (default: --init's, if it has them)")
    parser.add_argument("--batch-size", type=positive_int, default=64,
                        help="images per forward pass (default 64)")
    parser.add_argument("--ann", choices=ANN_CHOICES, default=None,
                        help="also store an approximate nearest-neighbour graph (faiss HNSW)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Builds the index and prints what it holds; returns 0.

    Raises:
        InputError: No readable image, or a run folder without the asked space
            (`valpat_keras.cli.main` prints it, exit status 2).
    """
    # Imported here: the index embeds with Keras, which must load after --backend is set.
    from valpat_keras.serving.index import SKIPPED_FILE, PersonIndex

    index = PersonIndex.build(args.images, args.init, args.out, text_from=args.text_from,
                              attributes_from=args.attributes_from,
                              batch_size=args.batch_size, ann=args.ann)
    manifest = index.manifest
    print(f"indexed {len(index)} images into {args.out} ({manifest['run_kind']} run, "
          f"{manifest['embedding_dim']}-d image features); queries: "
          f"{', '.join(index.query_kinds)}")
    if manifest["skipped"]:
        print(f"skipped {manifest['skipped']} unreadable image(s), listed in "
              f"{args.out}/{SKIPPED_FILE}:")
        skipped = json.loads((Path(args.out) / SKIPPED_FILE).read_text(encoding="utf-8"))
        for image in skipped["images"][:SHOWN_SKIPPED]:
            print(f"  {image['path']}: {image['reason']}")
        if manifest["skipped"] > SHOWN_SKIPPED:
            print(f"  ... and {manifest['skipped'] - SHOWN_SKIPPED} more")
    calibration = manifest["verification"]
    if calibration:
        print(f"verification threshold {calibration['threshold']:.4f} (cosine, from "
              f"{args.init})")
    return 0
