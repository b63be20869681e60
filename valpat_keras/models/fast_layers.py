"""Conv2D and MaxPooling2D with faster lowerings on the torch and JAX backends.

Both are the Keras layers (names, arguments, weights, config, outputs); only how some calls
are computed differs, where the backend's generic lowering was a measured cost in a
pretraining step (``benchmarks/profile_pretrain_step.py``):

- **torch.** Keras computes a channels-last convolution or pooling by copying the NHWC input
  to a contiguous NCHW tensor (and, for convolutions, once more into PyTorch's channels-last
  memory format), and autograd adds the copies' backward passes. An NHWC tensor already *is*
  an NCHW tensor in channels-last memory format (``permute`` is a view), which oneDNN's
  convolution and max-pooling kernels read natively, so the kernels get that view: no copies,
  and max pooling runs its channels-last kernel (about 10x faster forward on CPU).
- **torch, strided 1x1 convolutions** read every ``stride``-th pixel, so they run as a 1x1
  convolution at stride 1 of the subsampled input. oneDNN 3.12 (torch 2.13) computes the kernel
  gradient of a strided 1x1 convolution on channels-last data with its ``jit_1x1`` kernel,
  which on an AVX2 CPU is wrong when the layer has fewer than 8 input channels (a relative
  error of 0.2-0.7, varying between identical calls) and once hung; Keras' own torch
  convolution converts to channels-last and meets it too. The subsampled form never takes
  that kernel (``tests/models/test_fast_layers.py`` checks its gradients against NumPy) and
  was no slower at ResNet-50's shortcut shapes in an exploratory measurement.
- **JAX.** ``reduce_window`` max pooling differentiates through XLA's select-and-scatter,
  which XLA's CPU backend runs about 10x slower than the forward (60 ms for the stem's 3x3/2
  pool of 32 images at 128x64). Here the pool is the maximum of its ``pool_size`` strided
  slices, and its gradient routes each output's gradient to the first maximum of its window,
  exactly as select-and-scatter does, with ``where`` and strided ``pad`` (element-wise
  fusions).
- **JAX on the CPU, strided convolutions.** XLA differentiates a strided convolution's
  kernel as a convolution dilated by the stride, which XLA:CPU runs far slower than the
  forward (the stem's 7x7/2 convolution of 32 images at 128x64: 50 ms forward, about 290 ms
  more for the kernel gradient on a 2-core AMD EPYC). Here the forward and the input gradient
  are XLA's own; the kernel gradient is one matrix product of the layer's input patches
  (``kernel_h * kernel_w`` strided slices) with the output gradient, equal up to float
  rounding (``benchmarks/fast_layers.py``).

Cases outside these paths (dilation, groups, ``padding="same"`` with a stride and a kernel
larger than 1x1, channels-first data, TensorFlow) use Keras' implementation.
"""

from __future__ import annotations

import functools

import keras
from keras import ops

from valpat_keras.models.layer_classes import switch_layer_classes

#: Windows up to this many elements take the JAX path (window indices are stored as int8).
_MAX_JAX_WINDOW = 127


def _is_channels_last(layer: keras.layers.Layer, backend: str) -> bool:
    return keras.backend.backend() == backend and layer.data_format == "channels_last"


