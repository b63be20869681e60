"""The shared serialization harness every `register_keras_serializable` class goes through.

In the spirit of keras-hub's ``TestCase`` (``run_serialization_test``,
``run_model_saving_test``), written as plain functions for pytest:

- `run_serialization_test`: ``get_config`` / ``from_config`` and ``serialize_keras_object`` /
  ``deserialize_keras_object`` through JSON give an object of the same class with the same
  config.
- `run_layer_test`: a layer built from its init kwargs and a revived copy (config round trip
  plus ``set_weights``) give equal outputs.
- `run_model_saving_test`: a model saved as ``.keras`` and reloaded is of the same class, has
  the same config, the same variables (state holders included), the same outputs and, when
  compiled, the same optimizer (its variables restored).
- `run_preset_saving_test`: a keras-hub Backbone or Task saved with ``save_to_preset`` and
  loaded with ``from_preset`` gives equal outputs.
- `run_preprocessor_preset_test`: a keras-hub Preprocessor (tokenizer, image converter and
  vocabulary included) saved into a preset next to its backbone loads back equal.
- `run_metric_test`, `run_schedule_test`, `run_optimizer_test`, `run_loss_test`: the revived
  object computes the same values as the original.

Every check compares numbers, so a config key that is not saved, a weight that is not
restored or a layer rebuilt differently fails here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

ATOL = 1e-5
RTOL = 1e-5


def to_numpy(structure: Any) -> Any:
    """A nest of tensors (dicts, lists, tuples) as the same nest of NumPy arrays."""
    return keras.tree.map_structure(lambda t: np.asarray(ops.convert_to_numpy(t)), structure)


def assert_allclose_structure(actual: Any, expected: Any, atol: float = ATOL,
                              rtol: float = RTOL, what: str = "outputs") -> None:
    """Two nests of tensors have the same structure and element-wise close values."""
    actual, expected = to_numpy(actual), to_numpy(expected)
    keras.tree.assert_same_structure(actual, expected)
    flat_actual, flat_expected = keras.tree.flatten(actual), keras.tree.flatten(expected)
    for index, (a, e) in enumerate(zip(flat_actual, flat_expected)):
        assert a.shape == e.shape, f"{what}[{index}]: shape {a.shape} != {e.shape}"
        np.testing.assert_allclose(a, e, atol=atol, rtol=rtol, err_msg=f"{what}[{index}]")


def _config_json(instance) -> str:
    return json.dumps(instance.get_config(), sort_keys=True, default=str)


def run_serialization_test(instance) -> Any:
    """Checks the config round trips of ``instance``; returns the object revived from JSON.

    Both ``type(instance).from_config(instance.get_config())`` and
    ``deserialize_keras_object(json.loads(json.dumps(serialize_keras_object(instance))))``
    must give an object of the same class whose config (as JSON) equals the original's.
    """
    cls = type(instance)
    config = _config_json(instance)
    revived = cls.from_config(instance.get_config())
    assert type(revived) is cls, f"from_config gave {type(revived).__name__}"
    assert _config_json(revived) == config, f"{cls.__name__}: from_config changed the config"
    serialized = json.dumps(keras.saving.serialize_keras_object(instance))
    revived = keras.saving.deserialize_keras_object(json.loads(serialized))
    assert type(revived) is cls, f"deserialize gave {type(revived).__name__}"
    assert _config_json(revived) == config, f"{cls.__name__}: serialize round trip changed it"
    return revived


def _call(obj, input_data, call_kwargs: Mapping | None):
    return obj(input_data, **dict(call_kwargs or {}))


def run_layer_test(cls: type, init_kwargs: Mapping, input_data: Any,
                   call_kwargs: Mapping | None = None, expected_output_shape=None,
                   atol: float = ATOL, rtol: float = RTOL) -> tuple[Any, Any]:
    """A layer and its config-revived copy (weights copied) compute the same outputs.

    Args:
        cls: The layer class.
        init_kwargs: Constructor arguments (small sizes).
        input_data: What the layer is called on (builds it).
        call_kwargs: Extra call arguments (e.g. ``{"training": False}``).
        expected_output_shape: Checked when given (a shape tuple or a nest of them).
        atol: Absolute tolerance of the output comparison.
        rtol: Relative tolerance.

    Returns:
        ``(layer, revived)``.
    """
    layer = cls(**dict(init_kwargs))
    _call(layer, input_data, call_kwargs)  # builds the layer
    perturb_weights(layer)
    output = _call(layer, input_data, call_kwargs)
    if expected_output_shape is not None:
        shapes = keras.tree.map_structure(lambda t: tuple(t.shape), to_numpy(output))
        assert shapes == expected_output_shape, f"{cls.__name__}: output shapes {shapes}"
    revived = run_serialization_test(layer)
    _call(revived, input_data, call_kwargs)  # builds the revived layer
    assert len(revived.weights) == len(layer.weights), f"{cls.__name__}: weight count differs"
    revived.set_weights(layer.get_weights())
    assert_allclose_structure(_call(revived, input_data, call_kwargs), output, atol, rtol)
    return layer, revived


def perturb_weights(obj, seed: int = 0) -> None:
    """Moves every float variable of ``obj`` off its initial value (x * U(0.9, 1.1) + U(+-0.01)).

    Run before a round trip, so that a variable the save forgets (a BatchNorm statistic, a
    memory, a gate) no longer matches by luck of both sides holding the initializer's value.
    Integer variables (counters) are left alone; variances stay positive.
    """
    rng = np.random.default_rng(seed)
    for variable in obj.weights:
        if not keras.backend.is_float_dtype(variable.dtype):
            continue
        value = to_numpy(variable).astype("float64")
        noise = rng.uniform(0.9, 1.1, size=value.shape) * value
        noise = noise + rng.uniform(-0.01, 0.01, size=value.shape)
        variable.assign(noise.astype(variable.dtype))


def assert_same_variables(restored, original, atol: float = 0.0) -> None:
    """Every variable of ``original`` (trainable or not) is restored, in order, by value."""
    names = [v.path for v in original.weights]
    restored_names = [v.path for v in restored.weights]
    assert restored_names == names, "variables differ after reload"
    for variable, reloaded in zip(original.weights, restored.weights):
        np.testing.assert_allclose(to_numpy(reloaded), to_numpy(variable), atol=atol, rtol=0,
                                   err_msg=variable.path)


def _prepare_optimizer_state(model) -> None:
    """Builds the optimizer and moves its step counter, so a restore is visible."""
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(7)


def _assert_same_optimizer(restored, model) -> None:
    assert restored.compiled, f"{type(model).__name__}: the reloaded model is not compiled"
    assert type(restored.optimizer) is type(model.optimizer)
    config = {k: v for k, v in model.optimizer.get_config().items() if k != "name"}
    reloaded = {k: v for k, v in restored.optimizer.get_config().items() if k != "name"}
    assert json.dumps(reloaded, sort_keys=True, default=str) == json.dumps(
        config, sort_keys=True, default=str), "optimizer config differs after reload"
    assert int(to_numpy(restored.optimizer.iterations)) == 7, "optimizer state not restored"
    assert len(restored.optimizer.variables) == len(model.optimizer.variables)


def run_model_saving_test(cls: type, init_kwargs: Mapping, input_data: Any,
                          tmp_path: str | Path, compile_kwargs: Mapping | None = None,
                          call_kwargs: Mapping | None = None, atol: float = ATOL,
                          rtol: float = RTOL, prepare: Callable | None = None) -> tuple[Any, Any]:
    """Saves a model as ``.keras`` and reloads it: same class, config, variables, outputs.

    Args:
        cls: The model class (a Task, a Backbone, any `keras.Model`).
        init_kwargs: Constructor arguments.
        input_data: What the model is called on before and after the round trip.
        tmp_path: A temporary folder.
        compile_kwargs: When given, the model is compiled with them (``{}``: the defaults) and
            its optimizer built with a moved step counter, and the reloaded model must come
            back compiled with the same optimizer and state (``compile_from_config``).
        call_kwargs: Extra call arguments.
        atol: Absolute tolerance of the output comparison.
        rtol: Relative tolerance.
        prepare: Called with the model before saving (after `perturb_weights`), to give
            it more non-default state (e.g. set a memory), which the reload must keep.

    Returns:
        ``(model, restored)``.
    """
    model = cls(**dict(init_kwargs))
    if compile_kwargs is not None:
        model.compile(**dict(compile_kwargs))
        _prepare_optimizer_state(model)
    perturb_weights(model)
    if prepare is not None:
        prepare(model)
    output = _call(model, input_data, call_kwargs)
    path = Path(tmp_path) / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is cls, f"load_model gave {type(restored).__name__}, not {cls}"
    assert _config_json(restored) == _config_json(model), f"{cls.__name__}: config changed"
    assert_same_variables(restored, model)
    if compile_kwargs is not None:
        _assert_same_optimizer(restored, model)
    assert_allclose_structure(_call(restored, input_data, call_kwargs), output, atol, rtol)
    return model, restored


def run_preset_saving_test(cls: type, init_kwargs: Mapping, input_data: Any,
                           tmp_path: str | Path, call_kwargs: Mapping | None = None,
                           atol: float = ATOL, rtol: float = RTOL,
                           load_kwargs: Mapping | None = None) -> tuple[Any, Any]:
    """``save_to_preset`` then ``cls.from_preset``: same class, config and outputs.

    Works for keras-hub Backbones and Tasks (a Task preset also holds its backbone and
    preprocessor).

    Args:
        cls: A `keras_hub.models.Backbone` or `keras_hub.models.Task` subclass.
        init_kwargs: Constructor arguments.
        input_data: What the model is called on.
        tmp_path: A temporary folder (the preset goes into ``tmp_path / "preset"``).
        call_kwargs: Extra call arguments.
        atol: Absolute tolerance.
        rtol: Relative tolerance.
        load_kwargs: Extra ``from_preset`` arguments.

    Returns:
        ``(model, restored)``.
    """
    model = cls(**dict(init_kwargs))
    perturb_weights(model)
    output = _call(model, input_data, call_kwargs)
    preset = Path(tmp_path) / "preset"
    model.save_to_preset(str(preset))
    assert (preset / "config.json").is_file()
    restored = cls.from_preset(str(preset), **dict(load_kwargs or {}))
    assert type(restored) is cls, f"from_preset gave {type(restored).__name__}, not {cls}"
    assert _config_json(restored) == _config_json(model), f"{cls.__name__}: config changed"
    assert_same_variables(restored, model)
    assert_allclose_structure(_call(restored, input_data, call_kwargs), output, atol, rtol)
    return model, restored


def run_metric_test(cls: type, init_kwargs: Mapping, batches: Sequence[tuple],
                    expected: float | None = None, atol: float = 1e-6) -> tuple[Any, Any]:
    """A metric and its revived copy accumulate the same result over the same batches.

    Args:
        cls: The `keras.metrics.Metric` class.
        init_kwargs: Constructor arguments.
        batches: ``(y_true, y_pred)`` pairs passed to ``update_state`` in turn.
        expected: The result the batches must give, when known (e.g. computed in NumPy).
        atol: Tolerance.

    Returns:
        ``(metric, revived)``.
    """
    metric = cls(**dict(init_kwargs))
    revived = run_serialization_test(metric)
    for y_true, y_pred in batches:
        metric.update_state(y_true, y_pred)
        revived.update_state(y_true, y_pred)
    result = float(to_numpy(metric.result()))
    assert abs(float(to_numpy(revived.result())) - result) <= atol
    if expected is not None:
        assert abs(result - expected) <= atol, f"{cls.__name__}: {result} != {expected}"
    return metric, revived


def run_schedule_test(cls: type, init_kwargs: Mapping, steps: Sequence[int],
                      expected: Sequence[float] | None = None,
                      atol: float = 1e-9) -> tuple[Any, Any]:
    """A learning-rate schedule and its revived copy give the same rate at every step."""
    schedule = cls(**dict(init_kwargs))
    revived = run_serialization_test(schedule)
    revived = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(revived))
    values = [float(to_numpy(schedule(step))) for step in steps]
    np.testing.assert_allclose([float(to_numpy(revived(s))) for s in steps], values,
                               atol=atol, rtol=1e-6)
    if expected is not None:
        np.testing.assert_allclose(values, expected, atol=atol, rtol=1e-6)
    return schedule, revived


def _one_update(optimizer, initial: Sequence[np.ndarray], grads: Sequence[np.ndarray]):
    variables = [keras.Variable(value, name=f"v{i}") for i, value in enumerate(initial)]
    optimizer.apply([ops.convert_to_tensor(g) for g in grads], variables)
    return [to_numpy(v) for v in variables]


def run_optimizer_test(cls: type, init_kwargs: Mapping, atol: float = 1e-7) -> tuple[Any, Any]:
    """An optimizer and its revived copy take the same step from the same gradients."""
    optimizer = cls(**dict(init_kwargs))
    revived = run_serialization_test(optimizer)
    rng = np.random.default_rng(0)
    initial = [rng.normal(size=(3, 2)).astype("float32"), rng.normal(size=(2,)).astype("float32")]
    grads = [rng.normal(size=v.shape).astype("float32") for v in initial]
    stepped = _one_update(optimizer, initial, grads)
    for before, after in zip(initial, stepped):
        assert not np.allclose(before, after), f"{cls.__name__} did not update"
    for a, e in zip(_one_update(revived, initial, grads), stepped):
        np.testing.assert_allclose(a, e, atol=atol, rtol=1e-6)
    return optimizer, revived


def run_loss_test(cls: type, init_kwargs: Mapping, y_true, y_pred,
                  atol: float = 1e-6) -> tuple[Any, Any]:
    """A `keras.losses.Loss` and its revived copy give the same loss."""
    loss = cls(**dict(init_kwargs))
    revived = run_serialization_test(loss)
    value = float(to_numpy(loss(y_true, y_pred)))
    assert abs(float(to_numpy(revived(y_true, y_pred))) - value) <= atol
    return loss, revived


def token_lists(ids) -> list:
    """Token ids (a tensor, a tf.RaggedTensor or nested lists) as nested Python lists."""
    if hasattr(ids, "to_list"):  # a tf.RaggedTensor
        return ids.to_list()
    if isinstance(ids, (list, tuple)):  # ragged ids as nested lists (keras-hub off TF)
        return [token_lists(row) if isinstance(row, (list, tuple)) or hasattr(row, "shape")
                else int(row) for row in ids]
    return np.asarray(ops.convert_to_numpy(ids)).tolist()


def run_preprocessor_preset_test(preprocessor, backbone, input_data: Any,
                                 tmp_path: str | Path) -> tuple[Any, Any]:
    """A keras-hub `Preprocessor` saved into a preset next to its backbone loads back equal.

    keras-hub presets are anchored on a backbone (``config.json``): the backbone and the
    preprocessor (its ``preprocessor.json``, tokenizer and image converter configs and
    assets such as the vocabulary) are saved into one folder, as a task does, and
    ``type(preprocessor).from_preset`` must give the same config and the same outputs.

    Args:
        preprocessor: A built `keras_hub.models.Preprocessor` (its assets set).
        backbone: The backbone the preset is anchored on (its class must be the
            preprocessor's ``backbone_cls``).
        input_data: Raw inputs (images, captions) the preprocessor is called on.
        tmp_path: A temporary folder.

    Returns:
        ``(preprocessor, restored)``.
    """
    run_serialization_test(preprocessor)
    expected = preprocessor(input_data)
    preset = Path(tmp_path) / "preprocessor_preset"
    backbone.save_to_preset(str(preset))
    preprocessor.save_to_preset(str(preset))
    restored = type(preprocessor).from_preset(str(preset))
    assert type(restored) is type(preprocessor)
    assert _config_json(restored) == _config_json(preprocessor)
    assert_allclose_structure(restored(input_data), expected, atol=0, rtol=0)
    return preprocessor, restored
