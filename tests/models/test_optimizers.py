import keras
import numpy as np
import pytest
from keras.ops import convert_to_numpy as to_np

from valpat_keras.optimizers import GroupedAdamW

pytestmark = pytest.mark.keras


def _two_layer_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="body"),
                             keras.layers.Dense(2, name="head")], name="net")


def _weights_after_steps(optimizer_for, steps=1):
    """Weights of the two-layer model after ``steps`` train steps (fit path of the backend)."""
    model = _two_layer_model()
    optimizer = optimizer_for(model)
    model.compile(optimizer=optimizer, loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    for _ in range(steps):
        model.train_on_batch(x, y)
    return {w.path: to_np(w) for w in model.weights}


def _with_multiplier(multiplier, weight_decay):
    def make(model):
        optimizer = GroupedAdamW(1e-2, weight_decay=weight_decay)
        optimizer.set_multiplier(model.get_layer("body").trainable_variables, multiplier)
        return optimizer
    return make


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_grouped_adamw_scales_the_group_learning_rate_and_decay(weight_decay):
    # A group with multiplier m takes AdamW's step at learning rate m * lr exactly, decay
    # included; the rest takes the step at lr. (One step: after it the two runs' heads
    # differ, so later gradients of the body would too.)
    grouped = _weights_after_steps(_with_multiplier(0.1, weight_decay))
    slow = _weights_after_steps(lambda m: keras.optimizers.AdamW(1e-3, weight_decay=weight_decay))
    fast = _weights_after_steps(lambda m: keras.optimizers.AdamW(1e-2, weight_decay=weight_decay))
    initial = {w.path: to_np(w) for w in _two_layer_model().weights}
    for path, value in grouped.items():
        expected = slow[path] if path.startswith("net/body") else fast[path]
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-7, err_msg=path)
        assert not np.allclose(value, initial[path])


def test_grouped_adamw_multiplier_zero_freezes_and_rejects_negative():
    frozen = _weights_after_steps(_with_multiplier(0.0, weight_decay=0.5))
    initial = {w.path: to_np(w) for w in _two_layer_model().weights}
    for path, value in frozen.items():
        if path.startswith("net/body"):
            np.testing.assert_array_equal(value, initial[path])
        else:
            assert not np.allclose(value, initial[path])
    with pytest.raises(ValueError, match="multiplier must be >= 0"):
        GroupedAdamW(1e-3).set_multiplier([], -1.0)


def test_grouped_adamw_config_round_trips():
    optimizer = GroupedAdamW(3e-4, weight_decay=5e-4, beta_2=0.99)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is GroupedAdamW
    assert restored.get_config() == optimizer.get_config()
