"""Switching the class of layers a model already built (keras-hub backbones' own layers).

keras-hub backbones create their layers inside their constructors, so the library's
drop-in layer classes (`batch_norm.BatchNormalization`, `fast_layers.Conv2D`, ...) reach
them by changing the class of those instances: names, weights and the backbone's config are
kept (the config rebuilds plain layers, switched again when the encoder is rebuilt).
"""

from __future__ import annotations

from collections.abc import Mapping

import keras


def switch_layer_classes(model: keras.Model, replacements: Mapping[type, type]) -> int:
    """Gives every layer of ``model`` whose exact class is a key the class it maps to.

    Args:
        model: A built Keras model.
        replacements: Exact layer class -> the class to give its instances (a subclass with
            the same weights and config, or back).

    Returns:
        The number of layers switched.
    """
    switched = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        replacement = replacements.get(type(layer))
        if replacement is not None:
            layer.__class__ = replacement
            switched += 1
    return switched
