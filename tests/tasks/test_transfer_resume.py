"""Resume of the transfer commands: a run killed at a step and started again equals an
uninterrupted one (final weights, optimiser, history.json, metrics.json), for supervised re-ID
(mid-epoch, frozen-backbone epoch, best-epoch file) and cluster contrast (mid-round)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .test_reid import IMAGE_SIZE, toy_reid_records  # noqa: F401 (a fixture)

pytestmark = pytest.mark.keras


class _Killed(Exception):
    """Stands for a kill: raised out of ``fit`` right after a given step."""


def _dataset(records):
    from valpat_keras.data.records import ReIDDataset

    test = [r for r in records if r.pid >= 8]
    return ReIDDataset("toy", "", [r for r in records if r.pid < 8],
                       [r for i, r in enumerate(test) if i % 8 < 2],
                       [r for i, r in enumerate(test) if i % 8 >= 2])


def _train(monkeypatch, dataset, out, config, kill_after=None):
    """Runs `train_reid`; returns the final model state (variables, optimiser) as arrays."""
    from valpat_keras.tasks import checkpointing, reid_training

    monkeypatch.undo()  # the patches of an earlier call (they would wrap each other)
    final = {}
    kept_model = reid_training._kept_model

    def capture(model, keep_best, history):
        final["model"] = [np.array(v.numpy()) for v in model.variables]
        final["optimizer"] = [np.array(v.numpy()) for v in model.optimizer.variables]
        return kept_model(model, keep_best, history)

    original = checkpointing.StepCheckpoint.on_train_batch_end

    def batch_end(self, batch, logs=None):
        original(self, batch, logs)
        if kill_after is not None and self.step == kill_after:
            raise _Killed

    monkeypatch.setattr(reid_training, "_kept_model", capture)
    monkeypatch.setattr(checkpointing.StepCheckpoint, "on_train_batch_end", batch_end)
    final["metrics"] = reid_training.train_reid(dataset, out, config)
    return final


def _assert_same_run(got, want, got_dir, want_dir):
    for key in ("model", "optimizer"):
        assert len(got[key]) == len(want[key])
        for a, b in zip(got[key], want[key]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    history = json.loads((got_dir / "history.json").read_text())
    wanted = json.loads((want_dir / "history.json").read_text())
    assert [e["epoch"] for e in history] == [e["epoch"] for e in wanted] == [0, 1, 2]
    for entry, expected in zip(history, wanted):
        assert sorted(entry) == sorted(expected) and "val_mAP" in entry
        for key, value in expected.items():
            assert entry[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    metrics = json.loads((got_dir / "metrics.json").read_text())
    expected = json.loads((want_dir / "metrics.json").read_text())
    assert metrics["best_epoch"] == expected["best_epoch"]
    for key in ("rank1", "mAP", "mINP", "best_val_mAP"):
        assert metrics[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key
    np.testing.assert_allclose(metrics["cmc"], expected["cmc"], rtol=1e-5, atol=1e-6)
    assert not (got_dir / "checkpoints").exists()
    # The kept model (written atomically, no temporary file left) is the same.
    assert not list(got_dir.glob(".reid_model*"))
    import keras

    saved = [keras.saving.load_model(d / "reid_model.keras") for d in (got_dir, want_dir)]
    for a, b in zip(*(m.get_weights() for m in saved)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _config(**changes):
    from valpat_keras.tasks.reid_training import ReIDRunConfig

    config = ReIDRunConfig(epochs=3, p=4, k=2, image_size=IMAGE_SIZE, validation_fraction=0.25,
                           eps=0.6, min_samples=3, k1=6, k2=2, verbose=0,
                           checkpoint_every_steps=1, seed=1)
    return config.replace(**changes)


def _steps_per_epoch(dataset, config):
    from valpat_keras.data.records import camids_of, pids_of
    from valpat_keras.data.sampler import PKSampler
    from valpat_keras.data.splits import split_reid_validation

    train = split_reid_validation(dataset.train, config.validation_fraction, config.seed)[0]
    return PKSampler(pids_of(train).tolist(), camids_of(train).tolist(), p=config.p,
                     k=config.k, seed=config.seed).num_batches


def _interrupted_run(monkeypatch, dataset, tmp_path, config, kill_after):
    with pytest.raises(_Killed):
        _train(monkeypatch, dataset, tmp_path / "cut", config, kill_after=kill_after)
    metadata = json.loads((tmp_path / "cut" / "checkpoints" / "training_metadata.json")
                          .read_text())
    return metadata["checkpoints"][0]


def test_supervised_reid_resumed_mid_epoch_equals_an_uninterrupted_run(
        monkeypatch, tmp_path, toy_reid_records, capsys):  # noqa: F811
    dataset = _dataset(toy_reid_records)
    config = _config(freeze_backbone_epochs=2)
    steps = _steps_per_epoch(dataset, config)
    assert steps >= 2
    want = _train(monkeypatch, dataset, tmp_path / "full", config)
    # Killed one batch into epoch 2 (the backbone still frozen), after epoch 1's best save.
    latest = _interrupted_run(monkeypatch, dataset, tmp_path, config, kill_after=steps + 1)
    assert (latest["step"], latest["epoch"], latest["batch"]) == (steps + 1, 1, 1)
    keep_best, epoch_log = latest["callbacks"]
    assert [e["epoch"] for e in epoch_log] == [0] and "val_mAP" in epoch_log[0]
    assert keep_best == {"best": pytest.approx(epoch_log[0]["val_mAP"]), "best_epoch": 0}
    capsys.readouterr()
    # Another checkpoint interval on the resumed run changes nothing it computes.
    got = _train(monkeypatch, dataset, tmp_path / "cut", config.replace(
        checkpoint_every_steps=None))
    out = capsys.readouterr().out
    assert f"resuming at step {steps + 1} (epoch 2, 1 batch(es) of it done)" in out
    _assert_same_run(got, want, tmp_path / "cut", tmp_path / "full")
    # A finished run started again trains afresh (its checkpoints are gone): same result.
    again = _train(monkeypatch, dataset, tmp_path / "cut", config)
    assert "resuming" not in capsys.readouterr().out
    _assert_same_run(again, want, tmp_path / "cut", tmp_path / "full")


def test_the_reid_stream_continues_the_repeated_pipeline(toy_reid_records):  # noqa: F811
    from valpat_keras.data.pipelines import reid_train_dataset

    settings = {"image_size": IMAGE_SIZE, "p": 4, "k": 2, "seed": 3, "epochs": 2}
    finite, steps = reid_train_dataset(toy_reid_records, **settings)
    repeated = [x.numpy() for x, _ in finite.repeat().take(2 * steps + 3)]
    for start in (0, steps - 1, 2 * steps + 1):
        stream, _ = reid_train_dataset(toy_reid_records, start_step=start, **settings)
        got = [x.numpy() for x, _ in stream.take(len(repeated) - start)]
        assert len(got) == len(repeated) - start
        for a, b in zip(got, repeated[start:]):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="start_step must be >= 0"):
        reid_train_dataset(toy_reid_records, start_step=-1, **settings)


def test_cluster_contrast_resumed_mid_round_equals_an_uninterrupted_run(
        monkeypatch, tmp_path, toy_reid_records, capsys):  # noqa: F811
    dataset = _dataset(toy_reid_records)
    config = _config(unsupervised=True, p=4, k=4, steps_per_epoch=2)
    want = _train(monkeypatch, dataset, tmp_path / "full", config)
    history = json.loads((tmp_path / "full" / "history.json").read_text())
    assert all(e["num_clusters"] >= 2 and "loss" in e for e in history)  # every round trained
    # Killed one batch into round 2: its pseudo-labels and the memory are in the checkpoint.
    latest = _interrupted_run(monkeypatch, dataset, tmp_path, config, kill_after=3)
    assert (latest["step"], latest["epoch"], latest["batch"]) == (3, 1, 1)
    rounds = latest["callbacks"][-1]
    assert rounds["round"] == 1 and [e["epoch"] for e in rounds["history"]] == [0]
    assert len(rounds["labels"]) == want["metrics"]["num_train_images"]
    assert rounds["entry"]["num_clusters"] == history[1]["num_clusters"]
    capsys.readouterr()
    got = _train(monkeypatch, dataset, tmp_path / "cut", config)
    assert "resuming at step 3 (epoch 2, 1 batch(es) of it done)" in capsys.readouterr().out
    _assert_same_run(got, want, tmp_path / "cut", tmp_path / "full")


def _assert_stream_continues(build, passes_of: int, starts):
    """``build(start_step)`` from each start equals ``.repeat()`` of the one-pass dataset."""
    repeated = [b for b in build(None).repeat().take(2 * passes_of + 2).as_numpy_iterator()]
    for start in starts:
        got = list(build(start).take(len(repeated) - start).as_numpy_iterator())
        assert len(got) == len(repeated) - start
        for a, b in zip(got, repeated[start:]):
            for x, y in zip(_leaves(a), _leaves(b)):
                np.testing.assert_array_equal(x, y)
    return repeated


def _leaves(batch):
    return list(batch.values()) if isinstance(batch, dict) else list(batch)


def test_the_attribute_and_search_streams_continue_the_repeated_pipelines(
        toy_reid_records):  # noqa: F811
    from valpat_keras.data.pipelines import labeled_image_dataset, text_image_dataset
    from valpat_keras.data.records import TextRecord
    from valpat_keras.data.tokenizer import CaptionTokenizer

    records = toy_reid_records[:10]
    labels = np.random.default_rng(0).integers(0, 2, (10, 3)).astype("float32")
    repeated = _assert_stream_continues(
        lambda start: labeled_image_dataset(
            [r.path for r in records], labels, IMAGE_SIZE, batch_size=4, training=True,
            seed=2, augment=True, start_step=start), 3, (0, 2, 4))
    assert [len(b[0]) for b in repeated[:4]] == [4, 4, 2, 4]  # each pass ends partial
    assert not np.array_equal(repeated[0][0], repeated[3][0])  # a new pass, a new shuffle
    words = ["red", "blue", "coat", "bag", "shoes"]
    texts = [TextRecord(r.path, r.pid, (f"a {words[i % 5]} coat", f"{words[i % 3]} bag"))
             for i, r in enumerate(records)]
    tokenizer = CaptionTokenizer.from_captions([c for t in texts for c in t.captions],
                                               vocabulary_size=64, sequence_length=8)
    _assert_stream_continues(
        lambda start: text_image_dataset(texts, tokenizer, IMAGE_SIZE, batch_size=3, seed=4,
                                         start_step=start), 3, (0, 1, 5))


def _run_killable(monkeypatch, run, capture_target, capture_name, pick, kill_after=None):
    """``run()`` with a kill after step ``kill_after``; returns the arrays ``pick`` takes
    from the arguments of ``capture_target.capture_name`` (the run-folder writer)."""
    from valpat_keras.tasks import checkpointing

    monkeypatch.undo()
    final = {}
    writer = getattr(capture_target, capture_name)

    def capture(*args):
        final["weights"] = [np.array(v.numpy()) for v in pick(*args)]
        return writer(*args)

    original = checkpointing.StepCheckpoint.on_train_batch_end

    def batch_end(self, batch, logs=None):
        original(self, batch, logs)
        if kill_after is not None and self.step == kill_after:
            raise _Killed

    monkeypatch.setattr(capture_target, capture_name, capture)
    monkeypatch.setattr(checkpointing.StepCheckpoint, "on_train_batch_end", batch_end)
    final["metrics"] = run()
    return final


def _check_resumed(monkeypatch, capsys, run_in, tmp_path, capture, kill_after, step, batch,
                   metric_keys):
    """Full run; run killed after ``kill_after``; resumed: same weights, history, metrics."""
    want = _run_killable(monkeypatch, lambda: run_in(tmp_path / "full"), *capture)
    with pytest.raises(_Killed):
        _run_killable(monkeypatch, lambda: run_in(tmp_path / "cut"), *capture,
                      kill_after=kill_after)
    capsys.readouterr()
    got = _run_killable(monkeypatch, lambda: run_in(tmp_path / "cut"), *capture)
    assert f"resuming at step {step} (epoch 2, {batch} batch(es) of it done)" in \
        capsys.readouterr().out
    assert len(got["weights"]) == len(want["weights"])
    for a, b in zip(got["weights"], want["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    history = json.loads((tmp_path / "cut" / "history.json").read_text())
    wanted = json.loads((tmp_path / "full" / "history.json").read_text())
    assert sorted(history) == sorted(wanted) and all(len(v) == 2 for v in wanted.values())
    for key, values in wanted.items():
        np.testing.assert_allclose(history[key], values, rtol=1e-5, atol=1e-6)
    for key in metric_keys:
        assert got["metrics"][key] == pytest.approx(want["metrics"][key], rel=1e-5, abs=1e-6)
    assert not (tmp_path / "cut" / "checkpoints").exists()
    return wanted


def test_attribute_training_resumed_mid_epoch_equals_an_uninterrupted_run(
        monkeypatch, tmp_path, capsys):
    from PIL import Image

    from valpat_keras.data.records import AttributeDataset, AttributeRecord
    from valpat_keras.tasks import attribute_training

    rng = np.random.default_rng(4)
    records = []
    for i in range(14):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, size=(32, 16, 3), dtype=np.uint8)).save(path)
        records.append(AttributeRecord(str(path), rng.integers(0, 2, 3).astype(np.int8)))
    dataset = AttributeDataset("toy", str(tmp_path), records[:8], records[8:10], records[10:],
                               ["Female", "Hat", "Backpack"], eval_indices=[0, 1, 2])
    config = attribute_training.AttributesRunConfig(
        epochs=2, batch_size=3, image_size=IMAGE_SIZE, verbose=0, checkpoint_every_steps=1)
    # 8 images, batches of 3: 3 steps an epoch (the last of 2); killed 1 batch into epoch 2.
    wanted = _check_resumed(
        monkeypatch, capsys, lambda out: attribute_training.train_attributes(
            dataset, out, config), tmp_path,
        (attribute_training, "write_run_folder", lambda out, data, model, *_: model.variables),
        kill_after=4, step=4, batch=1, metric_keys=("ma", "instance_f1"))
    assert "val_loss" in wanted


def test_search_training_resumed_mid_epoch_equals_an_uninterrupted_run(
        monkeypatch, tmp_path, capsys):
    from PIL import Image

    from valpat_keras.data.records import TextDataset, TextRecord
    from valpat_keras.tasks import search

    captions = ["a woman in a red coat", "a man in blue shorts", "a girl in a white skirt"]
    rng = np.random.default_rng(5)
    records = []
    for i in range(10):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, size=(32, 16, 3), dtype=np.uint8)).save(path)
        records.append(TextRecord(str(path), i % 3, (captions[i % 3], captions[(i + 1) % 3])))
    dataset = TextDataset("toy", str(tmp_path), records[:7], [], records[7:])
    config = search.SearchRunConfig(
        epochs=2, batch_size=3, image_size=IMAGE_SIZE, embedding_dim=16, vocabulary_size=60,
        sequence_length=8, verbose=0, checkpoint_every_steps=1)
    # 7 pairs, batches of 3: 2 steps an epoch; killed 1 batch into epoch 2.
    _check_resumed(
        monkeypatch, capsys, lambda out: search.train_search(dataset, out, config), tmp_path,
        (search, "_write_run_folder", lambda out, m, h, r, e, backbone, t: backbone.variables),
        kill_after=3, step=3, batch=1, metric_keys=("R1", "mAP"))
