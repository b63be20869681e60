"""Attribute fine-tuning recipes: head learning rate and batch-norm freezing, random vs pretrained.

Runs `train_attributes` on a PA-100K-layout set with each recipe, each initialisation and each
seed (same budget everywhere), and prints validation and test mA as mean ± standard deviation
over the seeds. A randomly initialised encoder is only run with trained batch norm (its
statistics are not worth keeping). Runs whose ``metrics.json`` exists in ``--out`` are read
back instead of trained again, so an interrupted comparison resumes.

Usage:

```
python benchmarks/attr_search_transfer.py                # writes bench_attr_search/ (data + run)
python benchmarks/attribute_recipes.py --data bench_attr_search/synthped/PA-100K \\
    --init bench_attr_search/pretrain
```
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: (label, head_lr_multiplier, freeze_batch_norm)
RECIPES = (
    ("one learning rate, BN trained", 1.0, False),
    ("one learning rate, BN frozen", 1.0, True),
    ("head lr x10, BN trained", 10.0, False),
    ("head lr x10, BN frozen", 10.0, True),
)


def _size(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The script's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a PA-100K-layout folder")
    parser.add_argument("--init", required=True, metavar="RUN_DIR", help="a pretraining run")
    parser.add_argument("--out", default="bench_attribute_recipes", help="output folder")
    parser.add_argument("--inits", nargs="+", default=["random", "valpat"],
                        choices=["random", "valpat"], help="initialisations to run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=_size, default=(128, 64), metavar="HxW")
    parser.add_argument("--config", default="tiny", help="encoder configuration (random init)")
    return parser.parse_args(argv)


def _run(args, dataset, init_name: str, recipe: tuple, seed: int) -> dict:
    """Validation and test mA of one run (read back when already done)."""
    from valpat_keras.tasks.attributes import train_attributes

    _, head_lr, freeze = recipe
    slug = f"{init_name}_head{head_lr:g}_{'frozen' if freeze else 'trained'}bn_seed{seed}"
    out = Path(args.out) / slug
    if not (out / "metrics.json").is_file():
        print(f"{slug} ...", flush=True)
        train_attributes(dataset, out, init="random" if init_name == "random" else args.init,
                         config=args.config, epochs=args.epochs, batch_size=args.batch_size,
                         image_size=args.image_size, seed=seed, head_lr_multiplier=head_lr,
                         freeze_batch_norm=freeze, verbose=0)
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    return {"val_ma": history["val_ma"][-1], "test_ma": metrics["ma"]}


def main(argv: list[str] | None = None) -> None:
    """Runs every recipe and prints the table."""
    import numpy as np

    from valpat_keras.data import registry

    args = parse_args(argv)
    dataset = registry.load("pa100k", args.data)
    rows = []
    for recipe in RECIPES:
        cells = []
        for init_name in ("random", "valpat"):
            if init_name not in args.inits or (init_name == "random" and recipe[2]):
                cells.append(None)
                continue
            runs = [_run(args, dataset, init_name, recipe, s) for s in args.seeds]
            cells.append({k: (100 * np.mean([r[k] for r in runs]),
                              100 * np.std([r[k] for r in runs])) for k in runs[0]})
        rows.append((recipe[0], cells))
    seeds = " ".join(map(str, args.seeds))
    print(f"\nattribute mA (%), mean ± std over seeds {seeds}: validation / test")
    print(f"{'recipe':<32}{'random init':>29}{'VAL-PAT init':>29}")
    for label, cells in rows:
        text = "".join(
            f"{'-':>29}" if c is None else
            f"{c['val_ma'][0]:>10.1f} ± {c['val_ma'][1]:.1f} / {c['test_ma'][0]:.1f} ± "
            f"{c['test_ma'][1]:.1f}" for c in cells)
        print(f"{label:<32}{text}")


if __name__ == "__main__":
    main()
