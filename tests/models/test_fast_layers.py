import contextlib

import keras
import numpy as np
import pytest
from keras.ops import convert_to_numpy as to_np

from valpat_keras.models import build_image_encoder
from valpat_keras.models.fast_layers import Conv2D, MaxPooling2D, use_fast_layers

pytestmark = pytest.mark.keras


def _one_sgd_step(conv_class, pool_class, x, y, conv_kwargs, pool_kwargs):
    """Weights after one SGD step (lr 1) of Conv -> ReLU -> MaxPool -> Conv -> Dense: the
    update is the gradient, and the first kernel's update passes through every layer."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(x.shape[1:]),
        conv_class(6, **conv_kwargs),
        keras.layers.ReLU(),
        pool_class(**pool_kwargs),
        conv_class(4, 3, padding="same"),
        keras.layers.Flatten(),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    outputs = to_np(model(x))
    model.train_on_batch(x, y)
    return outputs, [to_np(w) for w in model.weights]


def _correct_keras_kernels():
    """Under torch, the Keras reference runs PyTorch's native kernels: oneDNN's strided 1x1
    kernel gradient on channels-last data (which Keras' torch convolution uses) is wrong on
    AVX2 CPUs for few input channels, so the reference would be wrong (and vary) there."""
    if keras.backend.backend() != "torch":
        return contextlib.nullcontext()
    import torch

    return torch.backends.mkldnn.flags(enabled=False)


@pytest.mark.parametrize("conv_kwargs,pool_kwargs", [
    ({"kernel_size": 3, "padding": "same"}, {"pool_size": 3, "strides": 2}),  # the fast path
    ({"kernel_size": 1, "strides": 2, "use_bias": True}, {"pool_size": 2}),   # valid, stride 2
    ({"kernel_size": 3, "strides": 2}, {"pool_size": 2}),       # JAX: the patch gradient
    ({"kernel_size": (3, 2), "strides": (2, 1)}, {"pool_size": 2}),  # uneven kernel, stride
    ({"kernel_size": 3, "strides": 2, "padding": "same"},                     # Keras' path:
     {"pool_size": 2, "padding": "same"}),                                    # asymmetric pads
    ({"kernel_size": 3, "dilation_rate": 2, "padding": "same"}, {"pool_size": 2}),
    ({"kernel_size": 3, "padding": "same"}, {"pool_size": 2, "strides": 3}),  # gaps between
    ({"kernel_size": 3, "padding": "same"}, {"pool_size": (2, 3), "strides": 1}),  # overlaps
])
def test_layers_match_keras_outputs_and_gradients(conv_kwargs, pool_kwargs):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 12, 10, 3)).astype("float32")
    y = rng.normal(size=(4, 1)).astype("float32")
    with _correct_keras_kernels():
        expected_out, expected = _one_sgd_step(keras.layers.Conv2D, keras.layers.MaxPooling2D,
                                               x, y, conv_kwargs, pool_kwargs)
    got_out, got = _one_sgd_step(Conv2D, MaxPooling2D, x, y, conv_kwargs, pool_kwargs)
    np.testing.assert_allclose(got_out, expected_out, rtol=1e-5, atol=1e-5)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def _numpy_conv_gradients(x, kernel, strides, upstream):
    """Output, input and kernel gradients of a valid convolution (or of a 1x1 "same" one,
    which pads nothing), in float64 NumPy."""
    (kh, kw, _, _), (sh, sw), (oh, ow) = kernel.shape, strides, upstream.shape[1:3]
    outputs, d_x = np.zeros(upstream.shape), np.zeros(x.shape)
    d_kernel = np.zeros(kernel.shape)
    for a in range(kh):
        for b in range(kw):
            rows, cols = slice(a, a + (oh - 1) * sh + 1, sh), slice(b, b + (ow - 1) * sw + 1, sw)
            outputs += x[:, rows, cols, :] @ kernel[a, b]
            d_x[:, rows, cols, :] += upstream @ kernel[a, b].T
            d_kernel[a, b] = np.einsum("nhwi,nhwo->io", x[:, rows, cols, :], upstream)
    return outputs, d_x, d_kernel


@pytest.mark.parametrize("in_channels", [1, 3, 5, 64])
@pytest.mark.parametrize("kernel_size,strides,padding", [
    (1, 2, "valid"), (1, (2, 3), "same"), (3, 2, "valid"), (7, 2, "valid"),
])
def test_strided_convolution_gradients_equal_numpy(in_channels, kernel_size, strides, padding):
    # Uneven sizes leave rows and columns no window reads, the case oneDNN's 1x1 kernel
    # gradient got wrong on channels-last data.
    rng = np.random.default_rng(in_channels)
    x = rng.normal(size=(4, 12, 10, in_channels))
    conv = Conv2D(6, kernel_size, strides=strides, padding=padding, use_bias=False)
    conv.build(x.shape)
    kernel = to_np(conv.kernel).astype("float64")
    out_shape = conv.compute_output_shape(x.shape)
    upstream = rng.normal(size=out_shape)
    expected = _numpy_conv_gradients(x, kernel, conv.strides, upstream)
    got = _layer_gradients(conv, x.astype("float32"), upstream.astype("float32"))
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * np.abs(e).max())


def _layer_gradients(layer, x, upstream):
    """Output, input gradient and kernel gradient of sum(layer(x) * upstream)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def loss(kernel, inputs):
            outputs = layer.convolution_op(inputs, kernel)
            return (outputs * upstream).sum(), outputs

        (d_kernel, d_x), outputs = jax.grad(loss, argnums=(0, 1), has_aux=True)(
            layer.kernel.value, x)
        return to_np(outputs), to_np(d_x), to_np(d_kernel)
    if backend == "torch":
        import torch

        inputs = torch.tensor(x, requires_grad=True)
        outputs = layer(inputs)
        (outputs * torch.tensor(upstream)).sum().backward()
        return to_np(outputs), to_np(inputs.grad), to_np(layer.kernel.value.grad)
    import tensorflow as tf

    inputs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = layer(inputs)
        loss = tf.reduce_sum(outputs * upstream)
    d_x, d_kernel = tape.gradient(loss, [inputs, layer.kernel.value])
    return to_np(outputs), to_np(d_x), to_np(d_kernel)


def test_layers_keep_keras_names_and_round_trip():
    conv = Conv2D(8, 3, padding="same", name="c")
    pool = MaxPooling2D(3, strides=2, name="p")
    assert type(conv).__name__ == "Conv2D" and type(pool).__name__ == "MaxPooling2D"
    for layer in (conv, pool):
        restored = keras.layers.deserialize(keras.layers.serialize(layer))
        assert type(restored) is type(layer)
        assert restored.get_config() == layer.get_config()


def test_image_encoder_uses_the_layers_and_a_rebuilt_encoder_gives_the_same_features():
    encoder = build_image_encoder("tiny", image_size=(32, 16))
    layers = list(encoder.backbone._flatten_layers(include_self=False))
    convs = [layer for layer in layers if isinstance(layer, keras.layers.Conv2D)]
    pools = [layer for layer in layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert convs and all(type(layer) is Conv2D for layer in convs)
    assert pools and all(type(layer) is MaxPooling2D for layer in pools)
    assert use_fast_layers(encoder.backbone) == 0  # nothing plain left to switch
    x = np.random.default_rng(1).uniform(size=(2, 32, 16, 3)).astype("float32")
    restored = encoder.__class__.from_config(encoder.get_config())
    restored.set_weights(encoder.get_weights())
    np.testing.assert_allclose(to_np(restored(x)), to_np(encoder(x)), rtol=1e-5, atol=1e-5)


def test_each_backend_takes_its_path(monkeypatch):
    calls = []
    keras_conv, keras_pool = keras.layers.Conv2D.convolution_op, keras.layers.MaxPooling2D.call
    monkeypatch.setattr(keras.layers.Conv2D, "convolution_op",
                        lambda self, *a: calls.append("conv") or keras_conv(self, *a))
    monkeypatch.setattr(keras.layers.MaxPooling2D, "call",
                        lambda self, *a: calls.append("pool") or keras_pool(self, *a))
    x = np.ones((1, 14, 14, 3), "float32")
    Conv2D(2, 3, strides=2)(MaxPooling2D(3, strides=2)(Conv2D(4, 3, padding="same")(x)))
    # torch: every layer runs PyTorch's kernels; JAX: the pool is sliced, the strided
    # convolution has its patch gradient (on the CPU), the others are XLA's through Keras;
    # TensorFlow: all are Keras'.
    expected = {"torch": [], "jax": ["conv"]}.get(keras.backend.backend(),
                                                   ["conv", "pool", "conv"])
    assert calls == expected
