"""`valpat query`: search an index by image, sentence and attributes, in one query.

Example::

    valpat query my_index --image query.jpg
    valpat query my_index --text "a woman in a red coat with a backpack" --plot top.png
    valpat query my_index --attributes "Female,Backpack,-Hat" --json hits.json
    valpat query my_index --image q.jpg --text "carrying a backpack" --attributes=-Hat

The parts combine as ``score = w_image * cos_image + w_text * cos_text + w_attributes *
mean log p(attributes)`` (``--weights``); in the default ``--attribute-mode filter`` the
entries that fail a queried attribute are not returned. With a verification threshold (the
run's calibrated one, or ``--threshold``) the output says "match" or "no match". Prints the
result as JSON (or writes it to --json and prints a table).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from valpat_keras.cli.arg_types import positive_int, weights

ATTRIBUTE_MODES = ("filter", "score")
ANN_CHOICES = ("faiss",)


def cosine_threshold(text: str) -> float:
    """A type function for a cosine-similarity threshold: a number in [-1, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a cosine similarity between -1 and 1, got {text!r}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``query`` subcommand."""
    parser = subparsers.add_parser(
        "query", help="search an index by image, sentence and attributes",
        description="Rank the gallery of a `valpat index` folder for a query image, a "
                    "sentence and attributes (any combination), with a match / no match "
                    "verdict from the verification threshold.")
    parser.add_argument("index", metavar="INDEX", help="index folder (`valpat index --out`)")
    parser.add_argument("--image", default=None, metavar="Q.jpg", help="query image")
    parser.add_argument("--text", default=None, metavar="SENTENCE", help="query sentence")
    parser.add_argument("--attributes", default=None, metavar="A,B,-C",
                        help="wanted attributes, -name for unwanted (e.g. Female,Backpack,-Hat; "
                             "write --attributes=-Hat when the value starts with -)")
    parser.add_argument("-k", "--top-k", dest="k", type=positive_int, default=10,
                        help="number of results (default 10)")
    parser.add_argument("--weights", type=weights(("image", "text", "attributes"),
                                                  "image=1,text=0.5"),
                        default=None, metavar="image=1,text=1,attributes=1",
                        help="weight of each query part in the score (each 1 unless given)")
    parser.add_argument("--attribute-mode", choices=ATTRIBUTE_MODES, default="filter",
                        help="filter: return only entries with every queried attribute "
                             "(default); score: only add the log-probability term")
    parser.add_argument("--rerank", action="store_true",
                        help="k-reciprocal re-ranking of the image part over the best "
                             "--rerank-candidates")
    parser.add_argument("--rerank-candidates", type=positive_int, default=100,
                        help="candidates re-ranked with --rerank (default 100)")
    parser.add_argument("--threshold", type=cosine_threshold, default=None,
                        help="verification threshold on the cosine similarity (default: the "
                             "run's calibrated one, for image queries)")
    parser.add_argument("--ann", choices=ANN_CHOICES, default=None,
                        help="approximate search (faiss HNSW) instead of the exact one")
    parser.add_argument("--init", default=None, metavar="RUN_DIR",
                        help="embed the query with this run instead of the index's")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="write the JSON result here (default: print it)")
    parser.add_argument("--plot", default=None, metavar="FILE",
                        help="save a picture of the query and its top k")
    parser.set_defaults(run=run)


def _print_table(result) -> None:
    print(f"{len(result.hits)} of {result.num_candidates} candidates ({result.search}"
          f"{', re-ranked' if result.rerank else ''})"
          + (f"; verdict: {result.verdict} (threshold {result.threshold:.4f})"
             if result.verdict else ""))
    for hit in result.hits:
        match = "" if hit.match is None else ("  match" if hit.match else "  -")
        print(f"{hit.rank:4d}  {hit.score:8.4f}  {hit.path}{match}")


def run(args: argparse.Namespace) -> int:
    """Runs the query and prints (or writes) the result; returns 0.

    Raises:
        InputError: A bad index, query image, attribute name or combination
            (`valpat_keras.cli.main` prints it, exit status 2).
    """
    # Imported here: queries embed with Keras, which must load after --backend is set.
    from valpat_keras.serving.index import PersonIndex
    from valpat_keras.serving.query import plot_query_result

    index = PersonIndex.load(args.index, init=args.init)
    result = index.query(image=args.image, text=args.text, attributes=args.attributes,
                         k=args.k, weights=args.weights, attribute_mode=args.attribute_mode,
                         rerank=args.rerank, rerank_candidates=args.rerank_candidates,
                         threshold=args.threshold, ann=args.ann)
    payload = {"index": str(args.index), **result.to_dict()}
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        _print_table(result)
        print(f"wrote {args.json}")
    else:
        json.dump(payload, sys.stdout, indent=2)
        print()
    if args.plot:
        plot_query_result(result, args.plot, topk=args.k)
        if args.json:
            print(f"wrote {args.plot}")
    return 0
