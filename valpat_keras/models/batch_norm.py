"""Batch normalisation whose training-mode gradient is the closed-form BN backward pass.

`keras.layers.BatchNormalization` differentiates its training-mode forward (moments, then
normalise) op by op. On the TensorFlow CPU backend that backward pass is a chain of a dozen
element-wise ops and reductions over every activation, one kernel each (no fusion outside
XLA), and it was the largest cost after the convolutions in a pretraining step (see
benchmarks/pretrain_speed.py). The gradient has a short closed form,

    dx = gamma / sigma * (dy - mean(dy) - x_hat * mean(dy * x_hat)),

which `BatchNormalization` here supplies through `keras.ops.custom_gradient` on TensorFlow
and JAX. PyTorch has that backward pass as one native kernel, which the torch backend's
generic ops (a dozen eager element-wise calls, each a Python round trip) cannot match, so under
the torch backend the layer calls ``torch.nn.functional.batch_norm`` instead (measured in
benchmarks/profile_pretrain_step.py). Forward values, moving statistics, config and weights
are those of the Keras layer on every backend.
"""

from __future__ import annotations

import keras
from keras import ops

from valpat_keras.models.layer_classes import switch_layer_classes


def _normalize_with_closed_form_gradient(x, mean, inv_std, gamma, beta, axes):
    """``(x - mean) * inv_std * gamma + beta`` with the BN gradient through the batch moments.

    ``mean`` and ``inv_std`` are the batch statistics of ``x`` (computed from a stopped
    copy); the gradient returned for ``x`` accounts for their dependence on ``x``, so they
    receive zero gradient themselves. Per-channel arguments are broadcastable to ``x``;
    ``axes`` are the reduction (non-channel) axes.
    """

    @ops.custom_gradient
    def forward(x, mean, inv_std, gamma, beta):
        scale = gamma * inv_std
        # The same expression as ops.batch_normalization: x * scale + (beta - mean * scale).
        outputs = x * scale + (beta - mean * scale)

        def grad(*args, upstream=None):
            # TF and JAX call grad(upstream); torch calls grad(*inputs, upstream=...).
            if upstream is None:
                (upstream,) = args
            dy = upstream
            count = 1
            for axis in axes:
                count = count * ops.shape(dy)[axis]
            count = ops.cast(count, dy.dtype)
            dbeta = ops.sum(dy, axis=axes, keepdims=True)
            # sum(dy * x_hat) without materialising x_hat: inv_std * (sum(dy * x) - mean * sum(dy)).
            dgamma = (ops.sum(dy * x, axis=axes, keepdims=True) - mean * dbeta) * inv_std
            # dx = a * dy - k * (x - mean) - a * dbeta / n, with per-channel a and k.
            a = scale
            k = a * inv_std * dgamma / count
            dx = a * dy - k * x + (k * mean - a * dbeta / count)
            return (dx, ops.zeros_like(mean), ops.zeros_like(inv_std), dgamma, dbeta)

        return outputs, grad

    return forward(x, mean, inv_std, gamma, beta)


