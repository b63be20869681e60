"""Tiny VAL-PAT pretrainers and fixed batches shared by the pretrainer tests and workers."""

from __future__ import annotations

import numpy as np

IMAGE_SIZE = (64, 32)
BATCH = 8
VOCAB = 40
SEQ_LEN = 8
NUM_ATTRIBUTES = 5


def tiny_backbone():
    """A ValPatBackbone of the tiny configuration (64x32 images, 2-layer text encoder)."""
    from valpat_keras.models import ValPatBackbone, build_image_encoder, build_text_encoder

    return ValPatBackbone(build_image_encoder("tiny", image_size=IMAGE_SIZE),
                          build_text_encoder("tiny", vocabulary_size=VOCAB,
                                             sequence_length=SEQ_LEN),
                          embedding_dim=32)


def tiny_pretrainer(backbone=None, loss_weights=None, queue_size=16, momentum=0.9, **kwargs):
    """A ValPatPretrainer with small heads around ``backbone`` (a new tiny one if None)."""
    from valpat_keras.tasks.pretrainer import ValPatPretrainer

    return ValPatPretrainer(backbone or tiny_backbone(), num_attributes=NUM_ATTRIBUTES,
                            positive_ratios=[0.2, 0.5, 0.5, 0.1, 0.7], loss_weights=loss_weights,
                            ssl_dim=16, ssl_hidden_dim=32, queue_size=queue_size,
                            momentum=momentum, **kwargs)


def fixed_batches(num_batches: int, seed: int = 0) -> list[dict]:
    """Deterministic random dict batches in the layout of `pretrain_dataset`."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(num_batches):
        # Coarse per-image colour blocks plus a little noise: images that differ as much as
        # people do. Pure noise images give nearly equal pooled features, and BatchNorm over
        # such a batch amplifies float32 rounding differences between backends.
        blocks = rng.random((BATCH, 8, 4, 3))
        coarse = np.repeat(np.repeat(blocks, IMAGE_SIZE[0] // 8, axis=1), IMAGE_SIZE[1] // 4,
                           axis=2)
        view1 = (0.8 * coarse + 0.2 * rng.random(coarse.shape)).astype("float32")
        batches.append({
            "view1": view1,
            # The second view is a perturbed first view, so there is something to learn.
            "view2": np.clip(view1 + 0.05 * rng.normal(size=view1.shape), 0, 1).astype("float32"),
            "token_ids": np.concatenate(
                [np.full((BATCH, 1), 2), rng.integers(5, VOCAB, (BATCH, SEQ_LEN - 3)),
                 np.full((BATCH, 1), 3), np.zeros((BATCH, 1))], axis=1).astype("int32"),
            "attributes": rng.integers(-1, 2, (BATCH, NUM_ATTRIBUTES)).astype("float32"),
        })
    return batches


def as_dataset(batches: list[dict]):
    """A tf.data.Dataset yielding ``batches`` in order (x only)."""
    import tensorflow as tf

    stacked = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    return tf.data.Dataset.from_tensor_slices(stacked).batch(BATCH, drop_remainder=True)
