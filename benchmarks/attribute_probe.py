"""Attribute linear probe on frozen features: random vs VAL-PAT-pretrained image encoder.

Extracts the encoder's features of a PA-100K-layout set (no fine-tuning), fits one
class-balanced logistic regression per attribute on ``train`` (scikit-learn, standardised
features) and prints the test mA (PA-100K protocol) for the randomly initialised encoder and for
the pretraining run. Next to `attr_search_transfer.py`'s fine-tuned mA, it separates what the
pretrained representation holds from what a fine-tuning recipe keeps of it.

```
python benchmarks/attribute_probe.py --data bench_attr_search/synthped/PA-100K --init RUN_DIR
```
"""

from __future__ import annotations

import argparse

import numpy as np


def _size(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def probe_ma(encoder, dataset, image_size: tuple[int, int], batch_size: int = 64) -> float:
    """Test mA of per-attribute logistic regressions on the frozen features of ``encoder``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from valpat_keras.data.pipelines import image_dataset
    from valpat_keras.evaluation import evaluate_attributes

    def features(records):
        data = image_dataset([r.path for r in records], image_size, batch_size)
        return np.asarray(encoder.predict(data, verbose=0))

    train_y = np.stack([r.attributes for r in dataset.train])
    test_y = np.stack([r.attributes for r in dataset.test])
    scaler = StandardScaler().fit(features(dataset.train))
    train_x = scaler.transform(features(dataset.train))
    test_x = scaler.transform(features(dataset.test))
    probs = np.zeros(test_y.shape, dtype="float32")
    for j in range(train_y.shape[1]):
        known = train_y[:, j] >= 0
        if len(np.unique(train_y[known, j])) < 2:
            continue  # a constant attribute: probability 0 (the protocol scores it)
        model = LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000)
        probs[:, j] = model.fit(train_x[known], train_y[known, j]).predict_proba(test_x)[:, 1]
    idx = dataset.eval_indices
    return float(evaluate_attributes(test_y[:, idx], probs[:, idx])["ma"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a PA-100K-layout folder")
    parser.add_argument("--init", required=True, metavar="RUN_DIR", help="a pretraining run")
    parser.add_argument("--image-size", type=_size, default=(128, 64), metavar="HxW")
    parser.add_argument("--config", default="tiny", help="encoder configuration (random init)")
    args = parser.parse_args(argv)

    from valpat_keras.data import registry
    from valpat_keras.models.init import load_image_encoder

    dataset = registry.load("pa100k", args.data)
    print(f"{'encoder':<12} {'probe mA':>9}   (frozen features, logistic regression per attribute)")
    for name, init in (("random", "random"), ("pretrained", args.init)):
        encoder = load_image_encoder(init, config=args.config, image_size=args.image_size)
        print(f"{name:<12} {100 * probe_ma(encoder, dataset, args.image_size):>9.1f}", flush=True)


if __name__ == "__main__":
    main()
