"""TextSearchModel (ITC + SDM + ID), evaluation, the PersonSearcher query API and train_search."""

import warnings

import keras
import numpy as np
import pytest
from harness import run_model_saving_test
from keras import ops
from PIL import Image

from valpat_keras.data.records import TextDataset, TextRecord
from valpat_keras.evaluation.text_search_metrics import evaluate_text_search
from valpat_keras.losses.contrastive import symmetric_info_nce
from valpat_keras.losses.search import identity_loss, sdm_loss
from valpat_keras.models import load_backbone, load_task
from valpat_keras.models.embedding import encode_captions, encode_images
from valpat_keras.tasks import search
from valpat_keras.tasks.search import (
    PersonSearcher,
    SearchGallery,
    SearchRunConfig,
    TextSearchModel,
    build_search_backbone,
    evaluate_search,
)

from .split_guard import Gate, RecordingList

pytestmark = pytest.mark.keras

CAPTIONS = ["a woman in a red coat with a black backpack", "a man in blue shorts",
            "a girl wearing a white skirt", "an old man with a grey hat"]


@pytest.fixture(scope="module")
def backbone_and_tokenizer():
    # Built once per module: building the encoders dominates these tests' time.
    return build_search_backbone(CAPTIONS, image_size=(64, 32), embedding_dim=32,
                                 vocabulary_size=80, sequence_length=12)


def _batch(tokenizer, rng):
    images = rng.uniform(size=(8, 64, 32, 3)).astype("float32")
    token_ids = np.asarray(tokenizer(CAPTIONS * 2))
    pids = np.array([0, 1, 2, 3, 0, 1, 2, 3], "int32")
    return {"images": images, "token_ids": token_ids}, pids


def _toy_text_dataset(tmp_path, test_list=list):
    rng = np.random.default_rng(5)
    records = []
    for i in range(12):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, size=(64, 32, 3), dtype=np.uint8)).save(path)
        records.append(TextRecord(str(path), i % 4, (CAPTIONS[i % 4], CAPTIONS[(i + 1) % 4])))
    return TextDataset("toy", str(tmp_path), records[:8], records[4:8],
                       test_list(records[8:]))


def test_loss_combines_itc_sdm_and_id_with_weights(backbone_and_tokenizer):
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
    assert set(itc_only.trackers) == {"itc_loss", "itc_acc"}
    got = float(ops.convert_to_numpy(itc_only.compute_loss(x, pids, out)))
    np.testing.assert_allclose(got, float(ops.convert_to_numpy(itc)), rtol=1e-5)
    with pytest.raises(ValueError, match="unknown loss_weights"):
        TextSearchModel(backbone, loss_weights={"mlm": 1.0})
    with pytest.raises(ValueError, match="need person ids"):
        model.compute_loss(x, None, out)


def test_regularisation_losses_are_added_by_the_base(backbone_and_tokenizer):
    backbone, tokenizer = backbone_and_tokenizer
    x, pids = _batch(tokenizer, np.random.default_rng(0))
    model = TextSearchModel(backbone, num_classes=4)
    out = model(x)
    plain = float(ops.convert_to_numpy(model.compute_loss(x, pids, out)))
    kernel = model.classifier.kernel
    kernel.regularizer = keras.regularizers.L2(0.5)  # now in `model.losses`
    with_extra = float(ops.convert_to_numpy(model.compute_loss(x, pids, out)))
    penalty = 0.5 * np.sum(np.square(ops.convert_to_numpy(kernel)))
    assert penalty > 1e-3
    np.testing.assert_allclose(with_extra, plain + penalty, rtol=1e-5)


def test_compile_defaults_and_rejects_a_loss(backbone_and_tokenizer):
    backbone, _ = backbone_and_tokenizer
    model = TextSearchModel(backbone)
    model.compile()
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    np.testing.assert_allclose(float(ops.convert_to_numpy(model.optimizer.learning_rate)),
                               1e-4, rtol=1e-6)
    np.testing.assert_allclose(model.optimizer.weight_decay, 4e-5, rtol=1e-6)
    with pytest.raises(ValueError, match="computes its own loss"):
        model.compile(loss="mse")


def test_fit_logs_each_objective_and_lowers_the_loss(backbone_and_tokenizer):
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


def test_keras_file_round_trip_keeps_outputs_and_optimizer(backbone_and_tokenizer, tmp_path):
    backbone, tokenizer = backbone_and_tokenizer
    x, _ = _batch(tokenizer, np.random.default_rng(4))
    model, restored = run_model_saving_test(
        TextSearchModel, {"backbone": backbone, "num_classes": 4,
                          "loss_weights": {"sdm": 0.5}}, x, tmp_path, compile_kwargs={})
    assert restored.num_classes == 4 and restored.loss_weights == model.loss_weights
    assert set(restored.trackers) == set(model.trackers)
    assert isinstance(restored.optimizer, keras.optimizers.AdamW)


def test_searcher_ranks_paths_and_features_and_evaluation(backbone_and_tokenizer, tmp_path):
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
    both = searcher.search(CAPTIONS[:2], gallery.embeddings * 3.0, k=10)  # renormalised
    assert len(both) == 2 and len(both[0]) == 5 and both[0][0].path is None
    assert [h.index for h in both[0][:3]] == [h.index for h in hits]
    np.testing.assert_allclose([h.score for h in both[0][:3]], scores, atol=1e-4)

    records = [TextRecord(p, i % 2, (CAPTIONS[i % 4],)) for i, p in enumerate(paths)]
    result = evaluate_search(backbone, tokenizer, records, batch_size=2, image_to_text=True)
    assert result["similarity"].shape == (5, 5) and result["num_queries"] == 5
    # The numbers, recomputed from the embeddings and the identities.
    want = (encode_captions(backbone, tokenizer, [r.captions[0] for r in records])
            @ encode_images(backbone, paths).T)
    np.testing.assert_allclose(result["similarity"], want, atol=1e-5)
    pids = np.arange(5) % 2
    top1 = np.argmax(result["similarity"], axis=1)
    assert result["R1"] == pytest.approx(np.mean(pids[top1] == pids))
    i2t_top1 = np.argmax(result["similarity"], axis=0)
    assert result["i2t"]["R1"] == pytest.approx(np.mean(pids[i2t_top1] == pids))
    reference = evaluate_text_search(want, pids, pids)
    for key in ("mAP", "mINP"):
        assert result[key] == pytest.approx(reference[key], abs=1e-6)
    assert result["R5"] == 1.0  # every caption's identity is within 5 images


