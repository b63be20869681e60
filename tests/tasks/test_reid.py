"""Re-ID transfer: BNNeck, the LR schedule, BoT training and the Cluster Contrast loop."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from valpat_keras.data.records import ReIDDataset, ReIDRecord, pids_of
from valpat_keras.data.splits import split_reid_validation
from valpat_keras.losses.reid import batch_hard_triplet, cross_entropy_label_smoothing
from valpat_keras.models import build_image_encoder, load_task
from valpat_keras.models.gradient_gate import GradientGate as MovedGate
from valpat_keras.models.reid_head import BNNeck
from valpat_keras.schedules import WarmupLearningRate as MovedSchedule
from valpat_keras.tasks import reid_training
from valpat_keras.tasks.reid import FreezeBackbone, GradientGate, ReIDModel, WarmupLearningRate
from valpat_keras.tasks.unsupervised_reid import (
    ClusterContrastReID,
    fit_cluster_contrast,
    pseudo_label_epoch,
)

pytestmark = pytest.mark.keras

IMAGE_SIZE = (32, 16)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_bnneck_matches_numpy_and_learns_no_shift():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(8, 5)).astype("float32")
    neck = BNNeck(epsilon=1e-5)
    neck.build((None, 5))
    gamma = rng.uniform(0.5, 2.0, size=5).astype("float32")
    neck.batch_norm.gamma.assign(gamma)
    assert [w.name for w in neck.trainable_weights] == ["gamma"]
    # Inference uses the moving statistics (initially mean 0, variance 1).
    np.testing.assert_allclose(_np(neck(x, training=False)), gamma * x / np.sqrt(1 + 1e-5),
                               rtol=1e-4)
    expected = gamma * (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
    np.testing.assert_allclose(_np(neck(x, training=True)), expected, rtol=1e-4, atol=1e-4)
    restored = BNNeck.from_config(neck.get_config())
    assert restored.momentum == neck.momentum and restored.epsilon == neck.epsilon


def test_warmup_learning_rate_step_and_cosine():
    step = WarmupLearningRate(1.0, warmup_steps=10, total_steps=100, mode="step",
                              milestones=(40, 70), gamma=0.1, warmup_factor=0.1)
    values = [float(_np(step(s))) for s in (0, 5, 10, 39, 40, 70, 99)]
    np.testing.assert_allclose(values, [0.1, 0.55, 1.0, 1.0, 0.1, 0.01, 0.01], rtol=1e-5)
    cosine = WarmupLearningRate(1.0, warmup_steps=0, total_steps=100, mode="cosine")
    np.testing.assert_allclose([float(_np(cosine(s))) for s in (0, 50, 100)], [1.0, 0.5, 0.0],
                               atol=1e-6)
    rebuilt = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(step))
    assert float(_np(rebuilt(45))) == pytest.approx(0.1)


def _pk_batch(num_ids=4, per_id=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(num_ids * per_id, *IMAGE_SIZE, 3)).astype("float32")
    return images, np.repeat(np.arange(num_ids), per_id).astype("int32")


def test_bot_training_step_freezing_and_keras_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    model = ReIDModel(build_image_encoder("tiny", IMAGE_SIZE), num_classes=4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images, pids = _pk_batch()
    backbone_before = [w.copy() for w in model.backbone.get_weights()]
    classifier_before = model.classifier.get_weights()[0].copy()
    history = model.fit(images, pids, batch_size=16, epochs=1, verbose=0, shuffle=False,
                        callbacks=[FreezeBackbone(1)]).history
    # Frozen epoch: the head learns, the encoder's trainable weights do not move.
    assert not np.allclose(model.classifier.get_weights()[0], classifier_before)
    for var, before in zip(model.backbone.trainable_variables,
                           [backbone_before[i] for i, v in enumerate(model.backbone.weights)
                            if v.trainable]):
        np.testing.assert_array_equal(_np(var), before)
    assert np.isfinite(history["loss"][0]) and history["triplet_loss"][0] > 0
    model.fit(images, pids, batch_size=16, epochs=1, verbose=0, shuffle=False)
    assert not all(np.array_equal(_np(v), b) for v, b in
                   zip(model.backbone.weights, backbone_before))
    embeddings = model.embed(images)
    assert embeddings.shape == (16, model.backbone.feature_dim)
    assert model.embedding_model.name == "reid_embedding"
    path = tmp_path / "reid.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, ReIDModel) and restored.num_classes == 4
    assert restored.triplet_margin == 0.3 and restored.label_smoothing == 0.1
    for restored_weight, weight in zip(restored.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(restored_weight, weight)
    np.testing.assert_allclose(restored.embed(images), embeddings, atol=1e-6)
    # The saved optimizer (its step count too) is restored by compile_from_config.
    assert int(_np(restored.optimizer.iterations)) == int(_np(model.optimizer.iterations)) > 0


def test_reid_model_loss_is_its_terms_plus_regularisation_and_rejects_a_loss():
    keras.utils.set_random_seed(0)
    model = ReIDModel(build_image_encoder("tiny", IMAGE_SIZE), num_classes=4,
                      label_smoothing=0.2, triplet_margin=None, triplet_loss_weight=0.5)
    with pytest.raises(ValueError, match="computes its own loss"):
        model.compile(loss="sparse_categorical_crossentropy")
    model.compile()
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(_np(model.optimizer.learning_rate)) == pytest.approx(3.5e-4)
    images, pids = _pk_batch()
    outputs = model(images, training=False)
    id_loss = float(_np(cross_entropy_label_smoothing(pids, outputs["logits"], 0.2)))
    triplet = float(_np(batch_hard_triplet(outputs["features"], pids, None)))
    loss = model.compute_loss(images, pids, outputs, training=False)
    assert float(_np(loss)) == pytest.approx(id_loss + 0.5 * triplet, rel=1e-5)
    assert float(_np(model.trackers["triplet_loss"].result())) == pytest.approx(triplet,
                                                                                 rel=1e-5)
    # A weight regulariser's loss (here L2 on the classifier kernel) is added.
    model.classifier.kernel.regularizer = keras.regularizers.L2(0.01)
    extra = 0.01 * float(np.sum(np.square(_np(model.classifier.kernel))))
    assert extra > 0
    loss = model.compute_loss(images, pids, outputs, training=False)
    assert float(_np(loss)) == pytest.approx(id_loss + 0.5 * triplet + extra, rel=1e-4)


def test_cluster_memory_is_set_masked_and_updated_in_the_train_step():
    keras.utils.set_random_seed(0)
    model = ClusterContrastReID(build_image_encoder("tiny", IMAGE_SIZE), memory_capacity=8,
                                memory_momentum=0.5)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(1)
    centroids = rng.normal(size=(6, model.backbone.feature_dim)).astype("float32")
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    model.set_centroids(centroids)
    assert int(_np(model.memory.num_clusters)) == 6
    images, labels = _pk_batch()  # clusters 0..3 present, 4 and 5 absent
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0, shuffle=False)
    memory = _np(model.memory.centroids.value)
    assert not np.allclose(memory[:4], centroids[:4])
    np.testing.assert_allclose(np.linalg.norm(memory[:4], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(memory[4:6], centroids[4:6])
    np.testing.assert_array_equal(memory[6:], 0.0)
    with pytest.raises(ValueError, match="capacity"):
        model.set_centroids(np.zeros((9, model.backbone.feature_dim)))


def test_cluster_contrast_keras_round_trip_keeps_memory_weights_and_optimizer(tmp_path):
    keras.utils.set_random_seed(0)
    model = ClusterContrastReID(build_image_encoder("tiny", IMAGE_SIZE), memory_capacity=8,
                                temperature=0.1, memory_momentum=0.3, hard_memory_update=True)
    with pytest.raises(ValueError, match="computes its own loss"):
        model.compile(loss="mse")
    model.compile()
    assert float(_np(model.optimizer.learning_rate)) == pytest.approx(3.5e-4)
    rng = np.random.default_rng(2)
    centroids = rng.normal(size=(5, model.backbone.feature_dim)).astype("float32")
    model.set_centroids(centroids / np.linalg.norm(centroids, axis=1, keepdims=True))
    images, labels = _pk_batch()
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0, shuffle=False)
    path = tmp_path / "cluster_contrast.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, ClusterContrastReID)
    own = ("memory_capacity", "temperature", "memory_momentum", "hard_memory_update")
    assert [restored.get_config()[key] for key in own] == [8, 0.1, 0.3, True]
    assert restored.embedding_model.name == "reid_embedding"
    np.testing.assert_array_equal(_np(restored.memory.centroids.value),
                                  _np(model.memory.centroids.value))
    assert int(_np(restored.memory.num_clusters)) == 5
    np.testing.assert_allclose(restored.embed(images), model.embed(images), atol=1e-6)
    assert int(_np(restored.optimizer.iterations)) == int(_np(model.optimizer.iterations)) == 1
    # Both continue identically: same loss, same memory update.
    logs = [m.fit(images, labels, batch_size=16, epochs=1, verbose=0, shuffle=False).history
            for m in (model, restored)]
    assert logs[0]["loss"][0] == pytest.approx(logs[1]["loss"][0], rel=1e-4)
    np.testing.assert_allclose(_np(restored.memory.centroids.value),
                               _np(model.memory.centroids.value), atol=1e-5)


def test_moved_classes_keep_their_registered_names_and_old_import_paths():
    # Saved .keras files name these classes; they moved to valpat_keras.schedules and
    # valpat_keras.models.gradient_gate, and valpat_keras.tasks.reid re-exports them.
    assert GradientGate is MovedGate and WarmupLearningRate is MovedSchedule
    assert keras.saving.get_registered_name(GradientGate) == "valpat_keras>GradientGate"
    assert keras.saving.get_registered_name(WarmupLearningRate) == \
        "valpat_keras>WarmupLearningRate"
    assert keras.saving.get_registered_object("valpat_keras>WarmupLearningRate") is MovedSchedule


@pytest.fixture(scope="module")
def toy_reid_records(tmp_path_factory):
    """12 identities x 8 images: two coloured body blocks on noisy backgrounds."""
    root = tmp_path_factory.mktemp("toy_reid")
    rng = np.random.default_rng(0)
    colours = rng.uniform(size=(12, 2, 3))
    records = []
    for pid in range(12):
        for j in range(8):
            image = 0.5 * rng.uniform(size=(64, 32, 3)) + 0.5 * rng.uniform(size=(1, 1, 3))
            top, left = 8 + rng.integers(-4, 5), 8 + rng.integers(-3, 4)
            brightness = rng.uniform(0.6, 1.2)
            image[top:top + 22, left:left + 16] = np.clip(colours[pid, 0] * brightness, 0, 1)
            image[top + 22:top + 44, left:left + 16] = np.clip(colours[pid, 1] * brightness,
                                                               0, 1)
            path = root / f"{pid:03d}_{j}.png"
            Image.fromarray((image * 255).astype("uint8")).save(path)
            records.append(ReIDRecord(str(path), pid, j % 3))
    return records


def test_cluster_contrast_loop_improves_pseudo_labels(toy_reid_records):
    keras.utils.set_random_seed(0)
    model = ClusterContrastReID(build_image_encoder("tiny", IMAGE_SIZE),
                                memory_capacity=len(toy_reid_records))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    cluster_args = {"eps": 0.6, "min_samples": 3, "k1": 6, "k2": 2}
    # Three rounds: after two, the ARI gain is within float-rounding chaos on some backends
    # (0.02 on TensorFlow vs 0.09 on JAX); after three it is 0.1-0.2 on all of them.
    history = fit_cluster_contrast(model, toy_reid_records, 3, IMAGE_SIZE, p=4, k=4,
                                   steps_per_epoch=8, **cluster_args)
    assert [h["epoch"] for h in history] == [0, 1, 2]
    for entry in history:
        assert entry["num_clusters"] >= 4 and np.isfinite(entry["loss"])
        assert {"num_outliers", "ari", "nmi"} <= set(entry)
    true_ids = pids_of(toy_reid_records)
    pseudo, final = pseudo_label_epoch(model, toy_reid_records, IMAGE_SIZE,
                                       true_ids=true_ids, **cluster_args)
    assert len(pseudo) == len(toy_reid_records) - final["num_outliers"]
    assert int(_np(model.memory.num_clusters)) == final["num_clusters"]
    # Rounds of cluster contrast make the pseudo-identities agree better with the truth.
    assert final["ari"] > history[0]["ari"] + 0.03


def test_cluster_contrast_trains_with_fewer_clusters_than_p(toy_reid_records):
    # Skipping such rounds would leave a random encoder's clusters unchanged for ever.
    keras.utils.set_random_seed(0)
    model = ClusterContrastReID(build_image_encoder("tiny", IMAGE_SIZE),
                                memory_capacity=len(toy_reid_records))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = [w.copy() for w in model.backbone.get_weights()]
    history = fit_cluster_contrast(model, toy_reid_records, 1, IMAGE_SIZE, p=64, k=2,
                                   steps_per_epoch=1, eps=0.6, min_samples=3, k1=6, k2=2)
    assert 2 <= history[0]["num_clusters"] < 64 and "skipped" not in history[0]
    assert np.isfinite(history[0]["loss"])
    assert not all(np.array_equal(w, b) for w, b in zip(model.backbone.get_weights(), before))


def _guarded_reid_dataset(records, gate):
    """Train on ids 0-7; the test split (ids 8-11) records every read of its items."""
    from .split_guard import RecordingList

    test = [r for r in records if r.pid >= 8]
    # Images 0 and 1 of each id (cameras 0 and 1) query; images 2-7 (cameras 0-2) are found.
    query = RecordingList([r for i, r in enumerate(test) if i % 8 < 2], gate)
    gallery = RecordingList([r for i, r in enumerate(test) if i % 8 >= 2], gate)
    return ReIDDataset("toy", "", [r for r in records if r.pid < 8], query, gallery)


def _train_guarded(monkeypatch, records, tmp_path, unsupervised, fraction, epochs):
    from .split_guard import Gate

    gate = Gate()
    dataset = _guarded_reid_dataset(records, gate)
    gate.open_on_call(monkeypatch, reid_training, "evaluate_reid_model")
    config = reid_training.ReIDRunConfig(
        unsupervised=unsupervised, epochs=epochs, p=4, k=4, image_size=IMAGE_SIZE,
        steps_per_epoch=1, validation_fraction=fraction, eps=0.6, min_samples=3, k1=6, k2=2,
        augment=False, verbose=0)
    metrics = reid_training.train_reid(dataset, tmp_path, config)
    # The test split is read, and only from the final evaluation on.
    assert gate.calls == 1
    for split in (dataset.query, dataset.gallery):
        assert split.reads and split.early_reads() == []
    return dataset, metrics


def test_train_reid_selects_on_held_out_train_ids_and_reads_test_once(
        toy_reid_records, tmp_path, monkeypatch):
    dataset, metrics = _train_guarded(monkeypatch, toy_reid_records, tmp_path,
                                      unsupervised=False, fraction=0.1, epochs=2)
    # 10 % of 8 ids rounds below the minimum of 2 validation ids.
    assert metrics["num_val_ids"] == 2 and metrics["num_train_ids"] == 6
    assert metrics["num_train_images"] == 48
    assert metrics["num_val_query"] + metrics["num_val_gallery"] == 16
    assert metrics["selection"] == "validation" and metrics["validation_fraction"] == 0.1
    history = json.loads((tmp_path / "history.json").read_text())
    val_map = [entry["val_mAP"] for entry in history]
    assert len(val_map) == 2
    assert metrics["best_epoch"] == int(np.argmax(val_map))
    assert metrics["best_val_mAP"] == pytest.approx(max(val_map))
    assert metrics["num_valid_queries"] == len(dataset.query)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["best_epoch"] == metrics["best_epoch"] and saved["selection"] == "validation"
    calibration = json.loads((tmp_path / "verification.json").read_text())
    assert calibration["split"] == "validation"
    assert saved["verification"]["threshold"] == calibration["threshold"]
    saved = keras.saving.load_model(tmp_path / "reid_model.keras")
    assert saved.num_classes == 6
    _check_threshold_on_validation(saved, dataset, calibration)
    # The run folder is also one preset: the same task, with an image preprocessor that
    # takes raw uint8 images of any size.
    preset = load_task(tmp_path)
    assert isinstance(preset, ReIDModel) and preset.num_classes == 6
    images = np.random.default_rng(0).random((3, *IMAGE_SIZE, 3)).astype("float32")
    np.testing.assert_allclose(preset.embed(images), saved.embed(images), atol=1e-5)
    raw = np.random.default_rng(1).integers(0, 256, (2, 48, 20, 3)).astype("uint8")
    converted = keras.ops.convert_to_numpy(preset.preprocessor(raw))
    assert converted.shape == (2, *IMAGE_SIZE, 3)
    assert 0.0 <= converted.min() and converted.max() <= 1.0 and converted.max() > 0.5


def _check_threshold_on_validation(model, dataset, calibration):
    """The run's threshold, recomputed from the kept model's validation pairs (sklearn ROC)."""
    from sklearn.metrics import roc_curve

    from valpat_keras.evaluation.callbacks import ReIDEvaluator

    _, val_query, val_gallery = split_reid_validation(dataset.train, 0.1, 0)
    query, gallery = ReIDEvaluator(val_query, val_gallery, IMAGE_SIZE, 64,
                                   metric="cosine").extract(model.embedding_model)
    # In float64, as the calibration scores pairs (exact counts at the threshold).
    similarity = query.features.astype(np.float64) @ gallery.features.T.astype(np.float64)
    same_id = query.pids[:, None] == gallery.pids[None, :]
    kept = ~(same_id & (query.camids[:, None] == gallery.camids[None, :]))
    fpr, tpr, thresholds = roc_curve(same_id[kept], similarity[kept])
    allowed = fpr <= calibration["target_fpr"]
    best = np.flatnonzero(allowed)[np.argmax(tpr[allowed])]
    if tpr[best] > 0:
        assert calibration["threshold"] == pytest.approx(thresholds[best], abs=1e-5)
    else:  # no pair can be accepted at this FPR: a threshold above every similarity
        # (features extracted again here agree with the run's to float rounding only)
        assert calibration["threshold"] >= similarity[kept].max() - 1e-6
        assert calibration["tpr"] == 0.0


def test_train_reid_without_validation_keeps_the_last_epoch(toy_reid_records, tmp_path,
                                                           monkeypatch):
    _, metrics = _train_guarded(monkeypatch, toy_reid_records, tmp_path, unsupervised=False,
                                fraction=0.0, epochs=1)
    assert metrics["selection"] == "last_epoch" and metrics["best_val_mAP"] is None
    assert metrics["best_epoch"] == 0 and metrics["num_train_ids"] == 8
    assert metrics["num_val_ids"] == metrics["num_val_query"] == 0
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history) == 1 and not any(key.startswith("val_") for key in history[0])
    assert keras.saving.load_model(tmp_path / "reid_model.keras").num_classes == 8


def test_unsupervised_train_reid_clusters_without_the_validation_ids(toy_reid_records,
                                                                    tmp_path, monkeypatch):
    clustered = []
    original = reid_training.fit_cluster_contrast

    def recording_fit(model, records, *args, **kwargs):
        clustered.extend(records)
        return original(model, records, *args, **kwargs)

    monkeypatch.setattr(reid_training, "fit_cluster_contrast", recording_fit)
    _, metrics = _train_guarded(monkeypatch, toy_reid_records, tmp_path, unsupervised=True,
                                fraction=0.1, epochs=1)
    train = [r for r in toy_reid_records if r.pid < 8]
    kept, val_query, val_gallery = split_reid_validation(train, 0.1, seed=0)
    held_out = {r.path for r in (*val_query, *val_gallery)}
    assert {r.path for r in clustered} == {r.path for r in kept}
    assert held_out and not held_out & {r.path for r in clustered}
    assert metrics["unsupervised"] is True and metrics["num_train_images"] == len(kept)
    assert metrics["num_val_ids"] == 2 and metrics["selection"] == "validation"
    history = json.loads((tmp_path / "history.json").read_text())
    assert metrics["best_val_mAP"] == pytest.approx(history[0]["val_mAP"])


def test_train_reid_rejects_a_validation_fraction_out_of_range(toy_reid_records, tmp_path):
    dataset = ReIDDataset("toy", "", toy_reid_records[:16], toy_reid_records[16:18],
                          toy_reid_records[18:24])
    for fraction in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"validation_fraction must be in \[0, 1\)"):
            reid_training.train_reid(dataset, tmp_path,
                                     reid_training.ReIDRunConfig(validation_fraction=fraction))
    # Two identities cannot give two validation ids and keep one to train on.
    with pytest.raises(ValueError, match="toy: .*leaves none to train on"):
        reid_training.train_reid(dataset, tmp_path,
                                 reid_training.ReIDRunConfig(validation_fraction=0.5))
    assert not (tmp_path / "metrics.json").exists()
