import keras
import numpy as np
import pytest
from PIL import Image

from valpat_keras.data.records import ReIDRecord
from valpat_keras.evaluation import (
    ReIDEvaluationCallback,
    ReIDEvaluator,
    evaluate_reid,
    extract_features,
    re_ranking_from_features,
)

pytestmark = pytest.mark.keras

SIZE = (16, 8)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Two cameras x 3 identities; each identity has its own colour, left half darker."""
    root = tmp_path_factory.mktemp("reid")
    colours = {1: (220, 30, 30), 2: (30, 220, 30), 3: (30, 30, 220)}
    query, gallery = [], []
    for pid, colour in colours.items():
        for cam, split in ((0, query), (1, gallery)):
            pixels = np.tile(np.array(colour, np.uint8), (SIZE[0], SIZE[1], 1))
            pixels[:, : SIZE[1] // 2] //= 2 + cam
            path = root / f"{pid:04d}_c{cam + 1}.png"
            Image.fromarray(pixels).save(path)
            split.append(ReIDRecord(str(path), pid, cam))
    return query, gallery


def _flatten_model():
    inputs = keras.Input((*SIZE, 3))
    return keras.Model(inputs, keras.layers.Flatten()(inputs))


def test_extract_features_flip_and_normalize(records):
    query, _ = records
    raw = extract_features(_flatten_model(), query, SIZE, batch_size=2, flip=False,
                           normalize=False, verbose=False)
    images = raw.features.reshape(-1, *SIZE, 3)
    assert raw.features.shape == (3, SIZE[0] * SIZE[1] * 3)
    np.testing.assert_array_equal(raw.pids, [1, 2, 3])
    np.testing.assert_array_equal(raw.camids, [0, 0, 0])
    assert 0.0 <= images.min() and images.max() <= 1.0
    flipped = extract_features(_flatten_model(), [r.path for r in query], SIZE, batch_size=2,
                               flip=True, normalize=True, verbose=False)
    assert flipped.pids is None and flipped.camids is None
    expected = (images + images[:, :, ::-1]).reshape(3, -1) / 2
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(flipped.features, expected, atol=1e-6)


def test_evaluator_and_callback_write_history(records):
    query, gallery = records
    evaluator = ReIDEvaluator(query, gallery, image_size=SIZE, batch_size=4)
    inputs = keras.Input((*SIZE, 3))
    embedding = keras.layers.GlobalAveragePooling2D(name="embedding")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(embedding))
    assert evaluator.evaluate(keras.Model(inputs, embedding))["rank1"] == 1.0

    callback = ReIDEvaluationCallback(evaluator, lambda: keras.Model(model.input, embedding),
                                      every_n_epochs=2)
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).random((4, *SIZE, 3)).astype(np.float32)
    history = model.fit(x, np.zeros((4, 2), np.float32), epochs=3, batch_size=2, verbose=0,
                        callbacks=[callback])
    assert history.history["val_rank1"] == [1.0]  # evaluated after epoch 2 only
    assert 0.0 < history.history["val_mAP"][0] <= 1.0
    assert list(callback.results) == [1]
    with pytest.raises(ValueError, match="every_n_epochs"):
        ReIDEvaluationCallback(evaluator, every_n_epochs=0)


def test_evaluator_extract_then_score_is_evaluate_and_rerank_can_be_chosen(records):
    query, gallery = records
    evaluator = ReIDEvaluator(query, gallery, image_size=SIZE, batch_size=4, metric="cosine")
    model = _flatten_model()
    q, g = evaluator.extract(model)
    direct = extract_features(model, query, SIZE, batch_size=4, verbose=False)
    np.testing.assert_allclose(q.features, direct.features, atol=1e-6)
    assert evaluator.score(q, g)["mAP"] == evaluator.evaluate(model)["mAP"]
    reranked = evaluator.score(q, g, rerank=True)
    expected = evaluate_reid(re_ranking_from_features(q.features, g.features, metric="cosine"),
                             q.pids, g.pids, q.camids, g.camids)
    assert reranked["mAP"] == pytest.approx(float(expected["mAP"]), abs=1e-9)
    assert reranked["mINP"] == pytest.approx(float(expected["mINP"]), abs=1e-9)
