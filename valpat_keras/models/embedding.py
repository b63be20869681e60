"""Batched image and caption embedders shared by every task, the CLI and the demo.

`encode_images` and `encode_captions` run a `ValPatBackbone`'s two towers through compiled
``predict`` calls (jit on JAX, a tf.function on TensorFlow) instead of op by op, and return
L2-normalised NumPy embeddings.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence

import keras
import numpy as np

from valpat_keras.data.pipelines import caption_dataset, image_dataset
from valpat_keras.evaluation.distances import l2_normalize

#: Per backbone, its image and caption embedding models (see `backbone_embedders`).
_EMBEDDERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def backbone_embedders(backbone) -> tuple[keras.Model, keras.Model]:
    """Image and caption embedding models sharing the backbone's layers (built once each)."""
    if backbone not in _EMBEDDERS:
        images = keras.Input(shape=tuple(backbone.image_encoder.image_shape), name="images")
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        _EMBEDDERS[backbone] = (
            keras.Model(images, backbone.get_image_embeddings(images), name="image_embedder"),
            keras.Model(token_ids, backbone.get_text_embeddings(token_ids),
                        name="text_embedder"))
    return _EMBEDDERS[backbone]


def _is_path_list(items) -> bool:
    return isinstance(items, (list, tuple)) and isinstance(items[0], (str, os.PathLike))


def encode_images(backbone, images_or_paths, image_size: tuple[int, int] | None = None,
                  batch_size: int = 64) -> np.ndarray:
    """L2-normalised image embeddings ``(N, D)`` of image files or an image array.

    Args:
        backbone: A `ValPatBackbone`.
        images_or_paths: Image paths (decoded by `valpat_keras.data.pipelines.image_dataset`)
            or float32 images in [0, 1] ``(N, H, W, 3)``.
        image_size: ``(H, W)`` to decode paths to (default: the image encoder's input size).
        batch_size: Images per forward pass.
    """
    if len(images_or_paths) == 0:
        return np.zeros((0, backbone.embedding_dim), np.float32)
    embedder = backbone_embedders(backbone)[0]
    if _is_path_list(images_or_paths):
        size = tuple(image_size or backbone.image_encoder.image_shape[:2])
        embeddings = embedder.predict(
            image_dataset([str(p) for p in images_or_paths], size, batch_size), verbose=0)
    else:
        embeddings = embedder.predict(np.asarray(images_or_paths, dtype="float32"),
                                      batch_size=batch_size, verbose=0)
    return l2_normalize(np.asarray(embeddings, dtype=np.float32))


def encode_captions(backbone, tokenizer, captions: Sequence[str],
                    batch_size: int = 64) -> np.ndarray:
    """L2-normalised caption embeddings ``(N, D)``.

    Args:
        backbone: A `ValPatBackbone`.
        tokenizer: Its `CaptionTokenizer`.
        captions: The sentences.
        batch_size: Captions per forward pass.
    """
    if not len(captions):
        return np.zeros((0, backbone.embedding_dim), np.float32)
    embeddings = backbone_embedders(backbone)[1].predict(
        caption_dataset(list(captions), tokenizer, batch_size), verbose=0)
    return l2_normalize(np.asarray(embeddings, dtype=np.float32))