@keras.saving.register_keras_serializable(package="valpat_keras")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` with the torch and JAX paths of this module.

    On torch it hands PyTorch a channels-last view (strided 1x1 kernels: of the subsampled
    input); on JAX's CPU, strided valid convolutions get the patch-product kernel gradient.

    Same arguments, weights and outputs as the Keras layer. The class keeps Keras' name so
    that `.keras` files and weight files address its variables exactly as Keras' own.

    Example:

    ```python
    conv = Conv2D(64, 3, padding="same", use_bias=False)
    y = conv(x)  # x: (batch, height, width, channels)
    ```
    """

    def _is_plain(self) -> bool:
        """Undilated and ungrouped: the only convolutions the faster paths take."""
        return self.groups == 1 and all(d == 1 for d in self.dilation_rate)

    def _torch_padding(self) -> int | tuple[int, ...] | None:
        """PyTorch's symmetric padding equal to this layer's, or None where none is."""
        if not self._is_plain():
            return None
        if self.padding == "valid" or tuple(self.kernel_size) == (1, 1):
            return 0  # "same" pads nothing for a 1x1 kernel, at any stride
        if all(s == 1 for s in self.strides) and all(k % 2 == 1 for k in self.kernel_size):
            return tuple(k // 2 for k in self.kernel_size)  # "same" at stride 1, odd kernel
        return None

    def _jax_patch_gradient(self) -> bool:
        """Whether the kernel gradient takes the patch product (JAX on the CPU, strided)."""
        if not _is_channels_last(self, "jax") or self.padding != "valid" or not self._is_plain():
            return False
        import jax  # only reached under the JAX backend

        return any(s > 1 for s in self.strides) and jax.default_backend() == "cpu"

    def convolution_op(self, inputs, kernel):
        if self._jax_patch_gradient():
            # The variable as an array: custom_vjp takes arrays only.
            kernel = ops.cast(ops.convert_to_tensor(kernel), inputs.dtype)
            return _jax_strided_conv(inputs, kernel, tuple(self.strides))
        padding = self._torch_padding() if _is_channels_last(self, "torch") else None
        if padding is None:
            return super().convolution_op(inputs, kernel)
        from torch.nn import functional  # only reached under the torch backend

        strides = tuple(self.strides)
        if tuple(self.kernel_size) == (1, 1) and strides != (1, 1):
            # The same convolution on the pixels it reads. Not only faster: oneDNN's strided 1x1
            # kernel gradient on channels-last data (jit_1x1, torch 2.13 on AVX2) is wrong for
            # fewer than 8 input channels, and has hung (see the module docstring).
            inputs, strides = inputs[:, ::strides[0], ::strides[1], :], (1, 1)
        kernel = ops.cast(kernel, inputs.dtype)
        outputs = functional.conv2d(inputs.permute(0, 3, 1, 2), kernel.permute(3, 2, 0, 1),
                                    stride=strides, padding=padding)
        return outputs.permute(0, 2, 3, 1)


@keras.saving.register_keras_serializable(package="valpat_keras")
class MaxPooling2D(keras.layers.MaxPooling2D):
    """`keras.layers.MaxPooling2D` with the torch and JAX paths of this module.

    Same arguments and outputs (and gradients) as the Keras layer; ``padding="same"`` uses
    Keras' path.
    """

    def call(self, inputs):
        if self.padding == "valid" and _is_channels_last(self, "torch"):
            from torch.nn import functional  # only reached under the torch backend

            outputs = functional.max_pool2d(inputs.permute(0, 3, 1, 2), self.pool_size,
                                            self.strides)
            return outputs.permute(0, 2, 3, 1)
        if (self.padding == "valid" and _is_channels_last(self, "jax")
                and self.pool_size[0] * self.pool_size[1] <= _MAX_JAX_WINDOW):
            return _jax_max_pool(inputs, tuple(self.pool_size), tuple(self.strides))
        return super().call(inputs)


def _jax_windows(x, pool_size: tuple[int, int], strides: tuple[int, int]):
    """The strided slices of NHWC ``x``, one per window offset (row-major), valid padding."""
    from jax import lax

    (pool_h, pool_w), (stride_h, stride_w) = pool_size, strides
    out_h = (x.shape[1] - pool_h) // stride_h + 1
    out_w = (x.shape[2] - pool_w) // stride_w + 1
    for i in range(pool_h):
        for j in range(pool_w):
            yield lax.slice(
                x, (0, i, j, 0),
                (x.shape[0], i + stride_h * (out_h - 1) + 1, j + stride_w * (out_w - 1) + 1,
                 x.shape[3]),
                (1, stride_h, stride_w, 1))


def _jax_max_pool(x, pool_size: tuple[int, int], strides: tuple[int, int]):
    """Valid max pooling of NHWC ``x`` as slices and a first-maximum gradient (JAX)."""
    return _jax_max_pool_vjp()(x, pool_size, strides)


@functools.cache
def _jax_max_pool_vjp():
    """Builds the ``custom_vjp`` once, on first use (JAX is imported only on that backend)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    @functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
    def max_pool(x, pool_size, strides):
        outputs = None
        for window in _jax_windows(x, pool_size, strides):
            outputs = window if outputs is None else jnp.maximum(outputs, window)
        return outputs

    def forward(x, pool_size, strides):
        outputs, argmax = None, None
        for index, window in enumerate(_jax_windows(x, pool_size, strides)):
            if outputs is None:
                outputs, argmax = window, jnp.zeros(window.shape, jnp.int8)
                continue
            # Strictly greater: the first maximum in window order keeps the gradient, as in
            # XLA's select-and-scatter (and TensorFlow's and PyTorch's max pooling).
            larger = window > outputs
            outputs = jnp.where(larger, window, outputs)
            argmax = jnp.where(larger, jnp.int8(index), argmax)
        return outputs, (argmax, x.shape)

    def backward(pool_size, strides, residuals, upstream):
        argmax, shape = residuals
        (_, pool_w), (stride_h, stride_w) = pool_size, strides
        out_h, out_w = upstream.shape[1], upstream.shape[2]
        zero = jnp.zeros((), upstream.dtype)
        grad = None
        for index in range(pool_size[0] * pool_w):
            i, j = divmod(index, pool_w)
            routed = jnp.where(argmax == index, upstream, zero)
            # Interior padding puts output (h, w) back at input (i + h*stride_h, j + w*stride_w).
            placed = lax.pad(routed, zero, [
                (0, 0, 0),
                (i, shape[1] - i - stride_h * (out_h - 1) - 1, stride_h - 1),
                (j, shape[2] - j - stride_w * (out_w - 1) - 1, stride_w - 1),
                (0, 0, 0)])
            grad = placed if grad is None else grad + placed
        return (grad,)

    max_pool.defvjp(forward, backward)
    return max_pool


def _jax_conv(x, kernel, strides: tuple[int, int]):
    """Keras' JAX lowering of a valid, undilated NHWC convolution."""
    from jax import lax

    return lax.conv_general_dilated(x, kernel, strides, "VALID",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _jax_strided_conv(x, kernel, strides: tuple[int, int]):
    """A valid NHWC convolution whose kernel gradient is a patch product (JAX)."""
    return _jax_strided_conv_vjp()(x, kernel, strides)


@functools.cache
def _jax_strided_conv_vjp():
    """Builds the ``custom_vjp`` once, on first use (JAX is imported only on that backend)."""
    import jax
    import jax.numpy as jnp

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
    def conv(x, kernel, strides):
        return _jax_conv(x, kernel, strides)

    def forward(x, kernel, strides):
        return _jax_conv(x, kernel, strides), (x, kernel)

    def backward(strides, residuals, upstream):
        x, kernel = residuals
        kernel_h, kernel_w, channels, filters = kernel.shape
        # The input gradient is XLA's own (unused for images, so XLA drops it).
        _, input_vjp = jax.vjp(lambda inputs: _jax_conv(inputs, kernel, strides), x)
        (grad_x,) = input_vjp(upstream)
        # Patches in (row, column, channel) order, the kernel's own flattening.
        patches = jnp.concatenate(list(_jax_windows(x, (kernel_h, kernel_w), strides)), axis=-1)
        grad_kernel = jnp.dot(patches.reshape(-1, kernel_h * kernel_w * channels).T,
                              upstream.reshape(-1, filters).astype(patches.dtype))
        return grad_x, grad_kernel.reshape(kernel.shape).astype(kernel.dtype)

    conv.defvjp(forward, backward)
    return conv


_SWITCHES = {keras.layers.Conv2D: Conv2D, keras.layers.MaxPooling2D: MaxPooling2D}


def use_fast_layers(model: keras.Model) -> int:
    """Switches every plain Keras `Conv2D` and `MaxPooling2D` in ``model`` to the classes here.

    As `use_closed_form_batch_norm` (`switch_layer_classes`). On TensorFlow the classes are
    Keras' own.

    Args:
        model: A built Keras model (e.g. a keras-hub `ResNetBackbone`).

    Returns:
        The number of layers switched.
    """
    return switch_layer_classes(model, _SWITCHES)
