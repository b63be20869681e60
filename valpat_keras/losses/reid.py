"""Person re-identification losses: BoT's ID and triplet losses, and cluster contrast.

All functions are written with `keras.ops` only, so they run unchanged (and under jit) on the
TensorFlow, JAX and PyTorch backends.

- `cross_entropy_label_smoothing`: the identity (classification) loss of BoT (Luo et al. 2019).
- `batch_hard_triplet`: the batch-hard triplet loss (Hermans et al. 2017), hard or soft margin.
- `weighted_regularized_triplet`: AGW's weighted regularisation triplet (Ye et al. 2021), the
  softmax-weighted average of positive and negative distances instead of the hardest.
- `cluster_contrast_loss` and `update_cluster_memory`: the cluster-level InfoNCE loss of
  Cluster Contrast (Dai et al. 2022) and the momentum update of its cluster memory,
  including the "hard" (hardest-instance) update.
"""

from __future__ import annotations

from keras import ops

from valpat_keras.losses.normalization import l2_normalize

# Logits of unused memory rows: large but finite, so softmax stays NaN-free on every backend.
_MASKED_LOGIT = -1e9


def cross_entropy_label_smoothing(labels, logits, epsilon: float = 0.1):
    """Softmax cross-entropy with label smoothing, averaged over the batch.

    The target distribution is ``(1 - epsilon) * one_hot(label) + epsilon / num_classes``,
    as in BoT's "ID loss" (Szegedy et al. 2016 label smoothing regularisation).

    Args:
        labels: Integer class ids, shape ``(B,)``.
        logits: Unnormalised class scores, shape ``(B, C)``.
        epsilon: Smoothing mass spread uniformly over all classes (0 gives plain CE).

    Returns:
        The scalar mean loss.

    Example:

    ```python
    loss = cross_entropy_label_smoothing(np.array([0, 2]), np.random.randn(2, 5), 0.1)
    ```
    """
    logits = ops.convert_to_tensor(logits)
    num_classes = ops.shape(logits)[-1]
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    one_hot = ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), num_classes)
    targets = (1.0 - epsilon) * one_hot + epsilon / ops.cast(num_classes, "float32")
    return ops.mean(-ops.sum(targets * log_probs, axis=-1))


def pairwise_euclidean_distance(features):
    """Euclidean distances between all rows of ``features``, shape ``(B, B)``.

    Clipped at 1e-12 before the square root so the gradient at zero distance is finite.
    """
    features = ops.cast(features, "float32")
    squared = ops.sum(ops.square(features), axis=1)
    dist2 = (ops.expand_dims(squared, 1) + ops.expand_dims(squared, 0)
             - 2.0 * ops.matmul(features, ops.transpose(features)))
    return ops.sqrt(ops.maximum(dist2, 1e-12))


def batch_hard_triplet(features, labels, margin: float | None = 0.3):
    """Batch-hard triplet loss on euclidean distances (Hermans et al. 2017, as in BoT).

    For each anchor the farthest same-label sample and the closest other-label sample of the
    batch are taken. Needs P x K batches (several images per identity).

    Args:
        features: Embeddings, shape ``(B, D)`` (BoT uses the pre-BNNeck feature).
        labels: Integer identity ids, shape ``(B,)``.
        margin: Margin of ``max(0, d_ap - d_an + margin)``; ``None`` uses the soft margin
            ``softplus(d_ap - d_an)``.

    Returns:
        The scalar mean loss over anchors.
    """
    dist = pairwise_euclidean_distance(features)
    labels = ops.reshape(labels, (-1,))
    same = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0))
    # Distances are >= 0: zeroing negatives leaves the max over positives unchanged, and
    # adding a large constant to positives keeps them out of the min over negatives.
    hardest_positive = ops.max(ops.where(same, dist, 0.0), axis=1)
    hardest_negative = ops.min(ops.where(same, dist + 1e6, dist), axis=1)
    difference = hardest_positive - hardest_negative
    if margin is None:
        return ops.mean(ops.softplus(difference))
    return ops.mean(ops.relu(difference + margin))


def _softmax_weights(values, mask):
    """Softmax of ``values`` over the entries where ``mask`` is 1, per row (0 elsewhere).

    Shifted by the row maximum over the masked entries (AGW's reference shifts by the
    maximum of ``values * mask``, which is 0 for the negated negative distances, so large
    distances underflow to all-zero weights there); equal to it otherwise. The 1e-6 in the
    normaliser keeps a row without masked entries at zero weights.
    """
    shift = ops.stop_gradient(
        ops.max(ops.where(mask > 0, values, -1e30), axis=1, keepdims=True))
    # Entries outside the mask may lie above the shift: clamped before exp, then zeroed.
    exponentials = ops.exp(ops.minimum(values - shift, 0.0)) * mask
    return exponentials / (ops.sum(exponentials, axis=1, keepdims=True) + 1e-6)


