"""Recompute a run's test metrics from what it saved, for the CLI and demo tests.

The commands score their models through `valpat_keras.evaluation.extract_features`, blockwise
distances and the blockwise metric accumulators. These helpers take the saved model (or
preset) and score it a second way: images decoded by the pipeline's `image_dataset`,
embedded batch by batch here (flip averaging and L2 normalisation written out), one dense
distance matrix and the dense metric functions (`evaluate_reid`, `re_ranking`,
`evaluate_attributes`, `evaluate_text_search`). A number a command writes that is not the
metric of the model it saved (wrong split, a stale model, a mixed-up key, a flip on the wrong
axis) differs from these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest

REID_KEYS = ("rank1", "rank5", "rank10", "mAP", "mINP")
SEARCH_KEYS = ("R1", "R5", "R10", "mAP", "mINP")
ATTRIBUTE_KEYS = ("ma", "instance_acc", "instance_prec", "instance_recall", "instance_f1")


def _batches(paths: Sequence[str], image_size: tuple[int, int], batch_size: int):
    # Imported here: importing the pipelines imports TensorFlow and Keras, which the demo
    # test's own process never does.
    from valpat_keras.data.pipelines import image_dataset

    for batch in image_dataset(list(paths), tuple(image_size), batch_size):
        yield np.asarray(batch, dtype=np.float32)


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def embed(model, paths: Sequence[str], image_size: tuple[int, int], batch_size: int = 16,
          flip: bool = True) -> np.ndarray:
    """L2-normalised embeddings of image files, averaged with their mirror images."""
    import keras

    chunks = []
    for batch in _batches(paths, image_size, batch_size):
        out = keras.ops.convert_to_numpy(model(batch, training=False))
        if flip:
            mirrored = np.ascontiguousarray(batch[:, :, ::-1, :])
            out = (out + keras.ops.convert_to_numpy(model(mirrored, training=False))) / 2
        chunks.append(out)
    return _l2(np.concatenate(chunks))


def reid_metrics(model, dataset, image_size: tuple[int, int], rerank: bool = False) -> dict:
    """Market-1501 scores of an embedding model on ``dataset.query`` / ``dataset.gallery``.

    Cosine distance of flip-averaged, L2-normalised embeddings, dense; ``"rerank"`` holds the
    k-reciprocal re-ranked scores (k1 20, k2 6, lambda 0.3, the commands' defaults).
    """
    from valpat_keras.evaluation import evaluate_reid, re_ranking

    q, g = dataset.query, dataset.gallery
    qf = embed(model, [r.path for r in q], image_size)
    gf = embed(model, [r.path for r in g], image_size)
    ids = ([r.pid for r in q], [r.pid for r in g], [r.camid for r in q], [r.camid for r in g])
    ids = [np.asarray(a, dtype=np.int64) for a in ids]

    def cosine(a, b):
        return 1.0 - a @ b.T

    result = evaluate_reid(cosine(qf, gf), *ids)
    if rerank:
        reranked = re_ranking(cosine(qf, gf), cosine(qf, qf), cosine(gf, gf))
        result["rerank"] = evaluate_reid(reranked, *ids)
    return result


def assert_metrics_equal(saved: Mapping, expected: Mapping, keys: Sequence[str],
                         atol: float = 1e-6) -> None:
    """``saved[key] == expected[key]`` for every key, within ``atol`` (fractions)."""
    for key in keys:
        assert saved[key] == pytest.approx(float(expected[key]), abs=atol), key


def assert_reid_metrics_equal(saved: Mapping, expected: Mapping, atol: float = 1e-6) -> None:
    """The headline scores, the valid-query count and the saved CMC prefix agree."""
    assert_metrics_equal(saved, expected, REID_KEYS, atol)
    assert saved["num_valid_queries"] == int(expected["num_valid_queries"])
    cmc = saved["cmc"]
    assert cmc == pytest.approx(list(np.asarray(expected["cmc"])[: len(cmc)]), abs=atol)


def attribute_metrics(model, dataset, batch_size: int = 16) -> dict:
    """`evaluate_attributes` of a saved `AttributeRecognizer` on the evaluated attributes.

    Probabilities are the sigmoid of the model's logits on the test images (no flip, as the
    attribute protocol), labels those of ``dataset.test``.
    """
    import keras

    from valpat_keras.evaluation import evaluate_attributes

    size = tuple(model.backbone.image_shape[:2])
    logits = np.concatenate([keras.ops.convert_to_numpy(model(batch, training=False))
                             for batch in _batches([r.path for r in dataset.test], size,
                                                   batch_size)])
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    labels = np.asarray([r.attributes for r in dataset.test], dtype=np.float32)
    keep = list(dataset.eval_indices)
    return evaluate_attributes(labels[:, keep], probs[:, keep])


def caption_image_cosines(backbone, tokenizer, captions: Sequence[str], paths: Sequence[str],
                          batch_size: int = 16) -> np.ndarray:
    """``(C, N)`` cosine similarities of captions to image files in a backbone's space.

    Images embedded without flip (the search protocol), captions tokenised by ``tokenizer``.
    """
    import keras

    size = tuple(backbone.image_encoder.image_shape[:2])
    images = np.concatenate([
        keras.ops.convert_to_numpy(backbone.get_image_embeddings(batch, training=False))
        for batch in _batches(paths, size, batch_size)])
    ids = np.asarray(tokenizer(list(captions)))
    text = keras.ops.convert_to_numpy(backbone.get_text_embeddings(ids, training=False))
    return _l2(text) @ _l2(images).T


def search_metrics(backbone, tokenizer, records, batch_size: int = 16) -> dict:
    """IRRA text-to-image scores of a backbone: every caption queries every image.

    ``"i2t"`` holds the image-to-text scores of the same similarities.
    """
    from valpat_keras.evaluation import evaluate_text_search

    captions = [c for r in records for c in r.captions]
    similarity = caption_image_cosines(backbone, tokenizer, captions,
                                       [r.path for r in records], batch_size)
    q_pids = np.asarray([r.pid for r in records for _ in r.captions], np.int64)
    g_pids = np.asarray([r.pid for r in records], np.int64)
    result = evaluate_text_search(similarity, q_pids, g_pids)
    result["i2t"] = evaluate_text_search(similarity.T, g_pids, q_pids)
    return result


def demo_run_metrics(out_dir: str, seed: int) -> dict:
    """The transfer metrics of a `valpat demo` output folder, recomputed from its saved runs.

    Reads ``OUT/runs/{task}_{init}_seed{seed}`` for both inits and every task of the demo,
    and the SynthPed sets of ``OUT/synthped``.

    Returns:
        ``{task: {init: {metric: value}}}``.
    """
    from pathlib import Path

    import keras

    # The task modules register the classes `load_model` looks up (`import valpat_keras`
    # alone does not import them).
    import valpat_keras.tasks.attributes
    import valpat_keras.tasks.reid
    import valpat_keras.tasks.unsupervised_reid  # noqa: F401
    from valpat_keras.data import registry
    from valpat_keras.models import load_backbone

    out = Path(out_dir)
    data = {name: registry.load(name, out / "synthped")
            for name in ("market1501", "pa100k", "cuhk_pedes")}
    result = {}
    for task in ("reid_supervised", "reid_unsupervised", "attributes", "text_search"):
        for init in ("random", "valpat"):
            run = out / "runs" / f"{task}_{init}_seed{seed}"
            if task.startswith("reid"):
                model = keras.saving.load_model(run / "reid_model.keras")
                size = tuple(model.backbone.image_shape[:2])
                scores = reid_metrics(model.embedding_model, data["market1501"], size)
            elif task == "attributes":
                model = keras.saving.load_model(run / "attribute_recognizer.keras")
                scores = attribute_metrics(model, data["pa100k"])
            else:
                text = data["cuhk_pedes"]
                scores = search_metrics(*load_backbone(run), text.test or text.val)
            result.setdefault(task, {})[init] = {
                k: float(v) for k, v in scores.items() if np.ndim(v) == 0 and k != "i2t"}
    return result


if __name__ == "__main__":
    # `python tests/metric_checks.py OUT SEED`: the demo test runs this in a subprocess on
    # the demo's backend, so that its own process never imports Keras.
    import json
    import sys

    print("RESULT " + json.dumps(demo_run_metrics(sys.argv[1], int(sys.argv[2]))))
