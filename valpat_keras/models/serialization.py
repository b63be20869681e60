"""Rebuilding models whose config nests other Keras objects (encoders inside backbones)."""

from __future__ import annotations

import keras


def deserialize_nested(config: dict, keys, custom_objects=None) -> dict:
    """A copy of ``config`` with ``keys`` deserialised and ``dtype`` made a policy again.

    For ``from_config`` of models whose constructor takes sub-models
    (``cls(**deserialize_nested(config, ("backbone",), custom_objects))``).

    Args:
        config: The ``get_config()`` dict.
        keys: The entries holding serialised layers or models.
        custom_objects: Passed to `keras.layers.deserialize`.
    """
    config = dict(config)
    if isinstance(config.get("dtype"), dict):
        config["dtype"] = keras.dtype_policies.get(config["dtype"])
    for key in keys:
        config[key] = keras.layers.deserialize(config[key], custom_objects=custom_objects)
    return config
