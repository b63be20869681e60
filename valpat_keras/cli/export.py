"""`valpat export`: a run folder's models as SavedModel / ONNX / OpenVINO / LiteRT for serving.

Example::

    valpat export runs/reid --format onnx --out exports/reid --flip-average
    valpat --backend tensorflow export runs/pretrain --format saved_model --out exports/pt

Writes one model per output (``image``, ``image_text`` and ``text``, ``attributes``) through
Keras' ``Model.export``, with resizing and normalisation inside the graph (uint8 images of
any size in, L2-normalised embeddings or attribute probabilities out), and ``manifest.json``
(see `valpat_keras.serving.export`). A format the backend cannot export is one error line
naming the backends that can; run folders export on any backend.
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: The ``--format`` choices (`valpat_keras.serving.export.FORMATS`, without importing Keras).
FORMAT_CHOICES = ("saved_model", "onnx", "openvino", "litert")
WHAT_CHOICES = ("image", "text", "attributes", "all")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``export`` subcommand."""
    parser = subparsers.add_parser(
        "export", help="export a run folder's models for serving (SavedModel, ONNX, ...)",
        description="Export the image embedder, the text embedder and the attribute "
                    "recognizer of a run folder through Keras' Model.export, with resizing "
                    "and normalisation inside the graph, plus a manifest.json (input size, "
                    "embedding dimension, similarity, verification threshold, attribute "
                    "names and thresholds).")
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="a valpat pretrain / reid / attributes / search run folder")
    parser.add_argument("--format", required=True, choices=FORMAT_CHOICES,
                        help="saved_model (tensorflow, jax backends), onnx (tensorflow, "
                             "torch), openvino (needs openvino), litert (tensorflow)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--what", choices=WHAT_CHOICES, default="all",
                        help="image (re-ID embedder), text (sentence embedder and the image "
                             "embedder of the text space), attributes, or all the run has "
                             "(default)")
    parser.add_argument("--flip-average", action="store_true",
                        help="the image embedder averages each image with its mirror")
    parser.add_argument("--int8", action="store_true",
                        help="quantise weights to int8 (Model.quantize) and report the "
                             "change of the outputs on a small SynthPed set")
    parser.set_defaults(run=run)


def format_summary(manifest: dict, out: Path) -> str:
    """The lines printed after an export: one per model, the threshold, the int8 report."""
    height, width = manifest["image_size"]
    lines = [f"exported the {manifest['run_kind']} run {manifest['run_dir']} as "
             + f"{manifest['format']} ({manifest['export_backend']} backend), images resized "
             + f"to {height}x{width} inside the graph"]
    for name, entry in manifest["models"].items():
        width = entry.get("embedding_dim", len(entry.get("names", [])))
        lines.append(f"  {name:<11} {out / entry['file']}  input {entry['input']['dtype']} "
                     f"{entry['input']['shape']}  output {width}")
    threshold = manifest["verification_threshold"]
    lines.append("  verification threshold: " + ("none calibrated" if threshold is None
                                                  else f"{threshold:.4f} (cosine)"))
    for name, scores in (manifest.get("int8") or {}).items():
        if isinstance(scores, dict):
            lines.append(f"  int8 {name}: " + ", ".join(
                f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"
                for key, value in scores.items()))
    lines.append(f"wrote {out / 'manifest.json'}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Exports, prints the summary; returns 0.

    Raises:
        InputError: A bad run folder, ``--what`` the run lacks, or a format this backend
            cannot export (`valpat_keras.cli.main` prints it, exit status 2).
    """
    # Imported here: Keras loads only after --backend has been applied.
    from valpat_keras.serving.export import check_format, export_run

    check_format(args.format)
    manifest = export_run(args.run_dir, args.out, args.format, what=args.what,
                          flip_average=args.flip_average, int8=args.int8)
    print(format_summary(manifest, Path(args.out)))
    return 0
