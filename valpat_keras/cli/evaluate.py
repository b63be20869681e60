"""`valpat evaluate`: score an encoder on a re-ID query / gallery split, without training.

Example::

    valpat evaluate --data market1501:/data --init runs/reid --out runs/eval --rerank
    valpat evaluate --data market1501:/data --init runs/pretrain --out runs/eval_frozen

``--init`` is anything the transfer commands accept: a `valpat reid` run folder (its
``reid_model.keras`` BNNeck embedding is used), a pretraining run folder or preset folder
(the pooled image-encoder feature), a keras-hub preset name, or ``random``. Prints a results
table and writes RUN_DIR/metrics.json, ranked_results.png and cmc.png.

Verification: the ROC over the test query-gallery pairs (same person under the same camera
removed, as for CMC), TPR at FPR 1e-2 / 1e-3 / 1e-4, the EER, and the test TPR / FPR at a
cosine-similarity threshold calibrated on validation, never on test: the ``--init`` run's
``verification.json`` (a `valpat reid` run writes one), else one calibrated here on
identities held out of the dataset's train split (``--target-fpr``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from valpat_keras.cli._transfer_args import load_dataset, require_splits
from valpat_keras.cli.arg_types import fraction, image_size, positive_int, unit_interval
from valpat_keras.evaluation.verification import DEFAULT_TARGET_FPR, REPORTED_FPRS, fpr_key

_TABLE_KEYS = ("rank1", "rank5", "rank10", "mAP", "mINP")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate", help="evaluate an encoder on a re-ID query/gallery split",
        description="Extract features of the query and gallery images with a trained or "
                    "pretrained encoder and report CMC rank-1/5/10, mAP and mINP (Market-1501 "
                    "protocol), optionally after k-reciprocal re-ranking, and verification: "
                    "TPR at FPR 1e-2/1e-3/1e-4, EER and the test TPR/FPR at a same-person "
                    "threshold calibrated on validation (the run's verification.json, else "
                    "held-out train identities).")
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
    parser.add_argument("--target-fpr", type=unit_interval, default=DEFAULT_TARGET_FPR,
                        help="validation false-positive rate of the verification threshold "
                             "calibrated here when --init has no verification.json "
                             f"(default {DEFAULT_TARGET_FPR:g})")
    parser.add_argument("--validation-fraction", type=fraction, default=0.1,
                        help="share of the train identities held out to calibrate that "
                             "threshold on (default 0.1; 0: no threshold)")
    parser.set_defaults(run=run)


def _verification_rows(verification: dict) -> list[tuple[str, ...]]:
    """Header and values of TPR@FPR, EER (percent) and the threshold with its test rates."""
    header = ("", *(f"TPR@{fpr:.0e}" for fpr in REPORTED_FPRS), "EER")
    values = ("verify", *(f"{100 * verification[fpr_key(fpr)]:.1f}" for fpr in REPORTED_FPRS),
              f"{100 * verification['eer']:.1f}")
    if verification.get("threshold") is not None:
        header += ("threshold", "TPR@thr", "FPR@thr")
        values += (f"{verification['threshold']:.4f}",
                   f"{100 * verification['tpr_at_threshold']:.1f}",
                   f"{100 * verification['fpr_at_threshold']:.2f}")
    return [header, values]


def format_table(metrics: dict) -> str:
    """A text table of the headline metrics (percent), then the verification ones.

    The ranking rows (plain, and re-ranked when present), then, when ``metrics`` has
    ``verification``: TPR at FPR 1e-2 / 1e-3 / 1e-4, the EER and, when calibrated, the
    similarity threshold with the test TPR / FPR at it (or why there is no threshold).
    """
    rows = [("", *_TABLE_KEYS), ("plain", *(f"{100 * metrics[k]:.1f}" for k in _TABLE_KEYS))]
    if "rerank" in metrics:
        rows.append(("re-ranked", *(f"{100 * metrics['rerank'][k]:.1f}" for k in _TABLE_KEYS)))
    verification = metrics.get("verification")
    if verification:
        rows += _verification_rows(verification)
    lines = ["".join(f"{cell:>11}" for cell in row) for row in rows]
    calibration = (verification or {}).get("calibration") or {}
    if verification and calibration.get("source"):
        lines.append(f"threshold calibrated on validation: {calibration['source']}")
    elif verification:
        lines.append(f"no verification threshold: {calibration.get('reason', 'none given')}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Evaluates, prints the table and writes the files; returns 0.

    The query and gallery images are decoded first (once, cached, like the training
    commands): unreadable ones are dropped and reported, and an empty split is an error.

    Raises:
        InputError: Bad data or options (`valpat_keras.cli.main` prints it, exit status 2).
    """
    dataset = load_dataset(args, "market1501")
    print(dataset.summary())
    require_splits(dataset, ("query", "gallery"), args.data)
    # Imported here: Keras loads only once the arguments and the data have been checked.
    from valpat_keras.tasks.reid_training import ReIDEvaluationConfig, evaluate_reid_encoder

    config = ReIDEvaluationConfig(init=args.init, encoder_config=args.config,
                                  image_size=args.image_size, batch_size=args.batch_size,
                                  rerank=args.rerank, target_fpr=args.target_fpr,
                                  validation_fraction=args.validation_fraction)
    metrics = evaluate_reid_encoder(dataset, args.out, config, record={"data": args.data})
    print(format_table(metrics))
    print(f"wrote {Path(args.out) / 'metrics.json'}")
    return 0
