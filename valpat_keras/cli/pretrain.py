"""`valpat pretrain`: VAL-PAT pretraining (image-image, image-text, attributes) to a run folder.

Example:

```
valpat pretrain --out runs/tiny --steps 200 --batch-size 32      # SynthPed generated on the fly
valpat --backend jax pretrain --data /data/luperson_ta --out runs/r50 --config resnet50 \\
    --epochs 40 --batch-size 256 --mixed-precision
```

The run folder layout is described in `valpat_keras.tasks.pretraining`; rerunning the same command
on an interrupted run folder resumes it.
"""

from __future__ import annotations

import argparse

from valpat_keras.cli.arg_types import (
    fraction,
    image_size,
    non_negative_int,
    positive_float,
    positive_int,
    weights,
)
from valpat_keras.cli.recipe_args import add_recipe_arguments, apply_recipe_fields
from valpat_keras.errors import InputError
from valpat_keras.runtime import add_runtime_arguments, runtime_fields
from valpat_keras.tasks.pretrain_config import PretrainConfig

OBJECTIVES = ("ssl", "itc", "attr")


def parse_objectives(text: str) -> list[str]:
    """Parses ``ssl,itc,attr`` (any non-empty subset)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in OBJECTIVES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {','.join(OBJECTIVES)}; got {text!r}")
    return names


#: Parses ``ssl=1,itc=0.5,attr=1`` (weights >= 0) into a dict.
parse_loss_weights = weights(OBJECTIVES, "ssl=1,itc=1,attr=0.5")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Adds the `pretrain` subcommand."""
    parser = subparsers.add_parser(
        "pretrain", help="VAL-PAT pretraining of the pedestrian image encoder",
        description="Pretrain an image encoder with MoCo image-image contrast (ssl), CLIP "
                    "image-text contrast (itc) and weighted-BCE attributes (attr); writes "
                    "history.json, loss_curves.png, pretrainer.keras and the image_encoder/ and "
                    "backbone/ presets to RUN_DIR.")
    parser.add_argument("--data", default=None, metavar="DIR_OR_MANIFEST",
                        help="LUPerson-TA-style manifest (or its folder), a SynthPed folder or "
                             "a folder of images (default: generate SynthPed into "
                             "RUN_DIR/synthped)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder")
    parser.add_argument("--config", choices=("tiny", "resnet50", "vit"), default="tiny",
                        help="model size (default: tiny, the CPU demo)")
    parser.add_argument("--objectives", type=parse_objectives, default=list(OBJECTIVES),
                        help="comma-separated objectives (default: ssl,itc,attr)")
    parser.add_argument("--loss-weights", type=parse_loss_weights, default=None,
                        metavar="ssl=1,itc=1,attr=1", help="weight per objective (default 1)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_int, default=None,
                        help="passes over the data")
    length.add_argument("--steps", type=positive_int, default=None, help="optimiser steps")
    parser.add_argument("--batch-size", type=positive_int, default=32,
                        help="images per step (32)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed (0)")
    parser.add_argument("--image-size", type=image_size, default=None, metavar="HxW",
                        help="input size, e.g. 128x64 (default: the config's)")
    parser.add_argument("--queue-size", type=non_negative_int, default=None,
                        help="MoCo queue length, a multiple of the batch size (default: the "
                             "config's, at most a quarter of the images; 0: in-batch negatives)")
    parser.add_argument("--last-stride", type=int, choices=(1, 2), default=None,
                        help="stride of the last ResNet stage while pretraining (default 1, "
                             "measured better on validation data; 2, the standard ResNet's, is "
                             "faster; transfers fine-tune at 1 with the same weights)")
    parser.add_argument("--momentum", type=fraction, default=None,
                        help="key encoder EMA momentum (default: from the run length, 0.99 for "
                             "a few hundred steps up to 0.999)")
    parser.add_argument("--views", choices=("reid", "moco_v2"), default="reid",
                        help="self-supervised view augmentation: reid (crop and flip; keeps "
                             "clothing colour) or moco_v2 (default reid)")
    parser.add_argument("--learning-rate", type=positive_float, default=1e-3,
                        help="AdamW rate (1e-3)")
    add_runtime_arguments(parser)  # --mixed-precision, --distribute, --devices
    parser.add_argument("--synthped-preset", choices=("tiny", "small", "default"),
                        default="small", help="SynthPed size when --data is not given (small)")
    parser.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="STEPS",
                        help="write a step checkpoint to RUN_DIR/checkpoints every STEPS "
                             "optimiser steps (default: every 10 minutes, and at each epoch "
                             "end); rerunning the same command resumes exactly")
    parser.add_argument("--quiet", action="store_true", help="one line per epoch")
    add_preset_arguments(parser)
    add_recipe_arguments(parser)
    parser.set_defaults(run=run)
    return parser


