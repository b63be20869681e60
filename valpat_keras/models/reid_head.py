"""The BNNeck of "Bag of Tricks" re-identification (Luo et al. 2019).

A batch normalisation between the pooled feature and the identity classifier. The feature
before it feeds the triplet loss (metric space), the feature after it is both the
classifier's input and the retrieval embedding. As in BoT and Cluster Contrast the BN shift
(bias) is frozen at zero, so only the scale is learned.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="valpat_keras")
class BNNeck(keras.layers.Layer):
    """Batch normalisation without a learned shift, placed before the reID classifier.

    Equivalent to PyTorch ``BatchNorm1d`` with ``bias.requires_grad_(False)`` (BoT): the
    output is ``gamma * (x - mean) / sqrt(var + epsilon)``, with batch statistics in training
    and moving statistics at inference.

    Args:
        momentum: Moving-statistics momentum in Keras' convention (0.9 = PyTorch's 0.1).
        epsilon: Added to the variance.
        **kwargs: Standard `keras.layers.Layer` arguments.

    Example:

    ```python
    neck = BNNeck()
    embedding = neck(features, training=False)   # (B, D), the retrieval feature
    ```
    """

    def __init__(self, momentum: float = 0.9, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        # === Layers ===
        self.batch_norm = keras.layers.BatchNormalization(
            momentum=momentum, epsilon=epsilon, center=False, scale=True,
            dtype=self.dtype_policy, name="batch_norm")
        # === Config ===
        self.momentum = momentum
        self.epsilon = epsilon

    def build(self, input_shape):
        self.batch_norm.build(input_shape)
        self.built = True

    def call(self, features, training=None):
        return self.batch_norm(features, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "epsilon": self.epsilon})
        return config
