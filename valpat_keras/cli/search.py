"""`valpat search`: fine-tune and evaluate text-based person search.

Example::

    valpat search --data cuhk_pedes:/data --out runs/search --init runs/pretrain --epochs 60
    valpat search --data synthped --out runs/search_demo --random-init --epochs 2

Writes RUN_DIR/metrics.json (R1, R5, R10, mAP, mINP), history.json, retrieval_examples.png and
the fine-tuned backbone + tokenizer (RUN_DIR/backbone/), which `PersonSearcher.from_run_dir`
loads.
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
from valpat_keras.cli.arg_types import weights
from valpat_keras.cli.recipe_args import add_recipe_arguments, apply_recipe_fields
from valpat_keras.runtime import runtime_fields

if TYPE_CHECKING:
    from valpat_keras.tasks.search import SearchRunConfig


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``search`` subcommand."""
    parser = subparsers.add_parser(
        "search", help="fine-tune text-based person search (CUHK-PEDES, ICFG-PEDES, RSTPReid)",
        description="Fine-tune image-text person search on cuhk_pedes / icfg_pedes / rstpreid "
                    "/ manifest data (or a generated SynthPed set) and report R1/R5/R10/mAP.")
    add_common_arguments(parser, default_epochs=10)
    parser.add_argument("--text-config", default="tiny",
                        help="text encoder configuration for random init (default tiny)")
    parser.add_argument("--loss-weights", type=weights(("itc", "sdm", "id"), "itc=1,sdm=1,id=0"),
                        default=None, metavar="itc=1,sdm=1,id=1",
                        help="objective weights (numbers >= 0); 0 switches one off")
    add_recipe_arguments(parser)
    parser.set_defaults(run=run)


def run_config_of(args: argparse.Namespace) -> SearchRunConfig:
    """The `SearchRunConfig` of the parsed flags (``--lr`` unset keeps the default)."""
    # Imported here: the library imports Keras, which parsing and the data checks do not need.
    from valpat_keras.tasks.search import SearchRunConfig

    options = {"learning_rate": args.lr} if args.lr else {}
    return SearchRunConfig(
        init=init_of(args), encoder_config=args.config, text_config=args.text_config,
        epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size,
        loss_weights=args.loss_weights, seed=args.seed, steps_per_epoch=args.steps_per_epoch,
        checkpoint_every_steps=args.checkpoint_every, **runtime_fields(args),
        **options)


def run(args: argparse.Namespace) -> int:
    """Trains, evaluates and prints the metrics; returns 0.

    Raises:
        InputError: Bad data or options (`valpat_keras.cli.main` prints it, exit status 2).
    """
    dataset = load_dataset(args, "cuhk_pedes")
    print(dataset.summary())
    require_splits(dataset, ("train", "test" if dataset.test or not dataset.val else "val"),
                   args.data)
    config = apply_recipe_fields(run_config_of(args), args)
    from valpat_keras.tasks.search import train_search  # Keras: see run_config_of.

    metrics = train_search(dataset, args.out, config)
    print(f"text-to-image ({config.init}): R1 {100 * metrics['R1']:.2f}  "
          f"R5 {100 * metrics['R5']:.2f}  R10 {100 * metrics['R10']:.2f}  "
          f"mAP {100 * metrics['mAP']:.2f}  mINP {100 * metrics['mINP']:.2f}")
    print(f"wrote {args.out}/metrics.json, history.json, retrieval_examples.png, backbone/")
    return 0
