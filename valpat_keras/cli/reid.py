"""`valpat reid`: fine-tune and evaluate person re-identification.

Example::

    valpat reid --data market1501:/data --out runs/reid --init runs/pretrain \\
        --config resnet50 --epochs 120 --rerank
    valpat reid --data market1501:/data --out runs/reid_usl --init runs/pretrain --unsupervised
    valpat reid --data synthped --out runs/reid_demo --random-init --epochs 2 --image-size 64x32

Supervised training is BoT (ID + triplet loss, BNNeck), or ``--head mgn`` (MGN: global and
2 / 3 stripe branches, the 2048-d concatenation as the embedding) or ``--head agw`` (AGW:
non-local blocks, GeM, weighted regularised triplet) on a ResNet; ``--unsupervised`` is Cluster
Contrast (DBSCAN pseudo-labels, cluster memory). The best epoch is chosen on a validation
split held out from the training identities (``--val-fraction``, default 0.1; 0 keeps the last
epoch); the test query / gallery are scored once, at the end. Writes RUN_DIR/metrics.json
(rank-1/5/10, mAP, mINP; ``rerank`` with --rerank; the selection), history.json,
ranked_results.png, reid_model.keras and image_encoder/.
"""

from __future__ import annotations

import argparse

from valpat_keras.cli._transfer_args import (
    add_common_arguments,
    init_of,
    load_dataset,
    require_splits,
)
from valpat_keras.cli.arg_types import (
    fraction,
    int_at_least,
    non_negative_int,
    positive_float,
    positive_float_or_auto,
    positive_int,
)
from valpat_keras.cli.recipe_args import add_recipe_arguments, apply_recipe_fields
from valpat_keras.runtime import runtime_fields


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``reid`` subcommand."""
    parser = subparsers.add_parser(
        "reid", help="fine-tune person re-identification (supervised BoT or unsupervised "
                     "Cluster Contrast)",
        description="Fine-tune an image encoder for person re-ID on market1501 / "
                    "dukemtmc_reid / occluded_duke / msmt17 / manifest data (or a generated "
                    "SynthPed set) and report CMC, mAP and mINP.")
    add_common_arguments(parser, default_epochs=60)
    parser.add_argument("--unsupervised", action="store_true",
                        help="ignore the train ids: Cluster Contrast with DBSCAN pseudo-labels")
    parser.add_argument("--rerank", action="store_true",
                        help="also report k-reciprocal re-ranked scores")
    parser.add_argument("--p", type=int_at_least(2, "a batch contrasts two identities at least"),
                        default=16, help="identities per batch (default 16)")
    parser.add_argument("--k", type=positive_int, default=4,
                        help="images per identity (default 4)")
    parser.add_argument("--lr-schedule", choices=("step", "cosine"), default="step",
                        help="decay after the warm-up (default step: x0.1 at 40%% and 70%%)")
    parser.add_argument("--warmup-epochs", type=non_negative_int, default=None,
                        help="linear warm-up epochs (default 10%% of the epochs; supervised)")
    parser.add_argument("--freeze-backbone-epochs", type=non_negative_int, default=0,
                        help="train only the BNNeck and classifier first (supervised)")
    parser.add_argument("--val-fraction", type=fraction, default=0.1,
                        metavar="FRACTION",
                        help="share of the training identities held out to choose the best "
                             "epoch on (default 0.1; 0: train on all, keep the last epoch)")
    parser.add_argument("--eval-every", type=positive_int, default=1,
                        help="evaluate on the validation split and keep the best model every "
                             "N epochs (default 1)")
    parser.add_argument("--eps", type=positive_float_or_auto, default=0.6,
                        help="DBSCAN radius on the Jaccard distance, or auto: read off each "
                             "round's distances (unsupervised; default 0.6)")
    parser.add_argument("--min-samples", type=positive_int, default=4,
                        help="DBSCAN core-point size (unsupervised; default 4)")
    parser.add_argument("--k1", type=positive_int, default=30,
                        help="k-reciprocal neighbourhood of the clustering distance (default 30)")
    parser.add_argument("--hard-memory", action="store_true",
                        help="update the cluster memory with the hardest instance")
    parser.add_argument("--head", choices=("bot", "mgn", "agw"), default="bot",
                        help="supervised head: bot (BNNeck, ID + triplet), mgn (global + 2 "
                             "+ 3 stripe branches, fast-reid's MGN) or agw (non-local, GeM, "
                             "weighted regularised triplet); mgn / agw need a ResNet "
                             "(default bot)")
    parser.add_argument("--head-id-weight", type=positive_float, default=None,
                        help="weight of the identity loss (mgn: of each of its 8 terms); "
                             "default: the head's (bot 1, mgn 0.125, agw 1)")
    parser.add_argument("--head-triplet-weight", type=positive_float, default=None,
                        help="weight of the triplet loss (mgn: of each of its 5 terms); "
                             "default: the head's (bot 1, mgn 0.2, agw 1)")
    parser.add_argument("--mgn-embedding-dim", type=positive_int, default=256,
                        help="reduced dimension of each of MGN's 8 heads (default 256)")
    add_recipe_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Trains, evaluates and prints the metrics; returns 0.

    Raises:
        InputError: Bad data or options (`valpat_keras.cli.main` prints it, exit status 2).
    """
    dataset = load_dataset(args, "market1501")
    print(dataset.summary())
    require_splits(dataset, ("train", "query", "gallery"), args.data)
    # Imported here: Keras loads only once the arguments and the data have been checked.
    from valpat_keras.tasks.reid_training import train_reid

    metrics = train_reid(dataset, args.out, apply_recipe_fields(run_config(args), args))
    _report(metrics, args)
    return 0


