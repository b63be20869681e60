"""Tripwires for the private Keras / keras-hub APIs valpat_keras relies on.

pyproject.toml pins the Keras and keras-hub ranges these were checked with. A new release
inside or outside that range that renames a hook, changes its signature or stops calling it
fails here with the hook's name, rather than as a silently wrong training run:

- `valpat_keras.optimizers.GroupedAdamW` overrides ``_backend_update_step`` and
  ``_apply_weight_decay`` and calls ``_get_current_learning_rate`` / ``_use_weight_decay``.
- `valpat_keras.models.layer_classes` walks models with ``_flatten_layers``; `batch_norm` swaps the class of
  Keras ``BatchNormalization`` instances and reads their attributes (``renorm`` since Keras
  3.14), and hands ``ops.custom_gradient`` a ``grad(*args, upstream=None)`` function.
- `valpat_keras.models.fast_layers` swaps the class of Keras ``Conv2D`` / ``MaxPooling2D``
  instances the same way, overrides ``Conv2D.convolution_op(inputs, kernel)`` (which
  ``Conv2D.call`` must call) and reads the layers' standardised arguments.
- `valpat_keras.models.preprocessors` decorates calls with keras-hub's private
  ``preprocessing_function``; `valpat_keras.data.tokenizer` uses the tokenizers'
  ``_add_special_token``.

The behaviour behind each hook (grouped learning rates equal to AdamW at the scaled rate,
closed-form BN gradients equal to Keras') is tested in tests/models/test_optimizers.py and
tests/models/test_batch_norm.py; the cases here add what those do not cover.
"""

from __future__ import annotations

import inspect

import keras
import keras_hub
import numpy as np
import pytest
from keras import ops
from keras_hub.src.utils.tensor_utils import preprocessing_function

from valpat_keras.models.batch_norm import BatchNormalization as ClosedFormBatchNormalization
from valpat_keras.models.batch_norm import freeze_batch_norm, use_closed_form_batch_norm
from valpat_keras.optimizers import GroupedAdamW

pytestmark = pytest.mark.keras


def _parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


@pytest.mark.parametrize("hook,parameters", [
    ("_backend_update_step", ["self", "grads", "trainable_variables", "learning_rate"]),
    ("_apply_weight_decay", ["self", "variables"]),
    ("_get_current_learning_rate", ["self"]),
    ("_use_weight_decay", ["self", "variable"]),
])
def test_adamw_private_hooks_keep_their_signatures(hook, parameters):
    # Looked up on the backend's AdamW (each backend has its own optimizer base class).
    optimizer = keras.optimizers.AdamW(1e-3)
    assert callable(getattr(type(optimizer), hook, None)), f"keras AdamW lost {hook}"
    assert _parameters(getattr(type(optimizer), hook)) == parameters, hook
    if hook in ("_backend_update_step", "_apply_weight_decay"):
        assert hook in vars(GroupedAdamW), f"GroupedAdamW no longer overrides {hook}"


class _Scaled(keras.optimizers.schedules.LearningRateSchedule):
    """``factor`` times a piecewise-constant rate that changes at every step."""

    def __init__(self, factor: float):
        self.factor = factor

    def __call__(self, step):
        rates = ops.convert_to_tensor([1e-2, 5e-3, 2e-3, 1e-3], "float32")
        return self.factor * ops.take(rates, ops.minimum(ops.cast(step, "int32"), 3))


def _weights_after_steps(optimizer, exclude_bias=False, steps=3):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="body"),
                              keras.layers.Dense(2, name="head")], name="net")
    if exclude_bias:
        optimizer.exclude_from_weight_decay(var_names=["bias"])
    if isinstance(optimizer, GroupedAdamW):
        optimizer.set_multiplier(model.trainable_variables, 0.5)
    model.compile(optimizer=optimizer, loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    for _ in range(steps):
        model.train_on_batch(x, y)
    return {w.path: ops.convert_to_numpy(w) for w in model.weights}


@pytest.mark.parametrize("exclude_bias", [False, True])
def test_grouped_decay_follows_the_schedule_of_the_current_step(exclude_bias):
    # Every variable at multiplier 0.5 under a schedule is AdamW under the halved schedule,
    # step after step: the grouped update and its decoupled decay read the current rate
    # (`_get_current_learning_rate`) and respect `exclude_from_weight_decay`
    # (`_use_weight_decay`).
    grouped = _weights_after_steps(GroupedAdamW(_Scaled(1.0), weight_decay=0.5), exclude_bias)
    plain = _weights_after_steps(keras.optimizers.AdamW(_Scaled(0.5), weight_decay=0.5),
                                 exclude_bias)
    full = _weights_after_steps(keras.optimizers.AdamW(_Scaled(1.0), weight_decay=0.5),
                                exclude_bias)
    for path, value in grouped.items():
        np.testing.assert_allclose(value, plain[path], rtol=1e-5, atol=1e-7, err_msg=path)
        assert not np.allclose(value, full[path]), path  # the multiplier did act


def test_flatten_layers_reaches_nested_batch_norms():
    inner = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(2, 3),
                              keras.layers.BatchNormalization(name="inner_bn")], name="inner")
    images = keras.Input((4, 4, 3))
    x = keras.layers.BatchNormalization(name="outer_bn")(inner(images))
    model = keras.Model(images, x)
    assert _parameters(type(model)._flatten_layers)[:3] == ["self", "include_self",
                                                             "recursive"]
    assert use_closed_form_batch_norm(model) == 2
    assert {type(layer) for layer in (model.get_layer("outer_bn"),
                                      inner.get_layer("inner_bn"))} == {
        ClosedFormBatchNormalization}
    assert use_closed_form_batch_norm(model) == 0  # already switched
    assert freeze_batch_norm(model) == 2


