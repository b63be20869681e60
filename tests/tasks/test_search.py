"""TextSearchModel (ITC + SDM + ID), evaluation and the PersonSearcher query API."""

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.keras

CAPTIONS = ["a woman in a red coat with a black backpack", "a man in blue shorts",
            "a girl wearing a white skirt", "an old man with a grey hat"]


@pytest.fixture(scope="module")
def backbone_and_tokenizer():
    # Built once per module: building the encoders dominates these tests' time.
    from valpat_keras.tasks.search import build_search_backbone

    return build_search_backbone(CAPTIONS, image_size=(64, 32), embedding_dim=32,
                                 vocabulary_size=80, sequence_length=12)


def _batch(tokenizer, rng):
    images = rng.uniform(size=(8, 64, 32, 3)).astype("float32")
    token_ids = np.asarray(tokenizer(CAPTIONS * 2))
    pids = np.array([0, 1, 2, 3, 0, 1, 2, 3], "int32")
    return {"images": images, "token_ids": token_ids}, pids


def test_loss_combines_itc_sdm_and_id_with_weights(backbone_and_tokenizer):
    from keras import ops

    from valpat_keras.losses.contrastive import symmetric_info_nce
    from valpat_keras.losses.search import identity_loss, sdm_loss
    from valpat_keras.tasks.search import TextSearchModel

    backbone, tokenizer = backbone_and_tokenizer
    x, pids = _batch(tokenizer, np.random.default_rng(0))
    model = TextSearchModel(backbone, num_classes=4, loss_weights={"sdm": 0.5})
    rng = np.random.default_rng(3)
    out = {"image_embedding": rng.normal(size=(8, 32)).astype("float32"),
           "text_embedding": rng.normal(size=(8, 32)).astype("float32"),
           "image_logits": rng.normal(size=(8, 4)).astype("float32"),
           "text_logits": rng.normal(size=(8, 4)).astype("float32")}
    scale = backbone.logit_scale
    itc, _ = symmetric_info_nce(out["image_embedding"], out["text_embedding"], scale)
    sdm = sdm_loss(out["image_embedding"], out["text_embedding"], pids, scale)
    idl = identity_loss(out["image_logits"], out["text_logits"], pids)
    want = float(ops.convert_to_numpy(itc + 0.5 * sdm + idl))
    got = float(ops.convert_to_numpy(model.compute_loss(x, pids, out)))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert {m.name for m in model.metrics} >= {"itc_loss", "itc_acc", "sdm_loss", "id_loss"}

    itc_only = TextSearchModel(backbone, loss_weights={"sdm": 0.0})
    assert itc_only.classifier is None and "image_logits" not in itc_only.output
    assert itc_only.loss_weights == {"itc": 1.0, "sdm": 0.0, "id": 0.0}
    got = float(ops.convert_to_numpy(itc_only.compute_loss(x, pids, out)))
    np.testing.assert_allclose(got, float(ops.convert_to_numpy(itc)), rtol=1e-5)
    with pytest.raises(ValueError, match="unknown loss_weights"):
        TextSearchModel(backbone, loss_weights={"mlm": 1.0})


def test_fit_logs_each_objective_and_lowers_the_loss(backbone_and_tokenizer):
    import keras

    from valpat_keras.tasks.search import TextSearchModel

    keras.utils.set_random_seed(0)
    backbone, tokenizer = backbone_and_tokenizer
    x, pids = _batch(tokenizer, np.random.default_rng(1))
    model = TextSearchModel(backbone, num_classes=4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x, pids, batch_size=8, epochs=4, verbose=0, shuffle=False).history
    assert {"loss", "itc_loss", "itc_acc", "sdm_loss", "id_loss"} <= set(history)
    assert history["loss"][-1] < history["loss"][0]

    clone = TextSearchModel.from_config(model.get_config())
    assert clone.num_classes == 4 and clone.loss_weights == model.loss_weights


def test_searcher_ranks_paths_and_features_and_evaluation(backbone_and_tokenizer, tmp_path):
    from valpat_keras.data.records import TextRecord
    from valpat_keras.tasks.search import PersonSearcher, SearchGallery, evaluate_search

    backbone, tokenizer = backbone_and_tokenizer
    rng = np.random.default_rng(2)
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, size=(64, 32, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    searcher = PersonSearcher(backbone, tokenizer, batch_size=2)
    hits = searcher.search(CAPTIONS[0], paths, k=3)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert all(h.path == paths[h.index] for h in hits)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)

    gallery = searcher.index(paths)
    assert isinstance(gallery, SearchGallery) and gallery.embeddings.shape == (5, 32)
    np.testing.assert_allclose(np.linalg.norm(gallery.embeddings, axis=1), 1.0, atol=1e-5)
    both = searcher.search(CAPTIONS[:2], gallery.embeddings, k=10)
    assert len(both) == 2 and len(both[0]) == 5 and both[0][0].path is None
    assert [h.index for h in both[0][:3]] == [h.index for h in hits]
    np.testing.assert_allclose([h.score for h in both[0][:3]], scores, atol=1e-4)

    records = [TextRecord(p, i % 2, (CAPTIONS[i % 4],)) for i, p in enumerate(paths)]
    result = evaluate_search(backbone, tokenizer, records, batch_size=2, image_to_text=True)
    assert result["similarity"].shape == (5, 5) and result["num_queries"] == 5
    for key in ("R1", "R5", "R10", "mAP", "mINP"):
        assert 0.0 <= result[key] <= 1.0 and 0.0 <= result["i2t"][key] <= 1.0
    assert result["R5"] == 1.0  # every caption's identity is within 5 images


def test_train_search_reads_the_test_split_only_in_the_final_evaluation(tmp_path,
                                                                        monkeypatch):
    from valpat_keras.data.records import TextDataset, TextRecord
    from valpat_keras.tasks import search

    from .split_guard import Gate, RecordingList

    rng = np.random.default_rng(5)
    records = []
    for i in range(12):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, size=(64, 32, 3), dtype=np.uint8)).save(path)
        records.append(TextRecord(str(path), i % 4, (CAPTIONS[i % 4], CAPTIONS[(i + 1) % 4])))
    gate = Gate()
    test = RecordingList(records[8:], gate)
    dataset = TextDataset("toy", str(tmp_path), records[:8], records[4:8], test)
    gate.open_on_call(monkeypatch, search, "evaluate_search")
    metrics = search.train_search(dataset, tmp_path / "run", epochs=1, batch_size=4,
                                  image_size=(64, 32), embedding_dim=32, vocabulary_size=80,
                                  sequence_length=12, augment=False, steps_per_epoch=2,
                                  verbose=0)
    assert gate.calls == 1
    assert test.reads and test.early_reads() == []
    assert metrics["num_test_images"] == 4 and metrics["num_test_captions"] == 8
