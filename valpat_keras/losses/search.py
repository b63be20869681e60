"""Losses for text-based person search.

`sdm_loss` is IRRA's similarity-distribution matching (Jiang & Ye, CVPR 2023): the softmax of
scaled image-text cosine similarities is pulled towards the distribution that spreads the
probability evenly over every pair of the same identity, by a KL divergence in both directions.
Unlike plain image-text InfoNCE, other captions/images of the same person in the batch count
as matches instead of negatives.
"""

from __future__ import annotations

import keras
from keras import ops

from valpat_keras.losses.normalization import l2_normalize


def sdm_loss(image_emb, text_emb, pids, logit_scale, epsilon: float = 1e-8):
    """Similarity-distribution matching loss (IRRA), image-to-text plus text-to-image.

    For a batch of B image-caption pairs with person ids ``pids``, the true matching
    distribution of row i is ``q_ij = [pid_i == pid_j] / #{k: pid_k == pid_i}``; the predicted
    one is ``p_i = softmax(logit_scale * cos(x_i, y_.))``. The loss is
    ``mean_i KL(p_i || q_i)`` for image-to-text rows plus the same for text-to-image rows, with
    ``log(q + epsilon)`` so that non-matching pairs are pushed towards zero probability.

    Args:
        image_emb: ``(B, D)`` image embeddings (normalised here; need not be unit length).
        text_emb: ``(B, D)`` text embeddings of the captions paired with the images.
        pids: ``(B,)`` or ``(B, 1)`` integer person ids of the pairs.
        logit_scale: The multiplicative scale of the cosine similarities, i.e. the inverse
            temperature (already exponentiated: e.g. ``50.0`` for a temperature of 0.02),
            a scalar tensor or float.
        epsilon: Added to the true distribution before the log. Defaults to ``1e-8`` as in IRRA.

    Returns:
        A scalar float32 tensor: the sum of both directions' mean KL divergences.

    Example:

    ```python
    import numpy as np
    loss = sdm_loss(np.random.randn(4, 8), np.random.randn(4, 8), np.array([0, 0, 1, 2]), 50.0)
    ```
    """
    # Losses run in float32 even when the model computes in a mixed-precision dtype
    # (`l2_normalize` casts).
    image = l2_normalize(image_emb)
    text = l2_normalize(text_emb)
    pids = ops.reshape(ops.convert_to_tensor(pids), (-1,))
    labels = ops.cast(ops.equal(pids[:, None], pids[None, :]), "float32")
    labels = labels / ops.sum(labels, axis=1, keepdims=True)
    log_target = ops.log(labels + epsilon)
    scale = ops.cast(logit_scale, "float32")
    i2t_logits = scale * ops.matmul(image, ops.transpose(text))
    t2i_logits = ops.transpose(i2t_logits)

    def direction(logits):
        log_pred = ops.log_softmax(logits, axis=1)
        return ops.mean(ops.sum(ops.exp(log_pred) * (log_pred - log_target), axis=1))

    return direction(i2t_logits) + direction(t2i_logits)


def identity_loss(image_logits, text_logits, pids):
    """IRRA's optional ID loss: softmax cross entropy of both modalities over training ids.

    Args:
        image_logits: ``(B, C)`` identity logits of the images.
        text_logits: ``(B, C)`` identity logits of the captions (same shared classifier).
        pids: ``(B,)`` integer training person ids in ``[0, C)``.

    Returns:
        A scalar float32 tensor: the mean of the two cross entropies.
    """
    pids = ops.reshape(ops.cast(pids, "int32"), (-1,))
    ce = keras.losses.sparse_categorical_crossentropy
    return 0.5 * (ops.mean(ce(pids, ops.cast(image_logits, "float32"), from_logits=True))
                  + ops.mean(ce(pids, ops.cast(text_logits, "float32"), from_logits=True)))
