"""ValPatPretrainer on the current backend: EMA, queue, objectives, saving, resume, precision."""

import numpy as np
import pytest

from .pretrain_helpers import BATCH, as_dataset, fixed_batches, tiny_backbone, tiny_pretrainer

pytestmark = pytest.mark.keras


def _numpy(variables):
    return [np.array(v.numpy()) for v in variables]


def test_one_step_ema_queue_no_key_gradient_then_fit_lowers_loss_and_keras_round_trip(tmp_path):
    import keras

    model = tiny_pretrainer(momentum=0.9)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    pairs = model._ema_pairs
    key_ids = {id(v) for v in model.key_encoder.weights + model.key_projection.weights}
    assert not key_ids & {id(v) for v in model.trainable_variables}
    assert not model.key_encoder.trainable_weights
    # Unique variable paths: torch registers parameters by path (duplicates escape zero_grad).
    paths = [v.path for v in model.weights]
    assert len(paths) == len(set(paths))
    # Move the key weights away from the query weights so the EMA check is not trivial.
    rng = np.random.default_rng(1)
    for q, k in pairs:
        k.assign(q.numpy() + 0.1 * rng.normal(size=q.shape).astype("float32"))
    q0, k0 = _numpy(q for q, _ in pairs), _numpy(k for _, k in pairs)
    queue0 = model.queue.numpy().copy()
    batch = fixed_batches(1, seed=3)[0]

    model.fit(as_dataset([batch]), epochs=1, verbose=0)

    # EMA: key = m * key + (1 - m) * query (query weights before the optimiser step).
    for (q, k), q_before, k_before in zip(pairs, q0, k0):
        np.testing.assert_allclose(k.numpy(), 0.9 * k_before + 0.1 * q_before, atol=1e-6)
    assert any(not np.allclose(q.numpy(), before) for (q, _), before in zip(pairs, q0))
    # Queue: this step's keys in rows [0, B), the rest untouched, pointer at B.
    assert int(model.queue_pointer.numpy()) == BATCH and int(model.ema_step.numpy()) == 1
    keys = model.key_projection(model.key_encoder(batch["view2"], training=True), training=True)
    keys = keras.ops.convert_to_numpy(keys)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    queue1 = model.queue.numpy()
    np.testing.assert_allclose(queue1[:BATCH], keys, atol=2e-4)
    np.testing.assert_array_equal(queue1[BATCH:], queue0[BATCH:])

    history = model.fit(as_dataset(fixed_batches(2)), epochs=3, verbose=0).history
    assert set(history) >= {"loss", "ssl_loss", "ssl_acc", "itc_loss", "itc_acc", "attr_loss",
                            "attr_ma"}
    assert history["loss"][-1] < history["loss"][0]
    # 1 + 6 steps of 8 keys in a queue of 16: the pointer wrapped around to 8.
    assert int(model.queue_pointer.numpy()) == (7 * BATCH) % 16

    path = str(tmp_path / "pretrainer.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.queue.numpy(), model.queue.numpy())
    assert int(loaded.queue_pointer.numpy()) == int(model.queue_pointer.numpy())
    for (_, k), (_, k_loaded) in zip(model._ema_pairs, loaded._ema_pairs):
        np.testing.assert_array_equal(k_loaded.numpy(), k.numpy())
    emb = model.backbone.get_image_embeddings(batch["view1"])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded.backbone.get_image_embeddings(batch["view1"])),
        keras.ops.convert_to_numpy(emb), atol=1e-5)
    assert loaded.positive_ratios == model.positive_ratios


@pytest.mark.parametrize("weights", [{"ssl": 1.0}, {"itc": 1.0}, {"attr": 1.0},
                                     {"ssl": 1.0, "itc": 0.5, "attr": 0.0}])
def test_objective_switches_build_only_what_they_need(weights):
    import keras

    model = tiny_pretrainer(_shared_backbone(), loss_weights=weights)
    active = [name for name, w in weights.items() if w]
    assert model.objectives == [n for n in ("ssl", "itc", "attr") if n in active]
    assert hasattr(model, "key_encoder") == ("ssl" in active)
    assert hasattr(model, "queue") == ("ssl" in active)
    assert hasattr(model, "attribute_head") == ("attr" in active)
    batch = fixed_batches(1)[0]
    if "itc" not in active:
        del batch["token_ids"]  # unused inputs may be absent
    outputs = model(batch, training=False)
    loss = float(keras.ops.convert_to_numpy(
        model.compute_loss(batch, None, outputs, training=False)))
    parts = {m.name: float(m.result()) for m in model.trackers.values()}
    expected = sum(weights[n] * parts[f"{n}_loss"] for n in active)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert set(parts) == {f"{n}_{s}" for n in active for s in ("loss", "acc" if n != "attr"
                                                                else "ma")}


_BACKBONE = []


def _shared_backbone():
    if not _BACKBONE:
        _BACKBONE.append(tiny_backbone())
    return _BACKBONE[0]


