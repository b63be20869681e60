"""Batched image and caption embedders shared by every task, the CLI and the demo.

`encode_images` and `encode_captions` run a `ValPatBackbone`'s two towers through compiled
``predict`` calls (jit on JAX, a tf.function on TensorFlow) instead of op by op, and return
L2-normalised NumPy embeddings.

Every call goes through `predict_fixed_batches`: one embedder model per backbone (cached),
every batch zero-padded to the batch size and the padding sliced off, so a model's compiled
predict step is traced once and reused by every later call, whatever the number of images.
(Keras' own ``predict`` traces again for the short last batch, and a tf.function traced for
many sizes, or many sub-models built per call, is what TensorFlow reports as "calls ...
triggered tf.function retracing".)
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable, Sequence

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


def _batches_of(inputs, batch_size: int) -> Iterable[np.ndarray]:
    """NumPy batches of an array (split), a tf.data dataset or an iterable of batches."""
    if isinstance(inputs, np.ndarray):
        return (inputs[i:i + batch_size] for i in range(0, len(inputs), batch_size))
    if hasattr(inputs, "as_numpy_iterator"):
        return inputs.as_numpy_iterator()
    return inputs


def predict_fixed_batches(model: keras.Model, inputs, batch_size: int) -> np.ndarray:
    """``model``'s outputs on ``inputs``, every batch run at exactly ``batch_size`` rows.

    Short batches (the last one) are zero-padded and the padding rows dropped from the
    output: inference-mode layers treat rows independently, so the kept rows are unchanged,
    and the compiled ``predict_on_batch`` step sees one input shape, so it is traced once
    per model and reused on every call.

    Args:
        model: A Keras model with one input and one output.
        inputs: An array ``(N, ...)``, a tf.data dataset of batches, or an iterable of
            NumPy batches (larger ones are run in ``batch_size`` chunks; of an ``(x, y)``
            tuple only ``x`` is read, as by ``predict``).
        batch_size: Rows per compiled call.

    Returns:
        The outputs ``(N, ...)`` as a NumPy array, in input order.

    Raises:
        ValueError: No batch at all.
    """
    outputs = []
    for batch in _batches_of(inputs, batch_size):
        if isinstance(batch, tuple):  # (x, y) or (x, y, weights): Keras' predict reads x
            batch = batch[0]
        batch = np.asarray(batch)
        for start in range(0, max(len(batch), 1), batch_size):  # larger batches: in chunks
            chunk = batch[start:start + batch_size]
            count = chunk.shape[0]
            if count < batch_size:
                padding = np.zeros((batch_size - count, *chunk.shape[1:]), chunk.dtype)
                chunk = np.concatenate([chunk, padding])
            outputs.append(np.asarray(model.predict_on_batch(chunk))[:count])
    if not outputs:
        raise ValueError("predict_fixed_batches got no batch")
    return np.concatenate(outputs, axis=0)


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
        embeddings = predict_fixed_batches(
            embedder, image_dataset([str(p) for p in images_or_paths], size, batch_size),
            batch_size)
    else:
        embeddings = predict_fixed_batches(
            embedder, np.asarray(images_or_paths, dtype="float32"), batch_size)
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
    embeddings = predict_fixed_batches(
        backbone_embedders(backbone)[1], caption_dataset(list(captions), tokenizer, batch_size),
        batch_size)
    return l2_normalize(np.asarray(embeddings, dtype=np.float32))
