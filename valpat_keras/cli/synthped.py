"""`valpat synthped OUT_DIR`: write the SynthPed datasets and a preview figure.

Example:

```
valpat synthped /tmp/synthped --preset small --seed 1
```

Writes the pretraining manifest, Market-1501, PA-100K and CUHK-PEDES layouts, `synthped.json`
and `synthped_grid.png` under OUT_DIR. Does not import Keras.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from valpat_keras.cli.arg_types import non_negative_int, positive_int, unit_interval
from valpat_keras.errors import InputError


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Adds the `synthped` subcommand."""
    parser = subparsers.add_parser(
        "synthped", help="write synthetic pedestrian datasets in the real on-disk formats",
        description="Render SynthPed pedestrians and write a LUPerson-TA-style pretraining "
                    "manifest plus Market-1501, PA-100K and CUHK-PEDES layouts.")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="output folder")
    parser.add_argument("--preset", choices=("tiny", "small", "default"), default="small",
                        help="dataset sizes (default: small, the CPU demo)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="random seed (default: 0)")
    parser.add_argument("--height", type=positive_int, default=None,
                        help="image height (preset's)")
    parser.add_argument("--width", type=positive_int, default=None,
                        help="image width (preset's)")
    parser.add_argument("--difficulty", type=unit_interval, default=None,
                        help="identity difficulty in [0, 1] (default: 0.5)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Writes the datasets and the figure; prints what it wrote. Returns 0.

    Raises:
        InputError: A configuration SynthPed cannot render, or an existing output folder.
    """
    # Deferred: rendering (NumPy, PIL, matplotlib) is not needed to parse the arguments.
    from valpat_keras.data.synthped import SynthPedConfig, plot_identity_grid, write_synthped

    overrides = {"seed": args.seed}
    for name in ("height", "width", "difficulty"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    config = SynthPedConfig.preset(args.preset, **overrides)
    try:
        config.validate()
    except ValueError as error:
        raise InputError(str(error)) from None
    start = time.perf_counter()
    try:
        info = write_synthped(args.out_dir, config, progress=lambda m: print(f"  writing {m}"))
    except FileExistsError as error:
        raise InputError(f"{error}; choose another OUT_DIR or remove it") from None
    figure = plot_identity_grid(info, Path(args.out_dir) / "synthped_grid.png")
    print(f"SynthPed ({args.preset}, {config.height}x{config.width}, seed {config.seed}, "
          f"difficulty {config.difficulty}) written in {time.perf_counter() - start:.1f} s:")
    for key, path in info.paths.items():
        print(f"  {key:18s} {path}")
    print(f"  {'summary':18s} {Path(info.root) / 'synthped.json'}")
    print(f"  {'figure':18s} {figure}")
    for key, value in info.counts.items():
        print(f"    {key}: {value}")
    return 0
