"""Pieces of a keras-hub `ResNetBackbone`: block outputs and the sub-networks between them.

Re-ID heads that reach inside the backbone (MGN's branches after stage 3, AGW's non-local
blocks between residual blocks) cut the functional graph of the backbone at residual block
outputs (``stack{S}_block{B}_out``). A segment is a `keras.Model` sharing the backbone's
layers, so it trains the backbone's own weights.
"""

from __future__ import annotations

import keras
import keras_hub

from valpat_keras.errors import InputError


def require_resnet(encoder, head: str) -> keras_hub.models.ResNetBackbone:
    """The `ResNetBackbone` inside an `ImageEncoder`, or an `InputError` naming ``head``."""
    backbone = getattr(encoder, "backbone", None)
    if not isinstance(backbone, keras_hub.models.ResNetBackbone):
        raise InputError(f"The {head} re-ID head needs a ResNet image encoder (a keras-hub "
                         f"ResNetBackbone inside it), got {type(backbone).__name__}; use "
                         "--head bot for ViT encoders")
    if len(backbone.stackwise_num_blocks) < 2:
        raise InputError(f"The {head} re-ID head needs a ResNet with two stages at least, got "
                         f"stackwise_num_blocks={backbone.stackwise_num_blocks}")
    return backbone


def block_output(backbone: keras.Model, stack: int, block: int):
    """The symbolic output of residual block ``block`` of stack ``stack`` (0-based)."""
    return backbone.get_layer(f"stack{stack}_block{block}_out").output


def resnet_segment(backbone: keras.Model, start=None, end=None, name: str | None = None):
    """The sub-network of ``backbone`` from tensor ``start`` to tensor ``end``.

    Args:
        backbone: A functional keras-hub backbone.
        start: A symbolic tensor of the backbone (e.g. `block_output`); None: its input.
        end: A symbolic tensor after ``start``; None: the backbone's output.
        name: Model name.

    Returns:
        A `keras.Model` calling the backbone's own layers (shared weights).
    """
    start = backbone.input if start is None else start
    end = backbone.output if end is None else end
    return keras.Model(start, end, name=name)


def copy_layer_weights(source: keras.Model, target: keras.Model) -> None:
    """Copies the weights of the layers of ``target`` from the same-named layers of ``source``.

    Through NumPy: assigning one variable to another shares the buffer on JAX.
    """
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())
