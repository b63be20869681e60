"""Attribute recognition and text search transfer: random vs VAL-PAT-pretrained initialisation.

Generates SynthPed (its pretraining identities are disjoint from those of the PA-100K-style
and CUHK-PEDES-style sets), pretrains VAL-PAT on the pretraining set (or reuses ``--init``),
then fine-tunes attribute recognition and text-based person search from random and from
pretrained weights with the same budget, and scores attributes zero-shot with the pretrained
image-text backbone. Prints one table (percent) and writes ``results.json`` into ``--out``.

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
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--attr-epochs", type=int, default=10)
    parser.add_argument("--search-epochs", type=int, default=10)
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="cap on fine-tuning steps per epoch (default: one pass)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true",
                        help="smoke run: tiny SynthPed at 64x32, a few steps per stage")
    args = parser.parse_args(argv)
    if args.tiny:
        args.preset, args.image_size, args.batch_size = "tiny", (64, 32), 8
        args.pretrain_steps, args.attr_epochs, args.search_epochs = 2, 1, 1
        args.steps_per_epoch = 2
    return args


def run(args: argparse.Namespace) -> dict:
    """Runs every stage; returns the results dict (fractions)."""
    import keras

    from valpat_keras.data import registry
    from valpat_keras.data.synthped import SynthPedConfig, write_synthped
    from valpat_keras.tasks.attributes import train_attributes
    from valpat_keras.tasks.search import train_search

    out = Path(args.out)
    size = tuple(args.image_size)
    started = time.time()
    config = SynthPedConfig.preset(args.preset, seed=args.seed, height=size[0], width=size[1])
    info = write_synthped(out / "synthped", config)
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
                     "image_size": list(size), "pretrain_run": run_dir}
    for name, init in (("random", "random"), ("valpat", run_dir)):
        print(f"attribute recognition and text search from {init}", flush=True)
        attributes = train_attributes(
            pa100k, out / f"attributes_{name}", init=init, config=args.config,
            epochs=args.attr_epochs, batch_size=args.batch_size, image_size=size,
            seed=args.seed, zero_shot=name == "valpat", steps_per_epoch=args.steps_per_epoch,
            verbose=0)
        search = train_search(
            cuhk, out / f"search_{name}", init=init, config=args.config,
            epochs=args.search_epochs, batch_size=args.batch_size,
            image_size=size if name == "random" else None, seed=args.seed,
            steps_per_epoch=args.steps_per_epoch, image_to_text=False, verbose=0)
        results[name] = {"attribute_ma": attributes["ma"], "search_R1": search["R1"],
                         "search_mAP": search["mAP"]}
        if name == "valpat":
            results["zero_shot_attribute_ma"] = attributes["zero_shot"]["ma"]
    results["seconds"] = round(time.time() - started, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv: list[str] | None = None) -> None:
    """Prints the comparison table."""
    args = parse_args(argv)
    results = run(args)
    print(f"\nSynthPed {results['preset']} at {args.image_size[0]}x{args.image_size[1]}, "
          f"backend {results['backend']}, {results['seconds']} s")
    print(f"{'initialisation':<22}{'attr mA':>10}{'search R1':>12}{'search mAP':>12}")
    for name, label in (("random", "random"), ("valpat", "VAL-PAT pretrained")):
        row = results[name]
        print(f"{label:<22}{100 * row['attribute_ma']:>10.2f}{100 * row['search_R1']:>12.2f}"
              f"{100 * row['search_mAP']:>12.2f}")
    print(f"{'zero-shot (VAL-PAT)':<22}{100 * results['zero_shot_attribute_ma']:>10.2f}"
          f"{'-':>12}{'-':>12}")


if __name__ == "__main__":
    main()
