"""Step checkpoints and exact resume: an interrupted-then-resumed pretraining run equals an
uninterrupted one (weights, momentum encoder, queue, optimiser, history), a truncated latest
checkpoint falls back to the previous one, corrupt metadata names its file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.keras

STEPS = 5  # 20 tiny SynthPed images, batch 8: 2 steps per epoch, 3 epochs (the last cut)


class _Killed(Exception):
    """Stands for a kill: raised out of ``fit`` right after a given step."""


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from valpat_keras import datasets
    from valpat_keras.data.synthped import SynthPedConfig, ensure_synthped

    info = ensure_synthped(tmp_path_factory.mktemp("synthped"), SynthPedConfig.preset("tiny"),
                           progress=lambda _: None)
    return datasets.load("luperson_ta", str(info.paths["pretrain_manifest"]))


def _config(**changes):
    from valpat_keras.tasks.pretrain_config import PretrainConfig

    config = PretrainConfig(encoder_config="tiny", steps=STEPS, batch_size=8,
                            image_size=(32, 16), queue_size=8, verbose=0,
                            checkpoint_every_steps=3, seed=1)
    return config.replace(**changes)


def _pretrain(monkeypatch, data, out_dir, kill_after=None, **changes):
    """Runs `pretrain`; returns the final model state (variables, optimiser) as arrays."""
    from valpat_keras.tasks import checkpointing, pretraining

    monkeypatch.undo()  # the patches of an earlier call (they would wrap each other)
    final = {}
    write_run = pretraining.write_pretraining_run

    def capture(out, model, tokenizer, history):
        final["model"] = [np.array(v.numpy()) for v in model.variables]
        final["optimizer"] = [np.array(v.numpy()) for v in model.optimizer.variables]
        return write_run(out, model, tokenizer, history)

    original = checkpointing.StepCheckpoint.on_train_batch_end

    def batch_end(self, batch, logs=None):
        original(self, batch, logs)
        if kill_after is not None and self.step == kill_after:
            raise _Killed

    monkeypatch.setattr(pretraining, "write_pretraining_run", capture)
    monkeypatch.setattr(checkpointing.StepCheckpoint, "on_train_batch_end", batch_end)
    final["history"] = pretraining.pretrain(data, out_dir, _config(**changes)).history
    return final


def _assert_same_run(got, want, got_dir, want_dir):
    for key in ("model", "optimizer"):
        assert len(got[key]) == len(want[key])
        for a, b in zip(got[key], want[key]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    history = json.loads((got_dir / "history.json").read_text())
    wanted = json.loads((want_dir / "history.json").read_text())
    assert sorted(history) == sorted(wanted) and "ssl_loss" in history
    for name, values in wanted.items():
        assert len(history[name]) == len(values) == 3, name
        np.testing.assert_allclose(history[name], values, rtol=1e-5, atol=1e-6)
    assert not (got_dir / "checkpoints").exists()


def test_interrupted_then_resumed_pretraining_equals_an_uninterrupted_run(
        monkeypatch, tmp_path, tiny_data, capsys):
    from valpat_keras.tasks import pretraining

    want = _pretrain(monkeypatch, tiny_data, tmp_path / "full")
    # A kill after step 4: the checkpoints are step 3 (mid-epoch 2) and step 2 (epoch 1 end).
    with pytest.raises(_Killed):
        _pretrain(monkeypatch, tiny_data, tmp_path / "cut", kill_after=4)
    folder = tmp_path / "cut" / "checkpoints"
    assert sorted(p.name for p in folder.glob("step_*.npz")) == [
        "step_000000002.npz", "step_000000003.npz"]
    metadata = json.loads((folder / "training_metadata.json").read_text())
    assert [(e["step"], e["epoch"], e["batch"]) for e in metadata["checkpoints"]] == [
        (3, 1, 1), (2, 1, 0)]
    shutil.copytree(tmp_path / "cut", tmp_path / "truncated")
    capsys.readouterr()

    # Another checkpoint interval on the resumed run changes nothing it computes.
    got = _pretrain(monkeypatch, tiny_data, tmp_path / "cut", checkpoint_every_steps=1)
    assert "resuming at step 3 (epoch 2, 1 batch(es) of it done)" in capsys.readouterr().out
    _assert_same_run(got, want, tmp_path / "cut", tmp_path / "full")

    # A kill during a save of the latest checkpoint: the previous one is used, and said so.
    latest = tmp_path / "truncated" / "checkpoints" / "step_000000003.npz"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    got = _pretrain(monkeypatch, tiny_data, tmp_path / "truncated")
    out = capsys.readouterr().out
    assert f"Checkpoint {latest} is unreadable" in out
    assert "falling back to the previous one, step_000000002.npz (step 2)" in out
    assert "resuming at step 2 (epoch 2, 0 batch(es) of it done)" in out
    _assert_same_run(got, want, tmp_path / "truncated", tmp_path / "full")
    assert pretraining.run_config_of(tmp_path / "cut") == pretraining.run_config_of(
        tmp_path / "full")


def test_every_epoch_of_an_epochs_run_is_a_full_pass(monkeypatch, tmp_path, tiny_data):
    # The former one-pass dataset, reused by fit's single iterator, ran dry after epoch 1:
    # epoch 2 trained nothing and logged epoch 1's values again.
    final = _pretrain(monkeypatch, tiny_data, tmp_path / "run", steps=None, epochs=3)
    assert int(final["optimizer"][0]) == 6  # AdamW's iteration counter: 3 epochs x 2 steps
    losses = final["history"]["loss"]
    assert len(losses) == 3 and len(set(losses)) == 3
    assert json.loads((tmp_path / "run" / "history.json").read_text())["loss"] == losses


def _small_model():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dropout(0.5),
                              keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def _stream(step):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(4).skip(step)


def test_fit_resumable_resumes_mid_epoch_with_dropout_and_metrics(tmp_path, capsys):
    import keras

    from valpat_keras.tasks.checkpointing import StepCheckpoint, fit_resumable

    def run(folder, kill_at=None):
        model = _small_model()
        checkpoint = StepCheckpoint(folder, every_steps=2)

        class Kill(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if kill_at is not None and checkpoint.step == kill_at:
                    raise _Killed

        class EpochLog(keras.callbacks.Callback):  # state kept across the resume
            def __init__(self):
                super().__init__()
                self.entries = []

            def on_epoch_end(self, epoch, logs=None):
                self.entries = [*self.entries, [epoch, float(logs["loss"])]]

            def get_resume_state(self):
                return self.entries

            def set_resume_state(self, state):
                self.entries = state

        log = EpochLog()
        history = fit_resumable(model, _stream, epochs=3, steps_per_epoch=5,
                                checkpoint=checkpoint, callbacks=[Kill(), log], verbose=0)
        assert [e for e, _ in log.entries] == [0, 1, 2]
        assert [v for _, v in log.entries] == history.history["loss"]
        return model, history

    want_model, want = run(tmp_path / "a")
    with pytest.raises(_Killed):
        run(tmp_path / "b", kill_at=7)  # checkpoints at 6 (epoch 2, batch 1) and 5
    got_model, got = run(tmp_path / "b")
    assert "resuming at step 6 (epoch 2, 1 batch(es) of it done)" in capsys.readouterr().out
    assert len(got.history["loss"]) == 3 and got.epoch == [0, 1, 2]
    np.testing.assert_allclose(got.history["loss"], want.history["loss"], rtol=1e-5)
    for a, b in zip(got_model.variables + got_model.optimizer.variables,
                    want_model.variables + want_model.optimizer.variables):
        np.testing.assert_allclose(np.asarray(a.numpy()), np.asarray(b.numpy()), rtol=1e-5,
                                   atol=1e-6)


def test_corrupt_metadata_and_a_different_model_name_the_file(tmp_path):
    import keras

    from valpat_keras.errors import InputError
    from valpat_keras.tasks.checkpointing import StepCheckpoint

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "training_metadata.json").write_text('{"format": ')
    with pytest.raises(InputError, match=r"training_metadata.json: corrupt checkpoint metadata"
                       r".*Delete the checkpoints folder") as info:
        StepCheckpoint(folder).restore(_small_model())
    assert str(folder / "training_metadata.json") in str(info.value)

    shutil.rmtree(folder)
    model = _small_model()
    checkpoint = StepCheckpoint(folder, signature={"lr": 1})
    checkpoint.step = 4
    assert checkpoint.save(model) == folder / "step_000000004.npz"
    with pytest.raises(InputError, match=r"other settings \(lr: 1 then, 2 now\)"):
        StepCheckpoint(folder, signature={"lr": 2}).restore(model)
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    other.compile(optimizer="adam", loss="mse")
    with pytest.raises(InputError, match=r"step_000000004.npz: holds .* different model"):
        StepCheckpoint(folder).restore(other)
    # A kill during a save leaves only a temporary file: ignored, then cleaned up.
    stale = folder / ".step_000000006.npz.tmp123"
    stale.write_bytes(b"PK\x03\x04 half a file")
    resumed = StepCheckpoint(folder)
    assert resumed.restore(model).step == 4
    resumed.step = 6
    resumed.save(model)
    assert not stale.exists()
    assert sorted(p.name for p in folder.iterdir()) == [
        "step_000000004.npz", "step_000000006.npz", "training_metadata.json"]
    # Nothing readable left: an error naming the folder and the files, no traceback.
    for path in folder.glob("step_*.npz"):
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(InputError, match=r"none of the checkpoints \(step_000000006.npz, "
                                         r"step_000000004.npz\) can be read"):
        StepCheckpoint(folder).restore(model)


def test_the_pretraining_stream_continues_the_repeated_pipeline(tiny_data):
    from valpat_keras.data.pipelines import pretrain_dataset

    settings = {"image_size": (32, 16), "batch_size": 8, "seed": 3, "augment": "reid"}
    repeated = [b["view1"].numpy() for b in pretrain_dataset(tiny_data.records, **settings)
                .repeat().take(7)]  # 2 batches a pass: 3 pass boundaries
    for start in (0, 3):
        stream = [b["view1"].numpy() for b in pretrain_dataset(
            tiny_data.records, start_step=start, **settings).take(7 - start)]
        for a, b in zip(stream, repeated[start:]):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(repeated[0], repeated[2])  # a new pass, a new shuffle


def test_the_default_interval_is_time_based(tmp_path, monkeypatch):
    import itertools

    import keras

    from valpat_keras.tasks import checkpointing

    class Clock:  # each reading 250 s after the previous one
        ticks = itertools.count(250, 250)

        @classmethod
        def monotonic(cls):
            return float(next(cls.ticks))

        time = monotonic

    class Kill(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 3:
                raise _Killed

    monkeypatch.setattr(checkpointing, "time", Clock)
    checkpoint = checkpointing.StepCheckpoint(tmp_path)
    assert checkpoint.every_steps is None and checkpoint.every_seconds == 600
    with pytest.raises(_Killed):
        _small_model().fit(_stream(0), epochs=1, steps_per_epoch=10, verbose=0,
                           shuffle=False, callbacks=[checkpoint, Kill()])
    # Start at 500 s; batch ends at 750, 1000, 1250 s (750 s on: saved), then 2000 s.
    metadata = json.loads((tmp_path / "training_metadata.json").read_text())
    assert [e["step"] for e in metadata["checkpoints"]] == [3]


def test_a_non_finite_loss_writes_no_checkpoint_of_the_diverged_weights(tmp_path, tiny_data):
    from valpat_keras.errors import NonFiniteLossError
    from valpat_keras.tasks import pretraining

    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="the loss became"):
        pretraining.pretrain(tiny_data, out, _config(learning_rate=1e38,
                                                     checkpoint_every_steps=1))
    history = json.loads((out / "history.json").read_text())
    assert None in history["loss"]  # strict JSON: the non-finite value as null
    for entry in json.loads((out / "checkpoints" / "training_metadata.json").read_text())[
            "checkpoints"]:
        with np.load(out / "checkpoints" / entry["file"]) as arrays:
            assert all(np.isfinite(arrays[k]).all() for k in arrays.files
                       if arrays[k].dtype.kind == "f")
