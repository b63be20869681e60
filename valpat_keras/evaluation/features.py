"""Feature extraction with any Keras embedding model (flip averaging, L2 normalisation).

Imports Keras and TensorFlow (through the image pipeline): `valpat_keras.evaluation` loads
this module on first use of `extract_features`, not at package import time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import keras
import numpy as np

from valpat_keras.data.pipelines import image_dataset
from valpat_keras.data.records import camids_of, pids_of
from valpat_keras.evaluation.distances import l2_normalize
from valpat_keras.models.embedding import predict_fixed_batches


@dataclasses.dataclass
class FeatureSet:
    """Embeddings of a list of images and their labels.

    Attributes:
        features: ``(N, D)`` float32 embeddings, in the order of the input.
        pids: ``(N,)`` int64 person ids, or ``None`` when plain paths were given.
        camids: ``(N,)`` int64 camera ids, or ``None`` when the records carry none.
        paths: The image paths.
    """

    features: np.ndarray
    pids: np.ndarray | None
    camids: np.ndarray | None
    paths: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def _load_images(paths: Sequence[str], image_size: tuple[int, int], batch_size: int):
    """Batches of float32 [0, 1] images in order (the shared tf.data image pipeline)."""
    dataset = image_dataset(list(paths), image_size, batch_size)
    return dataset.as_numpy_iterator() if hasattr(dataset, "as_numpy_iterator") else dataset


def _labels(records: Sequence) -> tuple[list[str], np.ndarray | None, np.ndarray | None]:
    if all(isinstance(r, str) for r in records):
        return list(records), None, None
    paths = [r.path for r in records]
    pids = pids_of(records) if all(hasattr(r, "pid") for r in records) else None
    camids = camids_of(records) if all(hasattr(r, "camid") for r in records) else None
    return paths, pids, camids


def extract_features(
    model: Callable,
    records_or_paths: Sequence,
    image_size: tuple[int, int] = (256, 128),
    batch_size: int = 64,
    flip: bool = True,
    normalize: bool = True,
    verbose: bool = True,
) -> FeatureSet:
    """Embeds images with a Keras model.

    Args:
        model: A Keras model (or callable) mapping float32 ``(B, H, W, 3)`` images in [0, 1]
            to ``(B, D)`` embeddings, e.g. ``task.embedding_model``. A Keras model runs
            through its compiled ``predict_on_batch``; another callable is called eagerly.
        records_or_paths: `ReIDRecord` / `TextRecord` objects or plain image paths.
        image_size: ``(height, width)`` the images are resized to.
        batch_size: Images per forward pass.
        flip: Average the embedding of each image with that of its horizontal mirror.
        normalize: L2-normalise the (averaged) embeddings.
        verbose: Show a progress bar.

    Returns:
        A `FeatureSet` in the order of ``records_or_paths``.

    Raises:
        ValueError: If no image is given or the model does not return ``(B, D)``.

    Example:
    >>> feats = extract_features(task.embedding_model, dataset.query, (256, 128))  # doctest: +SKIP
    """
    paths, pids, camids = _labels(records_or_paths)
    if not paths:
        raise ValueError("extract_features got no images")

    compiled = isinstance(model, keras.Model)

    def embed(batch: np.ndarray) -> np.ndarray:
        if compiled:
            # The compiled predict step is many times faster than eager calls (eager JAX
            # compiles every op separately); padding short batches to the batch size keeps
            # one compiled shape, traced once per model (`predict_fixed_batches`).
            out = predict_fixed_batches(model, [batch], batch_size)
        else:
            out = keras.ops.convert_to_numpy(model(batch, training=False))
        if out.ndim != 2:
            raise ValueError(f"the model must return (batch, dim) embeddings, got {out.shape}")
        return out.astype(np.float32)

    progbar = keras.utils.Progbar(len(paths), unit_name="image") if verbose else None
    chunks = []
    for batch in _load_images(paths, image_size, batch_size):
        batch = np.asarray(batch, dtype=np.float32)
        feats = embed(batch)
        if flip:
            # Mirrored crops are equally valid views of the person: average both embeddings.
            feats = (feats + embed(batch[:, :, ::-1, :].copy())) / 2
        chunks.append(feats)
        if progbar is not None:
            progbar.add(len(batch))
    features = np.concatenate(chunks, axis=0)
    if features.shape[0] != len(paths):
        raise ValueError(f"the image pipeline returned {features.shape[0]} images for "
                         f"{len(paths)} paths")
    if normalize:
        features = l2_normalize(features)
    return FeatureSet(features=features, pids=pids, camids=camids, paths=paths)
