"""Contrastive losses: MoCo-style InfoNCE and CLIP-style symmetric image-text InfoNCE.

All arithmetic is float32 (inputs are cast), so the losses are safe under mixed precision.
"""

from __future__ import annotations

from keras import ops

from valpat_keras.losses.normalization import l2_normalize


def cross_entropy_with_accuracy(logits, labels):
    """Mean softmax cross-entropy and top-1 accuracy for integer labels.

    Args:
        logits: (B, C) float logits.
        labels: (B,) int class indices.

    Returns:
        ``(loss, accuracy)`` float32 scalars.
    """
    logits = ops.cast(logits, "float32")
    num_classes = ops.shape(logits)[-1]
    one_hot = ops.one_hot(labels, num_classes, dtype="float32")
    loss = -ops.mean(ops.sum(one_hot * ops.log_softmax(logits, axis=-1), axis=-1))
    correct = ops.equal(ops.argmax(logits, axis=-1), ops.cast(labels, "int32"))
    return loss, ops.mean(ops.cast(correct, "float32"))


def info_nce(query, positive_key, negatives=None, temperature: float = 0.2,
             in_batch_negatives: bool = False):
    """InfoNCE of MoCo: each query against its positive key and a set of negative keys.

    With a queue (``negatives``), logits are ``[q·k+, q·queue] / T`` and the label is 0
    (MoCo v2). With ``in_batch_negatives`` the other images' keys are negatives as well:
    logits ``[q·kᵀ, q·queue] / T`` with label ``i`` for row ``i`` (MoCo v3). Without a
    queue, in-batch negatives are always used. Vectors are L2-normalised here.

    Args:
        query: (B, D) query embeddings (gradients flow through these).
        positive_key: (B, D) keys of the other view (treated as constants by callers).
        negatives: (K, D) negative keys (the queue), or ``None``.
        temperature: Softmax temperature. Defaults to ``0.2``.
        in_batch_negatives: Also contrast against the other keys of the batch.

    Returns:
        ``(loss, top1_accuracy)`` float32 scalars.
    """
    q = l2_normalize(query)
    k = l2_normalize(positive_key)
    batch = ops.shape(q)[0]
    if negatives is None or in_batch_negatives:
        parts = [ops.matmul(q, ops.transpose(k))]
        labels = ops.arange(batch, dtype="int32")
    else:
        parts = [ops.sum(q * k, axis=-1, keepdims=True)]
        labels = ops.zeros((batch,), dtype="int32")
    if negatives is not None:
        parts.append(ops.matmul(q, ops.transpose(l2_normalize(negatives))))
    logits = ops.concatenate(parts, axis=1) / temperature
    return cross_entropy_with_accuracy(logits, labels)


def symmetric_info_nce(image_embedding, text_embedding, logit_scale):
    """CLIP's symmetric image-text InfoNCE with in-batch negatives.

    ``logits = logit_scale · image · textᵀ``; the loss is the mean of the image-to-text and
    text-to-image cross-entropies with the diagonal as targets. Embeddings are
    L2-normalised here.

    Args:
        image_embedding: (B, D) image embeddings.
        text_embedding: (B, D) caption embeddings of the same images, in the same order.
        logit_scale: Scalar multiplier (``exp`` of the learnable log temperature).

    Returns:
        ``(loss, top1_accuracy)`` float32 scalars; the accuracy averages both directions.
    """
    image = l2_normalize(image_embedding)
    text = l2_normalize(text_embedding)
    logits = ops.cast(logit_scale, "float32") * ops.matmul(image, ops.transpose(text))
    labels = ops.arange(ops.shape(logits)[0], dtype="int32")
    loss_i2t, acc_i2t = cross_entropy_with_accuracy(logits, labels)
    loss_t2i, acc_t2i = cross_entropy_with_accuracy(ops.transpose(logits), labels)
    return (loss_i2t + loss_t2i) / 2.0, (acc_i2t + acc_t2i) / 2.0