def add_preset_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--text-preset``, ``--image-preset`` and ``--pixel-normalization``."""
    parser.add_argument("--text-preset", default=None, metavar="NAME_OR_DIR",
                        help="pretrained text tower and its tokenizer: a keras-hub preset "
                             "(e.g. bert_base_en_uncased) or preset folder of a BERT, "
                             "DistilBERT, RoBERTa or CLIP text backbone (default: a small "
                             "transformer on a vocabulary learnt from the captions)")
    parser.add_argument("--image-preset", default=None, metavar="NAME_OR_DIR",
                        help="start the image tower from a keras-hub ResNet/ViT preset, e.g. "
                             "resnet_50_imagenet, or a preset folder (default: random init)")
    parser.add_argument("--pixel-normalization", default=None,
                        choices=("imagenet", "lup", "preset"),
                        help="pixel mean/std: ImageNet's, LUPerson's, or the image preset's "
                             "converter's (default: preset with --image-preset, else imagenet)")


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    """The `PretrainConfig` of the parsed flags.

    Raises:
        InputError: A queue size that the batch size does not divide (named by its flags).
    """
    if args.queue_size is not None and args.queue_size % args.batch_size:
        raise InputError(f"--queue-size {args.queue_size} must be a multiple of the batch size "
                         f"(--batch-size {args.batch_size}): the queue is filled one batch at "
                         "a time")
    return PretrainConfig(
        encoder_config=args.config, objectives=tuple(args.objectives),
        loss_weights=args.loss_weights, epochs=args.epochs, steps=args.steps,
        batch_size=args.batch_size, image_size=args.image_size, seed=args.seed,
        queue_size=args.queue_size, momentum=args.momentum, augment=args.views,
        learning_rate=args.learning_rate, synthped_preset=args.synthped_preset,
        checkpoint_every_steps=args.checkpoint_every, verbose=2 if args.quiet else 1,
        text_preset=args.text_preset, image_preset=args.image_preset,
        pixel_normalization=args.pixel_normalization, last_stride=args.last_stride,
        **runtime_fields(args))


def run(args: argparse.Namespace) -> int:
    """Runs the pretraining; returns 0.

    Raises:
        InputError: Bad data or options (`valpat_keras.cli.main` prints it, exit status 2).
        NonFiniteLossError: The loss became NaN/inf (printed by `main`, exit status 3).
    """
    config = apply_recipe_fields(config_from_args(args), args)
    # Imported here: it imports Keras, which must wait until `--backend` is applied
    # (`valpat_keras.cli.main` imports every command module to build the parser).
    from valpat_keras.tasks.pretraining import pretrain

    history = pretrain(args.data, args.out, config)
    last = {k: round(v[-1], 4) for k, v in history.history.items()}
    print(f"Pretraining done: {last}\nWrote {args.out}/ (history.json, loss_curves.png, "
          f"pretrainer.keras, image_encoder/, backbone/)")
    return 0
