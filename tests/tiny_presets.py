"""Tiny random keras-hub presets written to a folder: the stand-ins of real preset names.

Tests load them through the same ``from_preset`` calls a user's preset name takes
(``bert_base_en_uncased``, ``resnet_50_imagenet``); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import keras_hub

#: A BERT-style vocabulary: [PAD] first, [UNK] / [CLS] / [SEP] / [MASK] not at SynthPed's
#: ids (as in BERT, where they are 100..103), words of pedestrian captions and a few that
#: SynthPed captions never use ("umbrella", "skateboard", "suitcase").
TINY_BERT_VOCABULARY = [
    "[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "a", "an", "the", "man", "woman", "person", "with", "in", "and", "wears", "carries",
    "has", "on", "his", "her", "he", "she", "red", "blue", "black", "white", "green",
    "grey", "yellow", "coat", "shirt", "top", "trousers", "shorts", "skirt", "shoes",
    "backpack", "bag", "hat", "glasses", "umbrella", "skateboard", "suitcase", "walking",
    "back", "long", "short", ".", ",", "##s", "##ed", "##ing",
]

#: Words of `TINY_BERT_VOCABULARY` that no SynthPed caption uses.
WORDS_ABSENT_FROM_SYNTHPED = ("umbrella", "skateboard", "suitcase")


def save_tiny_bert_preset(folder: str | Path, max_sequence_length: int = 32) -> Path:
    """A random 1-layer `BertBackbone` (hidden 16) + lower-casing `BertTokenizer` preset."""
    folder = Path(folder)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=TINY_BERT_VOCABULARY,
                                               lowercase=True)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(TINY_BERT_VOCABULARY), num_layers=1, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=max_sequence_length)
    backbone.save_to_preset(str(folder))
    tokenizer.save_to_preset(str(folder))
    return folder


def save_tiny_resnet_preset(folder: str | Path, image_converter: bool = True) -> Path:
    """A random basic-block `ResNetBackbone` (64/128 filters) with an ImageNet-style
    `ResNetImageConverter` (keras-hub's scale/offset on [0, 255] pixels) when asked."""
    folder = Path(folder)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 128],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(None, None, 3))
    backbone.save_to_preset(str(folder))
    if image_converter:
        std = (0.229, 0.224, 0.225)
        mean = (0.485, 0.456, 0.406)
        converter = keras_hub.layers.ResNetImageConverter(
            image_size=(64, 32), scale=[1.0 / (255.0 * s) for s in std],
            offset=[-m / s for m, s in zip(mean, std)])
        converter.save_to_preset(str(folder))
    return folder


def save_tiny_vit_preset(folder: str | Path, image_size: int = 32) -> Path:
    """A random 1-layer `ViTBackbone` (patch 8, hidden 16) with a [-1, 1] image converter."""
    folder = Path(folder)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(image_size, image_size, 3), patch_size=8, num_layers=1, num_heads=2,
        hidden_dim=16, mlp_dim=32)
    backbone.save_to_preset(str(folder))
    keras_hub.layers.ViTImageConverter(image_size=(image_size, image_size), scale=1 / 127.5,
                                       offset=-1.0).save_to_preset(str(folder))
    return folder