def test_old_search_import_paths_still_work():
    from valpat_keras.tasks.search import encode_captions as old_captions
    from valpat_keras.tasks.search import encode_images as old_images

    assert old_images is encode_images and old_captions is encode_captions


def test_train_search_reads_the_test_split_only_in_the_final_evaluation(tmp_path,
                                                                        monkeypatch):
    gate = Gate()
    dataset = _toy_text_dataset(tmp_path, lambda items: RecordingList(items, gate))
    gate.open_on_call(monkeypatch, search, "evaluate_search")
    config = SearchRunConfig(epochs=1, batch_size=4, image_size=(64, 32), embedding_dim=32,
                             vocabulary_size=80, sequence_length=12, augment=False,
                             steps_per_epoch=2, verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = search.train_search(dataset, tmp_path / "run", config)
    assert not _deprecations_of_train_search(caught)
    assert gate.calls == 1
    assert dataset.test.reads and dataset.test.early_reads() == []
    assert metrics["num_test_images"] == 4 and metrics["num_test_captions"] == 8
    for name in ("metrics.json", "history.json", "retrieval_examples.png", "backbone"):
        assert (tmp_path / "run" / name).exists()
    # The run folder is also one preset: the task with a preprocessor whose captions get the
    # ids of the run's tokenizer, and the same embeddings.
    preset = load_task(tmp_path / "run")
    backbone, tokenizer = load_backbone(tmp_path / "run")
    assert isinstance(preset, search.TextSearchModel)
    captions = [c for r in dataset.train for c in r.captions][:4]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(preset.preprocessor.tokenize(captions)),
        np.asarray(tokenizer(captions)))
    paths = [r.path for r in dataset.train[:3]]
    np.testing.assert_allclose(encode_images(preset.backbone, paths),
                               encode_images(backbone, paths), atol=1e-5)


def _deprecations_of_train_search(caught) -> list:
    # Only our own warning counts: third-party code warns too (e.g. NumPy 2 on `__array__`).
    return [w for w in caught if issubclass(w.category, DeprecationWarning)
            and "train_search(" in str(w.message)]


class _Resolved(Exception):
    """Stops `train_search` once its config is resolved (no training needed to check it)."""


def _resolved_config(monkeypatch, dataset, out, *args, **kwargs) -> SearchRunConfig:
    seen = {}

    def capture(train, config):
        seen["config"] = config
        raise _Resolved

    monkeypatch.setattr(search, "_search_backbone", capture)
    with pytest.raises(_Resolved):
        search.train_search(dataset, out, *args, **kwargs)
    return seen["config"]


def test_old_keyword_call_warns_and_resolves_to_the_same_config(tmp_path, monkeypatch):
    dataset = _toy_text_dataset(tmp_path)
    old = {"init": "random", "config": "resnet18", "text_config": "tiny", "epochs": 3,
           "batch_size": 4, "image_size": (64, 32), "learning_rate": 3e-4,
           "weight_decay": 1e-3, "loss_weights": {"id": 0.0}, "embedding_dim": 32,
           "vocabulary_size": 80, "sequence_length": 12, "augment": False, "seed": 7,
           "steps_per_epoch": 2, "image_to_text": False, "verbose": 0}
    want = SearchRunConfig(**{("encoder_config" if k == "config" else k): v
                              for k, v in old.items()})
    with pytest.warns(DeprecationWarning, match=r"train_search\(.*config=.*SearchRunConfig"):
        got = _resolved_config(monkeypatch, dataset, tmp_path / "old", **old)
    assert got == want

    # A string passed as `config` is the old image-encoder keyword, also deprecated.
    with pytest.warns(DeprecationWarning, match="deprecated"):
        got = _resolved_config(monkeypatch, dataset, tmp_path / "str", "resnet18", epochs=3)
    assert got == SearchRunConfig(encoder_config="resnet18", epochs=3)

    # Keywords override the fields of a config given with them.
    with pytest.warns(DeprecationWarning):
        got = _resolved_config(monkeypatch, dataset, tmp_path / "mix",
                               SearchRunConfig(seed=3), epochs=2)
    assert got == SearchRunConfig(seed=3, epochs=2)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _resolved_config(monkeypatch, dataset, tmp_path / "new", want) == want
    assert not _deprecations_of_train_search(caught)


def test_search_run_config_round_trips_through_a_file(tmp_path):
    config = SearchRunConfig(init="runs/pretrain", image_size=(64, 32), epochs=60,
                             loss_weights={"itc": 1.0, "sdm": 1.0, "id": 0.0})
    assert SearchRunConfig.from_file(config.save(tmp_path / "search.json")) == config
    (tmp_path / "search.yaml").write_text("epochs: 5\nimage_size: [128, 64]\n"
                                          "encoder_config: resnet50\n")
    loaded = SearchRunConfig.from_file(tmp_path / "search.yaml")
    assert loaded == SearchRunConfig(epochs=5, image_size=(128, 64), encoder_config="resnet50")
