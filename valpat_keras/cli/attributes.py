"""`valpat attributes`: fine-tune and evaluate pedestrian attribute recognition.

Example::

    valpat attributes --data pa100k:/data --out runs/par --init runs/pretrain --epochs 30 \\
        --zero-shot
    valpat attributes --data synthped --out runs/par_demo --random-init --epochs 2

Writes RUN_DIR/metrics.json (mA and instance metrics, zero-shot mA with --zero-shot),
history.json, attribute_bars.png and attribute_recognizer.keras.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from valpat_keras.cli._transfer_args import (
    add_common_arguments,
    init_of,
    load_dataset,
    require_splits,
)
from valpat_keras.cli.arg_types import fraction, non_negative_float, non_negative_int
from valpat_keras.cli.recipe_args import add_recipe_arguments, apply_recipe_fields
from valpat_keras.errors import InputError
from valpat_keras.runtime import runtime_fields

if TYPE_CHECKING:
    from valpat_keras.tasks.attributes import AttributesRunConfig


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``attributes`` subcommand."""
    parser = subparsers.add_parser(
        "attributes", help="fine-tune pedestrian attribute recognition (PA-100K, PETA, RAP)",
        description="Fine-tune an attribute recognizer on pa100k / peta / rap / manifest data "
                    "(or a generated SynthPed set) and report mA and instance metrics.")
    add_common_arguments(parser, default_epochs=10)
    parser.add_argument("--split", type=non_negative_int, default=None,
                        help="partition index for PETA / RAP (default 0)")
    parser.add_argument("--label-smoothing", type=fraction, default=0.0,
                        help="smoothing of the 0/1 targets, in [0, 1) (default 0)")
    parser.add_argument("--head-lr-multiplier", type=non_negative_float, default=None,
                        help="learning rate of the new head relative to the encoder's "
                             "(default: the task's, see train_attributes)")
    parser.add_argument("--freeze-bn", action=argparse.BooleanOptionalAction, default=None,
                        help="keep the encoder's batch-norm statistics fixed (default: frozen "
                             "from a pretrained init, trained from random)")
    parser.add_argument("--loss-weighting", choices=("balanced", "deepmar"), default="balanced",
                        help="class weights of the BCE: balanced (default, the optimum of mA) "
                             "or deepmar (Rethinking_of_PAR's)")
    parser.add_argument("--head-init", choices=("auto", "prior", "linear_probe"),
                        default="auto",
                        help="how the head starts: a linear probe of the frozen features "
                             "(LP-FT), the prior bias, or auto (default: the probe from a "
                             "pretrained init, the prior from random)")
    parser.add_argument("--zero-shot", action="store_true",
                        help="also report zero-shot mA of the pretrained image-text backbone "
                             "(needs --init RUN_DIR)")
    add_recipe_arguments(parser)
    parser.set_defaults(run=run)


def run_config_of(args: argparse.Namespace) -> AttributesRunConfig:
    """The `AttributesRunConfig` of the parsed arguments (unset options keep its defaults)."""
    # The tasks import Keras, which may be imported only once `valpat --backend` has set it.
    from valpat_keras.tasks.attributes import AttributesRunConfig

    options = {"learning_rate": args.lr, "head_lr_multiplier": args.head_lr_multiplier}
    return AttributesRunConfig(
        init=init_of(args), encoder_config=args.config, epochs=args.epochs,
        batch_size=args.batch_size, image_size=args.image_size or (256, 128),
        label_smoothing=args.label_smoothing, seed=args.seed, zero_shot=args.zero_shot,
        freeze_batch_norm=args.freeze_bn, loss_weighting=args.loss_weighting,
        head_init=args.head_init, steps_per_epoch=args.steps_per_epoch,
        checkpoint_every_steps=args.checkpoint_every, **runtime_fields(args),
        **{key: value for key, value in options.items() if value is not None})


def run(args: argparse.Namespace) -> int:
    """Trains, evaluates and prints the metrics; returns 0.

    Raises:
        InputError: Bad data or options (`valpat_keras.cli.main` prints it, exit status 2).
    """
    if args.zero_shot and not args.init:
        raise InputError("--zero-shot needs --init RUN_DIR (a pretraining run with backbone/)")
    dataset = load_dataset(args, "pa100k", split=args.split)
    print(dataset.summary())
    require_splits(dataset, ("train", "test"), args.data)
    # Imported here, not at the top: see `run_config_of`.
    from valpat_keras.tasks import attributes

    config = apply_recipe_fields(run_config_of(args), args)
    metrics = attributes.train_attributes(dataset, args.out, config)
    line = (f"mA {100 * metrics['ma']:.2f}  acc {100 * metrics['instance_acc']:.2f}  "
            f"prec {100 * metrics['instance_prec']:.2f}  "
            f"recall {100 * metrics['instance_recall']:.2f}  "
            f"F1 {100 * metrics['instance_f1']:.2f}")
    print(f"fine-tuned ({config.init}): {line}")
    if "calibrated" in metrics:
        calibrated = metrics["calibrated"]
        print(f"with thresholds calibrated on val (and exclusive groups): "
              f"mA {100 * calibrated['ma']:.2f}  F1 {100 * calibrated['instance_f1']:.2f}")
    if "zero_shot" in metrics:
        print(f"zero-shot mA {100 * metrics['zero_shot']['ma']:.2f}")
    print(f"wrote {args.out}/metrics.json, history.json, attribute_bars.png")
    return 0