@keras.saving.register_keras_serializable(package="valpat_keras")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with a closed-form training-mode gradient.

    Same arguments, weights, forward values and moving-statistics updates as the Keras
    layer; only the backward pass of a training-mode call differs in how it is computed
    (one expression instead of the autodiff of the moments), which makes ResNet training
    steps faster where the backend does not fuse element-wise ops (TensorFlow on CPU).
    Calls with a mask, ``renorm`` or ``synchronized`` use the Keras implementation.

    The class keeps Keras' name on purpose: `.keras` files and ``.weights.h5`` address a
    model's layers by class name, so weights saved with plain Keras BatchNormalization
    layers (keras-hub presets, earlier runs) load into it and the other way round.

    Example:

    ```python
    bn = BatchNormalization(momentum=0.9, epsilon=1e-5)
    y = bn(x, training=True)
    ```
    """

    def call(self, inputs, training=None, mask=None):
        if (not (training and self.trainable) or mask is not None or self.renorm
                or self.synchronized):
            return super().call(inputs, training=training, mask=mask)
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        ndim = len(x.shape)
        axis = self.axis % ndim
        if keras.backend.backend() == "torch":
            return ops.cast(self._torch_native_call(x, axis), self.compute_dtype)
        reduction_axes = tuple(i for i in range(ndim) if i != axis)
        # Per-channel tensors broadcast against x in any channel position.
        channel_shape = [1] * ndim
        channel_shape[axis] = x.shape[axis]
        mean, variance = ops.moments(ops.stop_gradient(x), axes=reduction_axes)
        self.moving_mean.assign(
            ops.cast(self.moving_mean, x.dtype) * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            ops.cast(self.moving_variance, x.dtype) * self.momentum
            + variance * (1.0 - self.momentum))
        inv_std = ops.rsqrt(variance + self.epsilon)
        ones = ops.ones((x.shape[axis],), x.dtype)
        gamma = ops.cast(self.gamma.value, x.dtype) if self.scale else ones
        beta = ops.cast(self.beta.value, x.dtype) if self.center else ones * 0.0
        outputs = _normalize_with_closed_form_gradient(
            x, *(ops.reshape(t, channel_shape) for t in (mean, inv_std, gamma, beta)),
            axes=reduction_axes)
        return ops.cast(outputs, self.compute_dtype)

    def _torch_native_call(self, x, axis: int):
        """The training-mode call through PyTorch's fused batch-norm kernel (torch backend).

        ``F.batch_norm`` wants channels on dim 1: a channels-last input is viewed as NCHW
        without a copy (the kernel reads that memory layout natively). Its running buffers
        here are scratch tensors with momentum 1, so they come back as the batch mean and
        *unbiased* variance; the Keras moving statistics are then updated from the biased
        variance, exactly as `keras.layers.BatchNormalization` does.
        """
        import torch  # only reached under the torch backend
        from torch.nn import functional

        channels = x.shape[axis]
        count = x.numel() // channels
        batch_mean = torch.zeros(channels, dtype=x.dtype, device=x.device)
        batch_var = torch.ones(channels, dtype=x.dtype, device=x.device)
        ones = torch.ones(channels, dtype=x.dtype, device=x.device)
        gamma = self.gamma.value.to(x.dtype) if self.scale else ones
        beta = self.beta.value.to(x.dtype) if self.center else ones * 0.0
        outputs = functional.batch_norm(torch.movedim(x, axis, 1), batch_mean, batch_var,
                                        gamma, beta, training=True, momentum=1.0,
                                        eps=self.epsilon)
        variance = batch_var * ((count - 1) / count)
        self.moving_mean.assign(
            ops.cast(self.moving_mean, x.dtype) * self.momentum
            + batch_mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            ops.cast(self.moving_variance, x.dtype) * self.momentum
            + variance * (1.0 - self.momentum))
        return torch.movedim(outputs, 1, axis)


def use_closed_form_batch_norm(model: keras.Model) -> int:
    """Switches every plain `keras.layers.BatchNormalization` in ``model`` to the closed form.

    keras-hub backbones create their BatchNormalization layers inside their constructors;
    changing the class of those instances keeps their names, weights and the backbone's
    config (which rebuilds plain layers, switched again when the encoder is rebuilt).

    Args:
        model: A built Keras model (e.g. a keras-hub `ResNetBackbone`).

    Returns:
        The number of layers switched.
    """
    return switch_layer_classes(model, {keras.layers.BatchNormalization: BatchNormalization})


def freeze_batch_norm(model: keras.Model) -> int:
    """Freezes every batch normalisation layer of ``model``: statistics and affine weights.

    A frozen Keras BatchNormalization runs in inference mode, so it normalises with the
    moving statistics it was loaded with rather than those of each training batch. For a
    pretrained backbone fine-tuned with small batches on a small labelled set this keeps the
    statistics pretraining estimated over many more images (detectors freeze backbone BN
    for the same reason). A randomly initialised backbone has no statistics worth keeping:
    do not freeze it.

    Args:
        model: A built Keras model (e.g. an `ImageEncoder`). Call before ``compile``.

    Returns:
        The number of layers frozen.
    """
    frozen = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            frozen += 1
    return frozen