def test_keras_batch_norm_has_what_the_closed_form_reads():
    layer = keras.layers.BatchNormalization(axis=1, momentum=0.8, epsilon=1e-3)
    layer.build((2, 3, 4))
    for name in ("axis", "momentum", "epsilon", "center", "scale", "renorm", "synchronized",
                 "moving_mean", "moving_variance", "gamma", "beta"):
        assert hasattr(layer, name), f"keras BatchNormalization lost `{name}`"
    assert _parameters(keras.layers.BatchNormalization.call) == ["self", "inputs", "training",
                                                                "mask"]
    # The class swap keeps the layer working and its config unchanged.
    config = layer.get_config()
    layer.__class__ = ClosedFormBatchNormalization
    assert layer.get_config() == config
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype("float32")
    reference = keras.layers.BatchNormalization.from_config(config)
    reference.build((2, 3, 4))
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x, training=True)),
                               ops.convert_to_numpy(reference(x, training=True)), atol=1e-5)


@ops.custom_gradient
def _double_with_gradient_three(x):
    def grad(*args, upstream=None):
        # TF and JAX call grad(upstream), torch grad(*inputs, upstream=...).
        if upstream is None:
            (upstream,) = args
        return upstream * 3.0
    return x * 2.0, grad


class _CustomGradientLayer(keras.layers.Layer):
    def build(self, input_shape):
        self.w = self.add_weight(shape=(2,), initializer=keras.initializers.Constant([1., 2.]))

    def call(self, inputs):
        return ops.ones_like(inputs[:, :1]) * ops.sum(_double_with_gradient_three(self.w.value))


def test_custom_gradient_replaces_autodiff_inside_fit():
    # One SGD step (lr 1) on mean(output): the custom gradient is 3 per element, autodiff's
    # would be 2. Torch's `custom_gradient` turns an error inside the function into NaN
    # gradients, so a changed calling protocol would show here too.
    model = keras.Sequential([keras.Input((3,)), _CustomGradientLayer()])
    model.compile(optimizer=keras.optimizers.SGD(1.0),
                  loss=lambda y_true, y_pred: ops.mean(y_pred))
    model.train_on_batch(np.zeros((4, 3), "float32"), np.zeros((4, 1), "float32"))
    np.testing.assert_allclose(ops.convert_to_numpy(model.layers[0].w), [-2.0, -1.0])


def test_keras_hub_private_helpers_exist():
    assert callable(preprocessing_function)
    assert callable(getattr(keras_hub.tokenizers.Tokenizer, "_add_special_token", None))


def test_keras_conv_and_pool_have_what_the_fast_layers_read(monkeypatch):
    assert _parameters(keras.layers.Conv2D.convolution_op) == ["self", "inputs", "kernel"]
    conv = keras.layers.Conv2D(4, 3, strides=2, padding="same")
    pool = keras.layers.MaxPooling2D(3, strides=2)
    # Standardised to tuples / lower-case strings, as fast_layers compares them.
    assert (conv.kernel_size, conv.strides, conv.dilation_rate) == ((3, 3), (2, 2), (1, 1))
    assert (conv.padding, conv.groups, conv.data_format) == ("same", 1, "channels_last")
    assert (pool.pool_size, pool.strides, pool.padding) == ((3, 3), (2, 2), "valid")
    assert pool.data_format == "channels_last"
    calls = []
    keras_op = keras.layers.Conv2D.convolution_op
    monkeypatch.setattr(keras.layers.Conv2D, "convolution_op",
                        lambda self, *args: calls.append(1) or keras_op(self, *args))
    conv(np.ones((1, 6, 6, 2), "float32"))
    assert calls == [1]
