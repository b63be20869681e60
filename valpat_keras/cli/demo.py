"""`valpat demo`: the whole VAL-PAT story on synthetic pedestrians, one results table.

Example:

```
valpat demo                    # under 20 minutes on a 2-core CPU, writes valpat_demo/
valpat demo --quick --out /tmp/demo
valpat demo --publish tutorials/results.md   # and regenerate the docs' results page
```

Generates SynthPed, pretrains with the three objectives, runs the objective ablation and every
transfer from random and from pretrained initialisation, and writes ``results.md``,
``results.json`` and the figures into ``--out``. See `valpat_keras.demo.run_demo`.
"""

from __future__ import annotations

import argparse

from valpat_keras.cli.arg_types import non_negative_int
from valpat_keras.demo import publish_results, run_demo


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Adds the `demo` subcommand."""
    parser = subparsers.add_parser(
        "demo", help="run the whole story on SynthPed and print one results table",
        description="Generate SynthPed, pretrain VAL-PAT (three objectives), run the objective "
                    "ablation and every transfer (supervised and unsupervised re-ID, "
                    "attributes with zero-shot, text search) from random and pretrained "
                    "initialisation, and write results.md, results.json and figures.")
    parser.add_argument("--out", default="valpat_demo", metavar="DIR",
                        help="output folder (default: valpat_demo)")
    parser.add_argument("--quick", action="store_true",
                        help="the smoke version: tiny SynthPed, two steps per stage")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="random seed (default: 0)")
    parser.add_argument("--fresh", action="store_true",
                        help="retrain the pretraining runs instead of reusing OUT/cache")
    parser.add_argument("--publish", metavar="PAGE", default=None,
                        help="also write the documentation's results page from this run "
                             "(e.g. tutorials/results.md; figures go beside it)")
    parser.add_argument("--verbose", action="store_true",
                        help="show the Keras progress bar of every training run")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Runs the demo; errors of any stage propagate. Returns the exit status."""
    run_demo(args.out, quick=args.quick, seed=args.seed, verbose=1 if args.verbose else 0,
             fresh=args.fresh)
    if args.publish:
        print(f"wrote {publish_results(args.out, args.publish)}")
    return 0
