"""`GradientGate`: an identity layer that can stop the gradient (freezing without recompiling).

Registered as ``valpat_keras>GradientGate`` (it used to live in `valpat_keras.tasks.reid`,
which still re-exports it, so saved models load unchanged).
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["GradientGate"]


@keras.saving.register_keras_serializable(package="valpat_keras")
class GradientGate(keras.layers.Layer):
    """Identity in the forward pass; lets gradients through only while ``open`` is 1.

    Freezing by gating the gradient keeps the set of trainable variables fixed, so it can be
    switched between epochs without recompiling on any backend. The frozen side still
    updates its BatchNorm statistics (PyTorch's ``requires_grad_(False)`` behaves the same).
    """

    def build(self, input_shape):
        self.open = self.add_weight(shape=(), initializer="ones", trainable=False,
                                    name="open")
        self.built = True

    def call(self, inputs):
        gate = ops.cast(self.open.value, inputs.dtype)
        return gate * inputs + (1.0 - gate) * ops.stop_gradient(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape
