"""Attribute recognition and text search transfer: random vs VAL-PAT-pretrained initialisation.

Generates SynthPed (its pretraining identities are disjoint from those of the PA-100K-style
and CUHK-PEDES-style sets), pretrains VAL-PAT on the pretraining set (or reuses ``--init``),
then fine-tunes attribute recognition and text-based person search from random and from
pretrained weights with the same budget, once per fine-tuning seed (the test sets are small,
so one run is within a few points of noise), and scores attributes zero-shot with the
pretrained image-text backbone. Each task uses its default recipe for the initialisation
(`train_attributes` freezes batch-norm statistics of a pretrained encoder, trains those of a
random one). Prints one table (percent, mean and standard deviation over the seeds) and
writes ``results.json`` into ``--out``.

Usage:

```
python benchmarks/attr_search_transfer.py                       # the CPU-sized comparison
python benchmarks/attr_search_transfer.py --tiny                # smoke run, about a minute
python benchmarks/attr_search_transfer.py --init runs/pretrain  # reuse a pretraining run
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
    parser.add_argument("--out", default="bench_attr_search", help="output folder")
    parser.add_argument("--preset", default="small", help="SynthPed preset (default small)")
    parser.add_argument("--image-size", type=_size, default=(128, 64), metavar="HxW")
    parser.add_argument("--config", default="tiny", help="image encoder configuration")
    parser.add_argument("--init", default=None, metavar="RUN_DIR",
                        help="an existing pretraining run (skips pretraining)")
    parser.add_argument("--pretrain-steps", type=int, default=2000)
    parser.add_argument("--attr-epochs", type=int, default=10)
    parser.add_argument("--search-epochs", type=int, default=10)
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="cap on fine-tuning steps per epoch (default: one pass)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and pretraining")
    parser.add_argument("--finetune-seeds", type=int, nargs="+", default=[0, 1, 2],
                        metavar="SEED", help="one fine-tuning run per seed (default 0 1 2)")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke run: tiny SynthPed at 64x32, a few steps per stage")
    args = parser.parse_args(argv)
    if args.tiny:
        args.preset, args.image_size, args.batch_size = "tiny", (64, 32), 8
        args.pretrain_steps, args.attr_epochs, args.search_epochs = 2, 1, 1
        args.steps_per_epoch, args.finetune_seeds = 2, [0]
    return args


def _summary(runs: list[dict], key: str) -> tuple[float, float]:
    import numpy as np

    values = np.array([run[key] for run in runs], np.float64)
    return float(values.mean()), float(values.std())


def run(args: argparse.Namespace) -> dict:
    """Runs every stage; returns the results dict (fractions)."""
    import keras

    from valpat_keras.data import registry
    from valpat_keras.data.synthped import SynthPedConfig, ensure_synthped
    from valpat_keras.tasks import (
        AttributesRunConfig,
        SearchRunConfig,
        train_attributes,
        train_search,
    )

    out = Path(args.out)
    size = tuple(args.image_size)
    started = time.time()
    config = SynthPedConfig.preset(args.preset, seed=args.seed, height=size[0], width=size[1])
    info = ensure_synthped(out / "synthped", config)
    pa100k = registry.load("pa100k", info.paths["pa100k"])
    cuhk = registry.load("cuhk_pedes", info.paths["cuhk_pedes"])
    print(pa100k.summary())
    print(cuhk.summary())

    run_dir = args.init
    if run_dir is None:
        from valpat_keras.tasks.pretraining import pretrain

        run_dir = str(out / "pretrain")
        print(f"pretraining VAL-PAT for {args.pretrain_steps} steps -> {run_dir}", flush=True)
        pretrain(registry.load("luperson_ta", info.paths["pretrain_manifest"]), run_dir,
                 config=args.config, steps=args.pretrain_steps, batch_size=args.batch_size,
                 image_size=size, seed=args.seed, verbose=0)

    results: dict = {"backend": keras.backend.backend(), "preset": args.preset,
                     "image_size": list(size), "pretrain_run": run_dir,
                     "finetune_seeds": list(args.finetune_seeds)}
    for name, init in (("random", "random"), ("valpat", run_dir)):
        runs = []
        for seed in args.finetune_seeds:
            print(f"attribute recognition and text search from {init}, seed {seed}", flush=True)
            zero_shot = name == "valpat" and seed == args.finetune_seeds[0]
            attributes = train_attributes(
                pa100k, out / f"attributes_{name}_seed{seed}", AttributesRunConfig(
                    init=init, encoder_config=args.config, epochs=args.attr_epochs,
                    batch_size=args.batch_size, image_size=size, seed=seed,
                    zero_shot=zero_shot, steps_per_epoch=args.steps_per_epoch, verbose=0))
            search = train_search(
                cuhk, out / f"search_{name}_seed{seed}", SearchRunConfig(
                    init=init, encoder_config=args.config, epochs=args.search_epochs,
                    batch_size=args.batch_size, image_size=size if name == "random" else None,
                    seed=seed, steps_per_epoch=args.steps_per_epoch, image_to_text=False,
                    verbose=0))
            runs.append({"seed": seed, "attribute_ma": attributes["ma"],
                         "search_R1": search["R1"], "search_mAP": search["mAP"]})
            if zero_shot:
                results["zero_shot_attribute_ma"] = attributes["zero_shot"]["ma"]
        results[name] = {"runs": runs}
        for key in ("attribute_ma", "search_R1", "search_mAP"):
            results[name][key], results[name][f"{key}_std"] = _summary(runs, key)
    results["seconds"] = round(time.time() - started, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv: list[str] | None = None) -> None:
    """Prints the comparison table."""
    args = parse_args(argv)
    results = run(args)
    seeds = " ".join(map(str, results["finetune_seeds"]))
    print(f"\nSynthPed {results['preset']} at {args.image_size[0]}x{args.image_size[1]}, "
          f"backend {results['backend']}, fine-tuning seeds {seeds} (mean ± std), "
          f"{results['seconds']} s")
    print(f"{'initialisation':<22}{'attr mA':>14}{'search R1':>14}{'search mAP':>14}")
    for name, label in (("random", "random"), ("valpat", "VAL-PAT pretrained")):
        row = results[name]
        cells = "".join(f"{100 * row[k]:>8.2f} ± {100 * row[k + '_std']:<3.1f}"
                        for k in ("attribute_ma", "search_R1", "search_mAP"))
        print(f"{label:<22}{cells}")
    print(f"{'zero-shot (VAL-PAT)':<22}{100 * results['zero_shot_attribute_ma']:>8.2f}"
          f"{'-':>14}{'-':>14}")


if __name__ == "__main__":
    main()
