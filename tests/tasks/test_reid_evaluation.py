"""`evaluate_reid_model`, `load_reid_embedding` and `evaluate_reid_encoder` (``valpat evaluate``)."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from valpat_keras.data.records import ReIDDataset, ReIDRecord
from valpat_keras.errors import InputError
from valpat_keras.evaluation import (
    evaluate_reid,
    extract_features,
    pairwise_distance,
    re_ranking_from_features,
)
from valpat_keras.models import ImageEncoder, build_image_encoder
from valpat_keras.tasks.reid import ReIDModel
from valpat_keras.tasks.reid_training import (
    MODEL_FILE,
    ReIDEvaluationConfig,
    evaluate_reid_encoder,
    evaluate_reid_model,
    load_reid_embedding,
)

pytestmark = pytest.mark.keras

SIZE = (32, 16)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """5 identities, 2 query images (camera 0) and 3 gallery images (cameras 1, 2) each."""
    root = tmp_path_factory.mktemp("reid_eval")
    rng = np.random.default_rng(4)
    query, gallery = [], []
    for pid in range(5):
        colour = rng.uniform(size=3)
        for i in range(5):
            image = 0.1 * colour + 0.9 * rng.uniform(size=(*SIZE, 3))
            path = root / f"{pid}_{i}.png"
            Image.fromarray((255 * image).astype("uint8")).save(path)
            split, camid = (query, 0) if i < 2 else (gallery, 1 + i % 2)
            split.append(ReIDRecord(str(path), pid, camid))
    return ReIDDataset("toy", str(root), [], query, gallery)


def _pooling_model():
    inputs = keras.Input((*SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    spatial = keras.layers.Flatten()(keras.layers.AveragePooling2D(8)(inputs))
    return keras.Model(inputs, keras.layers.Concatenate()([pooled, spatial]))


def _recomputed(model, dataset, rerank):
    kwargs = {"image_size": SIZE, "batch_size": 4, "flip": True, "normalize": True,
              "verbose": False}
    q = extract_features(model, dataset.query, **kwargs)
    g = extract_features(model, dataset.gallery, **kwargs)
    if rerank:
        distmat = re_ranking_from_features(q.features, g.features, metric="cosine")
    else:
        distmat = pairwise_distance(q.features, g.features, "cosine")
    return evaluate_reid(distmat, q.pids, g.pids, q.camids, g.camids)


def test_evaluate_reid_model_equals_the_metrics_recomputed_from_the_features(dataset,
                                                                            tmp_path):
    model = _pooling_model()
    metrics = evaluate_reid_model(model, dataset, SIZE, batch_size=4, rerank=True,
                                  plot_path=tmp_path / "ranked.png")
    for scores, rerank in ((metrics, False), (metrics["rerank"], True)):
        expected = _recomputed(model, dataset, rerank)
        for key in ("rank1", "rank5", "rank10", "mAP", "mINP"):
            assert scores[key] == pytest.approx(float(expected[key]), abs=1e-9), key
        np.testing.assert_allclose(scores["cmc"], np.asarray(expected["cmc"])[:20])
        assert scores["num_valid_queries"] == len(dataset.query)
    assert 0.0 < metrics["mAP"] < 1.0  # a ranking that is neither perfect nor empty
    assert (tmp_path / "ranked.png").stat().st_size > 0
    assert "rerank" not in evaluate_reid_model(model, dataset, SIZE, batch_size=4)


def test_load_reid_embedding_prefers_a_reid_run_and_names_a_corrupt_one(tmp_path):
    encoder = load_reid_embedding("random", "tiny", SIZE)
    assert isinstance(encoder, ImageEncoder) and tuple(encoder.image_shape[:2]) == SIZE
    keras.utils.set_random_seed(0)
    task = ReIDModel(build_image_encoder("tiny", SIZE), num_classes=3)
    task.save(tmp_path / MODEL_FILE)
    embedding = load_reid_embedding(str(tmp_path))
    assert embedding.name == "reid_embedding"
    images = np.random.default_rng(0).uniform(size=(4, *SIZE, 3)).astype("float32")
    np.testing.assert_allclose(embedding.predict(images, verbose=0), task.embed(images),
                               atol=1e-6)
    (tmp_path / MODEL_FILE).write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(InputError, match="cannot load the re-ID model"):
        load_reid_embedding(str(tmp_path))


def test_evaluate_reid_encoder_writes_the_evaluation_folder(dataset, tmp_path):
    keras.utils.set_random_seed(1)
    config = ReIDEvaluationConfig(image_size=SIZE, batch_size=4, rerank=True)
    metrics = evaluate_reid_encoder(dataset, tmp_path / "eval", config,
                                    record={"data": "toy:/x"})
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved == metrics
    assert saved["data"] == "toy:/x" and saved["init"] == "random"
    assert saved["rank1"] <= saved["rank5"] <= saved["rank10"]
    assert set(saved["rerank"]) == {"rank1", "rank5", "rank10", "mAP", "mINP",
                                    "num_valid_queries", "cmc"}
    for name in ("ranked_results.png", "cmc.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 0
