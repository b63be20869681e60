import keras
import numpy as np
import pytest
from keras.ops import convert_to_numpy as to_np

from valpat_keras.models import ImageEncoder, build_image_encoder
from valpat_keras.models.batch_norm import BatchNormalization as ClosedFormBatchNormalization
from valpat_keras.models.batch_norm import freeze_batch_norm

pytestmark = pytest.mark.keras


def _one_sgd_step(norm_class, x, y, **norm_kwargs):
    """Weights after one SGD step (lr 1) of Dense -> BN -> Dense: the update is the gradient,
    and the first kernel's update carries the BN input gradient."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(x.shape[1:]),
        keras.layers.Dense(6, use_bias=False),
        norm_class(**norm_kwargs),
        keras.layers.Flatten(),
        keras.layers.Dense(1),
    ])
    bn = model.layers[1]
    if bn.scale:
        bn.gamma.assign(np.linspace(0.5, 1.5, bn.gamma.shape[0]).astype("float32"))
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    model.train_on_batch(x, y)
    return [to_np(w) for w in model.weights]


@pytest.mark.parametrize("shape,kwargs", [
    ((8, 4, 3, 5), {}),                                  # conv feature maps, channels last
    ((16, 5), {"momentum": 0.9, "epsilon": 1e-5}),       # vectors (heads, BNNeck)
    ((16, 5), {"center": False, "scale": False}),        # the projection head's last norm
    ((8, 5, 3), {"axis": 1}),                            # channels not on the last axis
])
def test_closed_form_batch_norm_matches_keras_gradients_and_statistics(shape, kwargs):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=shape) * 3 + 1).astype("float32")
    y = rng.normal(size=(shape[0], 1)).astype("float32")
    expected = _one_sgd_step(keras.layers.BatchNormalization, x, y, **kwargs)
    got = _one_sgd_step(ClosedFormBatchNormalization, x, y, **kwargs)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):  # kernels, gamma/beta, moving mean/variance
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def test_closed_form_batch_norm_inference_and_config_equal_keras():
    x = np.random.default_rng(1).normal(size=(4, 3, 2, 5)).astype("float32")
    bn = ClosedFormBatchNormalization(momentum=0.9, epsilon=1e-5, name="bn")
    reference = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    bn.build(x.shape)
    reference.build(x.shape)
    np.testing.assert_allclose(to_np(bn(x, training=True)), to_np(reference(x, training=True)),
                               atol=1e-5)
    np.testing.assert_allclose(to_np(bn(x)), to_np(reference(x)), atol=1e-6)
    restored = keras.layers.deserialize(keras.layers.serialize(bn))
    assert type(restored) is ClosedFormBatchNormalization
    assert restored.get_config() == bn.get_config()


def test_image_encoder_uses_closed_form_batch_norm_and_round_trips(tmp_path):
    encoder = build_image_encoder("tiny", image_size=(32, 16))
    norms = [layer for layer in encoder.backbone.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(type(n) is ClosedFormBatchNormalization for n in norms)
    x = np.random.default_rng(2).random((2, 32, 16, 3)).astype("float32")
    encoder.save(tmp_path / "encoder.keras")
    restored = keras.saving.load_model(tmp_path / "encoder.keras")
    assert isinstance(restored, ImageEncoder)
    assert all(type(layer) is ClosedFormBatchNormalization for layer in restored.backbone.layers
               if isinstance(layer, keras.layers.BatchNormalization))
    np.testing.assert_allclose(to_np(restored(x)), to_np(encoder(x)), atol=1e-5)


def test_weights_saved_with_keras_batch_norm_load_into_the_encoder(tmp_path):
    # Runs and presets saved before (plain Keras layers) must keep loading: weight paths
    # are built from class names, which the closed-form layer shares with Keras'.
    keras.utils.set_random_seed(3)
    old = build_image_encoder("tiny", image_size=(32, 16))
    for layer in old.backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.__class__ = keras.layers.BatchNormalization
    x = np.random.default_rng(4).random((2, 32, 16, 3)).astype("float32")
    old.save_weights(tmp_path / "old.weights.h5")
    new = build_image_encoder("tiny", image_size=(32, 16))
    new.load_weights(tmp_path / "old.weights.h5")
    np.testing.assert_allclose(to_np(new(x)), to_np(old(x)), atol=1e-5)


def test_freeze_batch_norm_keeps_statistics_and_affine_weights_through_training():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(5, 3, name="conv"),
                              keras.layers.BatchNormalization(name="bn"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)],
                             name="net")
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full(5, 0.3, "float32"))
    before = {w.path: to_np(w) for w in model.weights}
    assert freeze_batch_norm(model) == 1
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    rng = np.random.default_rng(0)
    model.train_on_batch(rng.normal(size=(8, 4, 4, 3)).astype("float32") + 2.0,
                         rng.normal(size=(8, 2)).astype("float32"))
    for w in model.weights:
        if "/bn/" in w.path:  # gamma, beta, moving mean and variance
            np.testing.assert_array_equal(to_np(w), before[w.path], err_msg=w.path)
        else:
            assert not np.allclose(to_np(w), before[w.path]), w.path
    # Frozen means inference mode: the loaded statistics normalise the training batch.
    x = rng.normal(size=(2, 4, 4, 5)).astype("float32")
    np.testing.assert_allclose(to_np(bn(x, training=True)), to_np(bn(x, training=False)))
