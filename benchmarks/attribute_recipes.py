"""Attribute fine-tuning recipes, random vs pretrained: head learning rate, batch-norm
freezing, the loss's class weighting and the head's initialisation (prior bias or a linear
probe of the frozen features, LP-FT).

Runs `train_attributes` on a PA-100K-layout set with each recipe, each initialisation and each
seed (same budget everywhere), and prints validation and test mA as mean ± standard deviation
over the seeds; recipes are chosen on validation, test is reported beside it. A randomly
initialised encoder is only run with trained batch norm (its statistics are not worth
keeping). Runs whose ``metrics.json`` exists in ``--out`` are read back instead of trained
again, so an interrupted comparison resumes. Writes ``results.json`` into ``--out``.

Usage:

```
valpat demo                                     # writes valpat_demo/ (data + pretraining run)
python benchmarks/attribute_recipes.py --data valpat_demo/synthped/PA-100K \\
    --init valpat_demo/pretrain --image-size 64x32 --epochs 4 --steps-per-epoch 25
```
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: (label, head_lr_multiplier, freeze_batch_norm, loss_weighting, head_init)
RECIPES = (
    ("one learning rate, BN trained", 1.0, False, "deepmar", "prior"),
    ("one learning rate, BN frozen", 1.0, True, "deepmar", "prior"),
    ("head lr x10, BN trained", 10.0, False, "deepmar", "prior"),
    ("head lr x10, BN frozen", 10.0, True, "deepmar", "prior"),
    ("x10, BN trained, balanced BCE", 10.0, False, "balanced", "prior"),
    ("x10, BN frozen, balanced BCE", 10.0, True, "balanced", "prior"),
    ("x10, BN trained, balanced, LP-FT", 10.0, False, "balanced", "linear_probe"),
    ("x10, BN frozen, balanced, LP-FT", 10.0, True, "balanced", "linear_probe"),
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
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="cap on the steps per epoch (default: one pass)")
    parser.add_argument("--publish", default=None, metavar="MD",
                        help="also write the table as Markdown to this file (for the docs)")
    parser.add_argument("--recipes", type=int, nargs="+", default=None, metavar="INDEX",
                        help="run only these rows of RECIPES (0-based; default all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=_size, default=(128, 64), metavar="HxW")
    parser.add_argument("--config", default="tiny", help="encoder configuration (random init)")
    return parser.parse_args(argv)


def _run(args, dataset, init_name: str, recipe: tuple, seed: int) -> dict:
    """Validation and test mA of one run (read back when already done)."""
    from valpat_keras.tasks import AttributesRunConfig, train_attributes

    _, head_lr, freeze, weighting, head_init = recipe
    slug = (f"{init_name}_head{head_lr:g}_{'frozen' if freeze else 'trained'}bn_{weighting}_"
            f"{head_init}_seed{seed}")
    out = Path(args.out) / slug
    if not (out / "metrics.json").is_file():
        print(f"{slug} ...", flush=True)
        config = AttributesRunConfig(
            init="random" if init_name == "random" else args.init, encoder_config=args.config,
            epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size,
            seed=seed, head_lr_multiplier=head_lr, freeze_batch_norm=freeze,
            loss_weighting=weighting, head_init=head_init,
            steps_per_epoch=args.steps_per_epoch, verbose=0)
        train_attributes(dataset, out, config)
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
    chosen = RECIPES if args.recipes is None else [RECIPES[i] for i in args.recipes]
    for recipe in chosen:
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
    from valpat_keras.run_outputs import environment_info, write_json, write_report

    env = environment_info()
    write_json(Path(args.out) / "results.json", {
        "arguments": {k: v for k, v in vars(args).items()}, "environment": env,
        "rows": [{"recipe": label, "random": cells[0], "valpat": cells[1]}
                 for label, cells in rows]})
    if args.publish:
        def cell(c):
            if c is None:
                return "—"
            return (f"{c['val_ma'][0]:.1f} ± {c['val_ma'][1]:.1f} / "
                    f"{c['test_ma'][0]:.1f} ± {c['test_ma'][1]:.1f}")

        lines = ["| recipe (validation / test mA, %) | random init | VAL-PAT init |",
                 "|---|---:|---:|"]
        lines += [f"| {label} | {cell(cells[0])} | {cell(cells[1])} |" for label, cells in rows]
        lines += ["", f"Seeds {seeds}; {args.epochs} epochs"
                  + (f" of {args.steps_per_epoch} steps" if args.steps_per_epoch else "")
                  + f" at {args.image_size[0]}x{args.image_size[1]}, batch {args.batch_size}; "
                  f"data `{args.data}`, init `{args.init}`; {env['cpu']}, {env['cores']} cores, "
                  f"{env['date']}."]
        write_report("\n".join(lines) + "\n", Path(args.out) / "attribute_recipes.md",
                     args.publish)


if __name__ == "__main__":
    main()
