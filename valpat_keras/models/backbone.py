"""The VAL-PAT backbone: image and text encoders projected into one embedding space."""

from __future__ import annotations

import math

import keras
import keras_hub
from keras import ops

from valpat_keras.losses.normalization import l2_normalize
from valpat_keras.models.serialization import deserialize_nested


@keras.saving.register_keras_serializable(package="valpat_keras")
class LogitScale(keras.layers.Layer):
    """A learnable log-temperature for image-text contrastive logits (CLIP).

    Holds ``log_scale``; `scale()` returns ``exp(min(log_scale, max_log_scale))`` in float32,
    the clip keeping training stable (CLIP clips at ln 100). Calling the layer passes its
    input through unchanged, which wires the weight into a functional model.

    Args:
        init: float. Initial log scale. Defaults to ``ln(1 / 0.07)`` (CLIP).
        max_log_scale: float. Upper clip. Defaults to ``ln(100)``.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(self, init: float = math.log(1 / 0.07), max_log_scale: float = math.log(100.0),
                 **kwargs):
        super().__init__(**kwargs)
        self.init = float(init)
        self.max_log_scale = float(max_log_scale)

    def build(self, input_shape=None):
        self.log_scale = self.add_weight(
            name="log_scale", shape=(), initializer=keras.initializers.Constant(self.init),
            trainable=True, dtype="float32")

    def scale(self):
        """The clipped, exponentiated scale (float32 scalar tensor)."""
        return ops.exp(ops.minimum(ops.convert_to_tensor(self.log_scale), self.max_log_scale))

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"init": self.init, "max_log_scale": self.max_log_scale})
        return config


@keras.saving.register_keras_serializable(package="valpat_keras")
class L2Normalize(keras.layers.Layer):
    """L2-normalises the last axis (in float32, returned in float32)."""

    def call(self, inputs):
        return l2_normalize(inputs, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="valpat_keras")
class ValPatBackbone(keras_hub.models.Backbone):
    """VAL-PAT backbone: image and caption encoders with linear maps to a shared space.

    Like keras-hub's `CLIPBackbone`: an `ImageEncoder` and a `TextEncoder`, linear
    ``image_projection`` / ``text_projection`` to ``embedding_dim`` and a learnable
    ``logit_scale`` (see `LogitScale`). Inputs ``{"images", "token_ids"}``; outputs
    ``{"image_embedding", "text_embedding"}``, both L2-normalised float32 (B, embedding_dim).
    The pretraining task adds the momentum encoder, the heads and the losses on top; the
    transfer tasks use ``backbone.image_encoder`` (and the text side for search).

    Args:
        image_encoder: valpat_keras.models.ImageEncoder.
        text_encoder: valpat_keras.models.TextEncoder.
        embedding_dim: int. Shared embedding width. Defaults to ``256``.
        logit_scale_init: float. Initial log logit scale. Defaults to ``ln(1/0.07)``.
        max_logit_scale: float. Clip of the log logit scale. Defaults to ``ln(100)``.
        dtype: str | keras.DTypePolicy | None. Compute dtype policy.
        **kwargs: Standard `keras.Model` arguments (e.g. ``name``).

    Example:

    ```python
    backbone = ValPatBackbone(
        build_image_encoder("tiny", image_size=(64, 32)),
        build_text_encoder("tiny", vocabulary_size=500, sequence_length=16),
        embedding_dim=128)
    out = backbone({"images": np.random.rand(2, 64, 32, 3).astype("float32"),
                    "token_ids": np.array([[2, 7, 3, 0]] * 2, "int32")})
    backbone.save_to_preset("/tmp/valpat")
    backbone = ValPatBackbone.from_preset("/tmp/valpat")
    ```
    """

    def __init__(self, image_encoder, text_encoder, embedding_dim: int = 256,
                 logit_scale_init: float = math.log(1 / 0.07),
                 max_logit_scale: float = math.log(100.0), dtype=None, **kwargs):
        # === Layers ===
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_projection = keras.layers.Dense(
            embedding_dim, use_bias=False, dtype=dtype, name="image_projection")
        self.text_projection = keras.layers.Dense(
            embedding_dim, use_bias=False, dtype=dtype, name="text_projection")
        self.image_l2 = L2Normalize(dtype=dtype, name="image_l2_normalize")
        self.text_l2 = L2Normalize(dtype=dtype, name="text_l2_normalize")
        self.logit_scale_layer = LogitScale(
            init=logit_scale_init, max_log_scale=max_logit_scale, dtype=dtype,
            name="logit_scale")

        # === Functional Model ===
        images = keras.Input(shape=tuple(image_encoder.image_shape), name="images")
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        image_embedding = self.get_image_embeddings(images)
        text_embedding = self.logit_scale_layer(self.get_text_embeddings(token_ids))
        super().__init__(
            inputs={"images": images, "token_ids": token_ids},
            outputs={"image_embedding": image_embedding, "text_embedding": text_embedding},
            dtype=dtype, **kwargs)

        # === Config ===
        self.embedding_dim = int(embedding_dim)
        self.logit_scale_init = float(logit_scale_init)
        self.max_logit_scale = float(max_logit_scale)

    @property
    def logit_scale(self):
        """The CLIP logit scale ``exp(clip(log_scale))`` (float32 scalar tensor)."""
        return self.logit_scale_layer.scale()

    def get_image_features(self, images, training=None):
        """Pooled image-encoder features before projection, (B, feature_dim)."""
        return self.image_encoder(images, training=training)

    def get_image_embeddings(self, images, training=None):
        """L2-normalised image embeddings (B, embedding_dim) for images in [0, 1]."""
        features = self.image_encoder(images, training=training)
        return self.image_l2(self.image_projection(features))

    def get_text_embeddings(self, token_ids, training=None):
        """L2-normalised caption embeddings (B, embedding_dim) for int32 token ids."""
        features = self.text_encoder(token_ids, training=training)
        return self.text_l2(self.text_projection(features))

    def get_config(self):
        config = super().get_config()
        config.update({
            "image_encoder": keras.layers.serialize(self.image_encoder),
            "text_encoder": keras.layers.serialize(self.text_encoder),
            "embedding_dim": self.embedding_dim,
            "logit_scale_init": self.logit_scale_init,
            "max_logit_scale": self.max_logit_scale,
        })
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**deserialize_nested(config, ("image_encoder", "text_encoder"),
                                        custom_objects))
