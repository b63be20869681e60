"""Person re-ID transfer: random vs VAL-PAT-pretrained initialisation, supervised and not.

Generates SynthPed (its pretraining identities are disjoint from the Market-1501-style reID
identities), pretrains VAL-PAT on the pretraining set (or reuses ``--init``), then fine-tunes
re-ID from random and from pretrained weights with the same budget, supervised (BoT) and
unsupervised (Cluster Contrast, no train labels). Prints the four test mAP / rank-1 pairs
(percent) and writes ``results.json`` into ``--out``, with each run's validation mAP per epoch
(so a comparison made after both inits have reached the same plateau shows as such) and the
epoch kept. The validation split is held out from the training identities (``--val-fraction``);
the test query / gallery are scored once per run, with the kept weights.

The pretraining run uses `pretrain`'s defaults: the MoCo queue is at most a quarter of the
pretraining images (352 keys for SynthPed small) and the key-encoder momentum follows the run
length (0.99 for a few hundred steps), see `default_queue_size` and `default_momentum`.

Usage:

```
python benchmarks/reid_transfer.py                       # the CPU-sized comparison
python benchmarks/reid_transfer.py --tiny                # smoke run, a couple of minutes
python benchmarks/reid_transfer.py --init runs/pretrain  # reuse a pretraining run
```
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _size(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's options; ``--tiny`` shrinks every budget to a smoke run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_reid", help="output folder")
    parser.add_argument("--preset", default="small", help="SynthPed preset (default small)")
    parser.add_argument("--image-size", type=_size, default=(128, 64), metavar="HxW")
    parser.add_argument("--config", default="tiny", help="image encoder configuration")
    parser.add_argument("--init", default=None, metavar="RUN_DIR",
                        help="an existing pretraining run (skips pretraining)")
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--pretrain-batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=20, help="supervised epochs")
    parser.add_argument("--usl-epochs", type=int, default=10,
                        help="unsupervised epochs (clustering rounds)")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="batches per epoch (default: one sampler epoch)")
    parser.add_argument("--p", type=int, default=8, help="identities per batch")
    parser.add_argument("--k", type=int, default=4, help="images per identity")
    parser.add_argument("--eps", type=float, default=0.6, help="DBSCAN radius")
    parser.add_argument("--min-samples", type=int, default=4, help="DBSCAN core-point size")
    parser.add_argument("--k1", type=int, default=15, help="Jaccard k-reciprocal size")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="share of the training identities held out to choose the best "
                             "epoch on (0: keep the last epoch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true",
                        help="smoke run: tiny SynthPed at 64x32, a few steps per stage")
    args = parser.parse_args(argv)
    if not 0.0 <= args.val_fraction < 1.0:
        parser.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.tiny:
        args.preset, args.image_size, args.pretrain_batch_size = "tiny", (64, 32), 8
        args.pretrain_steps, args.epochs, args.usl_epochs = 2, 1, 1
        args.steps_per_epoch, args.p, args.k = 2, 4, 4
        args.min_samples, args.k1 = 2, 6
    return args


def run(args: argparse.Namespace) -> dict:
    """Runs every stage; returns the results dict (fractions)."""
    import keras

    from valpat_keras.data import registry
    from valpat_keras.data.synthped import SynthPedConfig, ensure_synthped
    from valpat_keras.tasks import ReIDRunConfig, train_reid

    out = Path(args.out)
    size = tuple(args.image_size)
    started = time.time()
    config = SynthPedConfig.preset(args.preset, seed=args.seed, height=size[0], width=size[1])
    info = ensure_synthped(out / "synthped", config)
    market = registry.load("market1501", info.paths["market1501"])
    print(market.summary())

    run_dir = args.init
    if run_dir is None:
        from valpat_keras.tasks.pretraining import pretrain

        run_dir = str(out / "pretrain")
        pretrain(registry.load("luperson_ta", info.paths["pretrain_manifest"]), run_dir,
                 config=args.config, steps=args.pretrain_steps,
                 batch_size=args.pretrain_batch_size, image_size=size, seed=args.seed,
                 verbose=0)

    results: dict = {"backend": keras.backend.backend(), "preset": args.preset,
                     "image_size": list(size), "pretrain_run": run_dir,
                     "val_fraction": args.val_fraction}
    base = ReIDRunConfig(encoder_config=args.config, p=args.p, k=args.k, image_size=size,
                         seed=args.seed, steps_per_epoch=args.steps_per_epoch, eps=args.eps,
                         min_samples=args.min_samples, k1=args.k1,
                         validation_fraction=args.val_fraction, verbose=0)
    for name, init in (("random", "random"), ("valpat", run_dir)):
        for mode, unsupervised, epochs in (("supervised", False, args.epochs),
                                           ("unsupervised", True, args.usl_epochs)):
            metrics = train_reid(market, out / f"{mode}_{name}", base.replace(
                init=init, unsupervised=unsupervised, epochs=epochs))
            history = json.loads((out / f"{mode}_{name}" / "history.json").read_text())
            # The per-epoch curve shows whether both inits end at the same plateau.
            results[f"{mode}_{name}"] = {
                "mAP": metrics["mAP"], "rank1": metrics["rank1"],
                "selection": metrics["selection"], "best_epoch": metrics["best_epoch"],
                "best_val_mAP": metrics["best_val_mAP"],
                "val_mAP_per_epoch": [e.get("val_mAP") for e in history]}
    results["seconds"] = round(time.time() - started, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv: list[str] | None = None) -> None:
    """Prints the comparison table."""
    args = parse_args(argv)
    results = run(args)
    print(f"\nSynthPed {results['preset']} at {args.image_size[0]}x{args.image_size[1]}, "
          f"backend {results['backend']}, {results['seconds']} s")
    print(f"{'initialisation':<22}{'sup mAP':>10}{'sup R1':>10}{'USL mAP':>10}{'USL R1':>10}")
    for name, label in (("random", "random"), ("valpat", "VAL-PAT pretrained")):
        sup, usl = results[f"supervised_{name}"], results[f"unsupervised_{name}"]
        print(f"{label:<22}{100 * sup['mAP']:>10.2f}{100 * sup['rank1']:>10.2f}"
              f"{100 * usl['mAP']:>10.2f}{100 * usl['rank1']:>10.2f}")
    if not results["val_fraction"]:
        print("\nno validation split (--val-fraction 0): the test figures are the last epoch's")
        return
    print("\nvalidation mAP per epoch (supervised, held-out training ids; the test figures "
          "above are those of the kept epoch, *)")
    for name in ("random", "valpat"):
        sup = results[f"supervised_{name}"]
        print(f"{name:<8}" + " ".join(
            ("  -  " if v is None else f"{100 * v:5.1f}") + ("*" if e == sup["best_epoch"] else " ")
            for e, v in enumerate(sup["val_mAP_per_epoch"])))


if __name__ == "__main__":
    main()
