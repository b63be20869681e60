"""Does a short VAL-PAT pretraining run learn? Loss curves and frozen-feature retrieval.

Generates SynthPed (its pretraining identities are disjoint from the Market-1501-style reID
identities), pretrains on the pretraining set with all three objectives (or reuses ``--init``),
then prints (1) every objective's loss in the first and the last epoch and (2) the kNN
retrieval of held-out identities with frozen features — mAP / rank-1 on the reID query and
gallery split — for the randomly initialised encoder and for the pretrained one.

Usage:

```
python benchmarks/pretrain_quality.py                        # CPU-sized: 500 steps at 128x64
python benchmarks/pretrain_quality.py --init runs/pretrain   # score an existing run
python benchmarks/pretrain_quality.py --steps 20 --preset tiny --image-size 64x32  # smoke
```
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import keras

from valpat_keras import datasets
from valpat_keras.data.synthped import SynthPedConfig, ensure_synthped
from valpat_keras.models.init import load_image_encoder
from valpat_keras.tasks.pretraining import PretrainConfig, pretrain
from valpat_keras.tasks.reid_training import evaluate_reid_model


def _size(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_pretrain_quality", help="output folder")
    parser.add_argument("--preset", default="small", help="SynthPed preset (default small)")
    parser.add_argument("--image-size", type=_size, default=(128, 64), metavar="HxW")
    parser.add_argument("--steps", type=int, default=500, help="pretraining steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--init", default=None, metavar="RUN_DIR",
                        help="an existing pretraining run (skips pretraining)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    out = Path(args.out)
    data_root = out / "synthped"
    height, width = args.image_size
    ensure_synthped(data_root, SynthPedConfig.preset(args.preset, seed=args.seed,
                                                     height=height, width=width))
    run_dir = Path(args.init) if args.init else out / "pretrain"
    if args.init is None:
        config = PretrainConfig(encoder_config="tiny", steps=args.steps,
                                batch_size=args.batch_size, image_size=args.image_size,
                                seed=args.seed, verbose=2)
        pretrain(str(data_root / "pretrain" / "manifest.jsonl"), run_dir, config)
    history = json.loads((run_dir / "history.json").read_text())
    reid = datasets.load("market1501", str(data_root))

    results = {"losses": {}, "knn": {}}
    print(f"{'objective':<12}{'first epoch':>14}{'last epoch':>14}")
    for key in sorted(k for k in history if k.endswith("loss")):
        first, last = history[key][0], history[key][-1]
        results["losses"][key] = {"first": first, "last": last}
        print(f"{key:<12}{first:>14.4f}{last:>14.4f}")
    print(f"\n{'encoder':<12}{'mAP':>8}{'rank1':>8}   (frozen features, held-out identities)")
    for name, init in (("random", "random"), ("pretrained", str(run_dir))):
        keras.utils.set_random_seed(args.seed)
        encoder = load_image_encoder(init, config="tiny", image_size=args.image_size)
        scores = evaluate_reid_model(encoder, reid, args.image_size, batch_size=64)
        results["knn"][name] = {"mAP": scores["mAP"], "rank1": scores["rank1"]}
        print(f"{name:<12}{100 * scores['mAP']:>8.1f}{100 * scores['rank1']:>8.1f}")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
