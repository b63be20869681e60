"""The steps the transfer run functions share: folder and seed, epochs, schedule, fit, history."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from valpat_keras.errors import InputError, NonFiniteLossError
from valpat_keras.tasks.transfer_common import (
    cap_epochs,
    check_batch_size,
    cosine_schedule,
    fit_transfer,
    start_run,
    write_history,
)

pytestmark = pytest.mark.keras


def test_start_run_creates_the_folder_and_seeds_every_generator(tmp_path):
    out = start_run(tmp_path / "a" / "run", seed=3)
    assert out.is_dir()
    first = (np.random.rand(), float(keras.ops.convert_to_numpy(keras.random.uniform(()))))
    start_run(out, seed=3)  # an existing folder is fine
    again = (np.random.rand(), float(keras.ops.convert_to_numpy(keras.random.uniform(()))))
    assert first == again


def test_check_batch_size():
    assert check_batch_size(8.0) == 8
    with pytest.raises(InputError, match="batch_size must be a positive integer, got 0"):
        check_batch_size(0)


def test_a_capped_epoch_repeats_the_data_and_an_uncapped_one_is_a_pass():
    data = tf.data.Dataset.range(3)
    capped, steps = cap_epochs(data, steps_per_epoch=5, full_pass_steps=3)
    assert steps == 5 and list(capped.take(5).as_numpy_iterator()) == [0, 1, 2, 0, 1]
    same, steps = cap_epochs(data, steps_per_epoch=None, full_pass_steps=3)
    assert same is data and steps == 3


def test_cosine_schedule_decays_to_one_percent_over_the_run():
    schedule = cosine_schedule(1e-2, epochs=4, steps_per_epoch=5)
    rates = [float(keras.ops.convert_to_numpy(schedule(step))) for step in (0, 10, 20, 30)]
    np.testing.assert_allclose(rates, [1e-2, 1e-2 * (0.01 + 0.99 * 0.5), 1e-4, 1e-4],
                               rtol=1e-5)
    # No steps at all still gives a valid schedule.
    assert cosine_schedule(1e-2, epochs=0, steps_per_epoch=5).decay_steps == 1


def _linear_model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def test_fit_transfer_logs_validation_and_writes_the_history(tmp_path):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(8, 2)).astype("float32")
    y = x @ np.array([[1.0], [-2.0]], "float32")
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    model = _linear_model()
    history = fit_transfer(model, train, epochs=3, steps_per_epoch=None, verbose=0,
                           validation_data=train)
    assert len(history.history["loss"]) == 3 and "val_loss" in history.history
    path = write_history(tmp_path, history)
    assert path == tmp_path / "history.json"
    written = json.loads(path.read_text())
    assert written == {k: [float(v) for v in vs] for k, vs in history.history.items()}


def test_fit_transfer_raises_at_a_non_finite_loss():
    x = np.full((4, 2), np.nan, "float32")
    train = tf.data.Dataset.from_tensor_slices((x, np.zeros((4, 1), "float32"))).batch(2)
    with pytest.raises(NonFiniteLossError):
        fit_transfer(_linear_model(), train, epochs=1, steps_per_epoch=None, verbose=0)