def test_configuration_errors_are_clear():
    with pytest.raises(ValueError, match="multiple of the batch size"):
        tiny_pretrainer(_shared_backbone(), loss_weights={"ssl": 1.0}).enqueue(
            np.zeros((3, 16), "float32"))
    with pytest.raises(ValueError, match="switches every objective off"):
        tiny_pretrainer(_shared_backbone(), loss_weights={"ssl": 0})
    with pytest.raises(KeyError, match="token_ids"):
        tiny_pretrainer(_shared_backbone(), loss_weights={"itc": 1.0})(
            {"view1": fixed_batches(1)[0]["view1"]})


def test_scheduled_momentum_ema_follows_the_cosine_on_every_step():
    """The EMA of each step uses that step's momentum (a tensor on the schedule): checks the
    fused torch update and the per-variable one alike, against NumPy, over three steps."""
    import keras

    model = tiny_pretrainer(momentum=0.9, momentum_schedule_steps=4)
    model.compile(optimizer=keras.optimizers.SGD(0.0))  # query weights stay put
    pairs = model._ema_pairs
    rng = np.random.default_rng(2)
    for q, k in pairs:
        k.assign(q.numpy() + 0.1 * rng.normal(size=q.shape).astype("float32"))
    queries, keys = _numpy(q for q, _ in pairs), _numpy(k for _, k in pairs)
    model.fit(as_dataset(fixed_batches(3, seed=4)), epochs=1, verbose=0)
    for step in range(3):
        m = 1.0 - 0.1 * (np.cos(np.pi * step / 4) + 1.0) / 2.0
        keys = [m * k + (1.0 - m) * q for q, k in zip(queries, keys)]
    for (_, k), expected in zip(pairs, keys):
        np.testing.assert_allclose(k.numpy(), expected, atol=1e-6)
    assert int(model.ema_step.numpy()) == 3


def test_backup_and_restore_resumes_queue_and_momentum_encoder(tmp_path):
    import keras

    batches = as_dataset(fixed_batches(1))  # one step per epoch keeps torch eager cheap
    reference = tiny_pretrainer(loss_weights={"ssl": 1.0})
    initial = reference.get_weights()

    def fresh():
        model = tiny_pretrainer(loss_weights={"ssl": 1.0})
        model.set_weights(initial)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        return model

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("simulated crash")

    reference.compile(optimizer=keras.optimizers.Adam(1e-3))
    reference.fit(batches, epochs=2, verbose=0)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "checkpoints"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        fresh().fit(batches, epochs=2, verbose=0, callbacks=[backup, Crash()])
    resumed = fresh()
    resumed.fit(batches, epochs=2, verbose=0, callbacks=[backup])
    np.testing.assert_allclose(resumed.queue.numpy(), reference.queue.numpy(), atol=1e-5)
    assert int(resumed.queue_pointer.numpy()) == int(reference.queue_pointer.numpy())
    for (_, k), (_, k_ref) in zip(resumed._ema_pairs, reference._ema_pairs):
        np.testing.assert_allclose(k.numpy(), k_ref.numpy(), atol=1e-5)
    for v, v_ref in zip(resumed.trainable_variables, reference.trainable_variables):
        np.testing.assert_allclose(v.numpy(), v_ref.numpy(), atol=1e-5)


def test_mixed_bfloat16_trains_with_float32_losses():
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tiny_pretrainer(queue_size=8)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        assert model.backbone.image_encoder.compute_dtype == "bfloat16"
        assert model.queue.dtype == "float32"
        logs = model.train_on_batch(fixed_batches(1)[0], return_dict=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(np.isfinite(v) for v in logs.values()) and set(logs) >= {"ssl_loss", "attr_ma"}


def test_nan_callback_stops_with_message():
    import keras

    from valpat_keras.tasks.pretrainer import TerminateOnNaNWithMessage

    callback = TerminateOnNaNWithMessage()
    model = keras.Sequential([keras.layers.Dense(1)])
    model.stop_training = False
    callback.set_model(model)
    callback.on_epoch_begin(2)
    callback.on_train_batch_end(4, {"loss": 1.0, "itc_loss": 0.5})
    assert callback.message is None and not model.stop_training
    callback.on_train_batch_end(5, {"loss": float("nan"), "itc_loss": float("nan"),
                                    "ssl_loss": 1.0})
    assert model.stop_training and "epoch 3, batch 6" in callback.message
    assert "itc_loss" in callback.message and "ssl_loss" not in callback.message


def test_attribute_head_starts_at_the_prior_logits():
    from keras.ops import convert_to_numpy

    from valpat_keras.losses.attribute import prior_logits
    from valpat_keras.tasks.pretrainer import ValPatPretrainer

    ratios = [0.02, 0.5, 0.9, 0.3]
    model = ValPatPretrainer(tiny_backbone(), num_attributes=4, positive_ratios=ratios,
                             loss_weights={"attr": 1.0})
    bias = convert_to_numpy(model.attribute_head.dense.bias)
    np.testing.assert_allclose(bias, prior_logits(ratios), rtol=1e-6)
    assert bias[0] < -2 and bias[2] > 1  # rare attributes start predicted negative
    # Without known ratios (0.5 everywhere) the bias stays at zero.
    plain = ValPatPretrainer(tiny_backbone(), num_attributes=4, loss_weights={"attr": 1.0})
    np.testing.assert_array_equal(convert_to_numpy(plain.attribute_head.dense.bias), 0.0)
