"""`valpat evaluate`: score an encoder on a re-ID query / gallery split, without training.

Example::

    valpat evaluate --data market1501:/data --init runs/reid --out runs/eval --rerank
    valpat evaluate --data market1501:/data --init runs/pretrain --out runs/eval_frozen

``--init`` is anything the transfer commands accept: a `valpat reid` run folder (its
``reid_model.keras`` BNNeck embedding is used), a pretraining run folder or preset folder
(the pooled image-encoder feature), a keras-hub preset name, or ``random``. Prints a results
table and writes RUN_DIR/metrics.json, ranked_results.png and cmc.png.
"""

from __future__ import annotations

import argparse
import inspect
import zipfile
from pathlib import Path

from valpat_keras.cli._transfer_args import dataset_entry, require_splits
from valpat_keras.cli.arg_types import image_size, positive_int
from valpat_keras.errors import InputError

_TABLE_KEYS = ("rank1", "rank5", "rank10", "mAP", "mINP")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate", help="evaluate an encoder on a re-ID query/gallery split",
        description="Extract features of the query and gallery images with a trained or "
                    "pretrained encoder and report CMC rank-1/5/10, mAP and mINP (Market-1501 "
                    "protocol), optionally after k-reciprocal re-ranking.")
    parser.add_argument("--data", required=True, metavar="NAME:ROOT",
                        help="re-ID dataset (market1501, dukemtmc_reid, occluded_duke, msmt17, "
                             "manifest) and its folder")
    parser.add_argument("--init", default="random", metavar="RUN_DIR|PRESET",
                        help="a valpat reid / pretrain run folder, a preset folder or name, or "
                             "'random' (default)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--config", default="tiny",
                        help="encoder configuration when --init random (default tiny)")
    parser.add_argument("--image-size", type=image_size, default=(256, 128),
                        metavar="HxW", help="input size (default 256x128)")
    parser.add_argument("--batch-size", type=positive_int, default=64,
                        help="images per forward pass (default 64)")
    parser.add_argument("--rerank", action="store_true",
                        help="also report k-reciprocal re-ranked scores")
    parser.set_defaults(run=run)


def format_table(metrics: dict) -> str:
    """A two- or three-row text table of the headline metrics (percent)."""
    rows = [("", *_TABLE_KEYS), ("plain", *(f"{100 * metrics[k]:.1f}" for k in _TABLE_KEYS))]
    if "rerank" in metrics:
        rows.append(("re-ranked", *(f"{100 * metrics['rerank'][k]:.1f}" for k in _TABLE_KEYS)))
    return "\n".join("".join(f"{cell:>11}" for cell in row) for row in rows)


def _embedding_model(init: str, config: str, image_size: tuple[int, int]):
    import keras

    from valpat_keras.models.init import load_image_encoder
    from valpat_keras.tasks.reid_training import MODEL_FILE

    reid_model = Path(init) / MODEL_FILE
    if reid_model.is_file():
        try:
            model = keras.saving.load_model(reid_model)
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise InputError(f"{reid_model}: cannot load the re-ID model ({err}); expected the "
                             "reid_model.keras a `valpat reid` run writes") from err
        return model.embedding_model
    return load_image_encoder(init, config=config, image_size=image_size)


def run(args: argparse.Namespace) -> int:
    """Evaluates, prints the table and writes the files; returns 0.

    The query and gallery images are decoded first (once, cached, like the training
    commands): unreadable ones are dropped and reported, and an empty split is an error.

    Raises:
        InputError: Bad data or options (`valpat_keras.cli.main` prints it, exit status 2).
    """
    entry, root = dataset_entry(args.data, "evaluate")
    if entry is None:
        raise InputError(f"--data {args.data!r}: valpat evaluate reads a dataset folder; "
                         "expected NAME:ROOT, e.g. market1501:/data")
    options = {"verify_images": True, "kind": "reid"}
    accepted = inspect.signature(entry.loader).parameters
    dataset = entry.loader(root, **{k: v for k, v in options.items() if k in accepted})
    print(dataset.summary())
    require_splits(dataset, ("query", "gallery"), args.data)
    from valpat_keras.evaluation.plots import plot_cmc
    from valpat_keras.run_outputs import write_json
    from valpat_keras.tasks.reid_training import evaluate_reid_model

    model = _embedding_model(args.init, args.config, args.image_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = evaluate_reid_model(model, dataset, args.image_size, args.batch_size,
                                  rerank=args.rerank, plot_path=out / "ranked_results.png")
    curves = {"plain": metrics["cmc"]}
    if "rerank" in metrics:
        curves["re-ranked"] = metrics["rerank"]["cmc"]
    plot_cmc(curves, path=str(out / "cmc.png"))
    metrics.update({"data": args.data, "init": args.init})
    write_json(out / "metrics.json", metrics)
    print(format_table(metrics))
    print(f"wrote {out / 'metrics.json'}")
    return 0