def weighted_regularized_triplet(features, labels, margin: float | None = None):
    """AGW's weighted regularisation triplet loss (WRT, Ye et al. 2021), on euclidean distances.

    Each anchor's positive distance is the softmax(d)-weighted mean of its distances to the
    same-label samples (itself included, at distance ~0) and its negative distance the
    softmax(-d)-weighted mean of those to the other labels, so every pair contributes and
    the hardest ones most; no margin to tune. As in AGW (``WeightedRegularizedTriplet``) and
    fast-reid (``triplet_loss`` with ``HARD_MINING: False``, configs/Base-AGW.yml).

    Args:
        features: Embeddings, shape ``(B, D)`` (AGW: the pre-BNNeck feature).
        labels: Integer identity ids, shape ``(B,)``.
        margin: ``None`` (AGW; fast-reid's ``TRI.MARGIN: 0.0``): the soft margin
            ``softplus(d_ap - d_an)``; a number: ``max(0, d_ap - d_an + margin)``.

    Returns:
        The scalar mean loss over anchors.
    """
    dist = pairwise_euclidean_distance(features)
    labels = ops.reshape(labels, (-1,))
    positive = ops.cast(ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0)),
                        "float32")
    negative = 1.0 - positive
    positive_dist = dist * positive
    negative_dist = dist * negative
    weighted_positive = ops.sum(positive_dist * _softmax_weights(positive_dist, positive), 1)
    weighted_negative = ops.sum(negative_dist * _softmax_weights(-negative_dist, negative), 1)
    difference = weighted_positive - weighted_negative
    if margin is None:
        return ops.mean(ops.softplus(difference))
    return ops.mean(ops.relu(difference + margin))


def cluster_contrast_loss(features, labels, memory, temperature: float = 0.05,
                          num_clusters=None):
    """Cluster-level InfoNCE of Cluster Contrast: each image against all cluster centroids.

    ``loss = CE(softmax(normalize(f) @ memory.T / temperature), label)``. The memory holds one
    L2-normalised centroid per pseudo-label cluster. A memory allocated larger than the
    current number of clusters (its size changes every epoch) is masked with
    ``num_clusters``: rows ``>= num_clusters`` take no part in the softmax.

    Args:
        features: Image embeddings, shape ``(B, D)``; L2-normalised here.
        labels: Pseudo-labels (cluster indices), shape ``(B,)``, all ``< num_clusters``.
        memory: Cluster centroids, shape ``(N, D)``, rows L2-normalised.
        temperature: Softmax temperature (0.05 in Cluster Contrast).
        num_clusters: Number of valid leading rows of ``memory`` (scalar); ``None`` = all.

    Returns:
        The scalar mean loss.
    """
    features = l2_normalize(ops.cast(features, "float32"))
    memory = ops.cast(memory, "float32")
    logits = ops.matmul(features, ops.transpose(memory)) / temperature
    if num_clusters is not None:
        valid = ops.arange(ops.shape(memory)[0]) < ops.cast(num_clusters, "int32")
        logits = ops.where(ops.expand_dims(valid, 0), logits, _MASKED_LOGIT)
    return cross_entropy_label_smoothing(labels, logits, epsilon=0.0)


def update_cluster_memory(memory, features, labels, momentum: float = 0.1, hard: bool = False):
    """The Cluster Contrast momentum update of the centroids of the clusters in a batch.

    For every cluster ``c`` present in the batch,
    ``memory[c] <- normalize(momentum * memory[c] + (1 - momentum) * x_c)``, where ``x_c`` is
    the mean of the batch's (L2-normalised) features of cluster ``c`` (``hard=False``), or the
    feature least similar to ``memory[c]`` (``hard=True``, the "hard" variant ClusterMemory
    CM_Hard). Rows of absent clusters are returned unchanged.

    The original updates sample by sample in a Python loop; the batch mean is the
    vectorised, jit-friendly equivalent used by later reimplementations.

    Args:
        memory: Current centroids, shape ``(N, D)``.
        features: Batch embeddings, shape ``(B, D)``; L2-normalised here.
        labels: Cluster indices, shape ``(B,)``, each in ``[0, N)``.
        momentum: Weight kept by the old centroid (0.1 in Cluster Contrast).
        hard: Update with the hardest instance instead of the batch mean.

    Returns:
        The new memory, shape ``(N, D)``.
    """
    memory = ops.cast(memory, "float32")
    features = l2_normalize(ops.cast(features, "float32"))
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    num_rows = ops.shape(memory)[0]
    weights = ops.ones_like(labels, dtype="float32")
    if hard:
        similarity = ops.sum(features * ops.take(memory, labels, axis=0), axis=1)
        lowest = ops.segment_min(similarity, labels, num_segments=num_rows)
        # Keep only the least similar sample of each cluster (ties share the update).
        weights = ops.cast(ops.equal(similarity, ops.take(lowest, labels)), "float32")
    sums = ops.segment_sum(features * ops.expand_dims(weights, 1), labels,
                           num_segments=num_rows)
    counts = ops.segment_sum(weights, labels, num_segments=num_rows)
    present = ops.expand_dims(counts > 0, 1)
    batch_means = sums / ops.maximum(ops.expand_dims(counts, 1), 1.0)
    updated = l2_normalize(momentum * memory + (1.0 - momentum) * batch_means)
    return ops.where(present, updated, memory)