def run_config(args: argparse.Namespace):
    """The `ReIDRunConfig` of parsed ``valpat reid`` arguments."""
    from valpat_keras.tasks.reid_training import ReIDRunConfig  # Keras: see `run`

    config = ReIDRunConfig(
        init=init_of(args), encoder_config=args.config, unsupervised=args.unsupervised,
        epochs=args.epochs, p=args.p, k=args.k, image_size=args.image_size or (256, 128),
        seed=args.seed, rerank=args.rerank, lr_schedule=args.lr_schedule,
        warmup_epochs=args.warmup_epochs, freeze_backbone_epochs=args.freeze_backbone_epochs,
        validation_fraction=args.val_fraction, eval_every=args.eval_every,
        eval_batch_size=args.batch_size, eps=args.eps, min_samples=args.min_samples,
        k1=args.k1, hard_memory_update=args.hard_memory, steps_per_epoch=args.steps_per_epoch,
        checkpoint_every_steps=args.checkpoint_every, head=args.head,
        head_id_loss_weight=args.head_id_weight,
        head_triplet_loss_weight=args.head_triplet_weight,
        mgn_embedding_dim=args.mgn_embedding_dim, **runtime_fields(args))
    return config.replace(learning_rate=args.lr) if args.lr else config


def _report(metrics: dict, args: argparse.Namespace) -> None:
    mode = "unsupervised" if metrics["unsupervised"] else "supervised"
    if metrics.get("head", "bot") not in ("bot", "cluster_contrast"):
        mode = f"{mode} {metrics['head'].upper()}"
    if metrics["selection"] == "validation":
        print(f"kept epoch {metrics['best_epoch'] + 1} of {metrics['epochs']} (validation mAP "
              f"{100 * metrics['best_val_mAP']:.2f} on {metrics['num_val_ids']} held-out ids)")
    else:
        print(f"kept the last epoch of {metrics['epochs']} (no validation score)")
    print(f"{mode} ({metrics['init']}) test: {_line(metrics)}")
    if "rerank" in metrics:
        print(f"re-ranked: {_line(metrics['rerank'])}")
    print(f"wrote {args.out}/metrics.json, history.json, ranked_results.png, reid_model.keras")


def _line(metrics: dict) -> str:
    return (f"rank-1 {100 * metrics['rank1']:.2f}  rank-5 {100 * metrics['rank5']:.2f}  "
            f"rank-10 {100 * metrics['rank10']:.2f}  mAP {100 * metrics['mAP']:.2f}  "
            f"mINP {100 * metrics['mINP']:.2f}")
