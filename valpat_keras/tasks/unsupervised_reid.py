"""Unsupervised person re-identification with Cluster Contrast (Dai et al. 2022).

No identity labels: every epoch the current encoder embeds all training images, DBSCAN on
the k-reciprocal Jaccard distance turns them into pseudo-identities (outliers dropped), a
cluster memory is initialised with the L2-normalised cluster means, and one epoch of P x K
batches trains the encoder with the cluster-level contrastive loss while the memory follows
the batch features by momentum.

The memory is allocated once at its largest possible size (one row per training image) and
the rows beyond the epoch's cluster count are masked out of the softmax, so its shape never
changes and the compiled train step is reused on every backend.

With a `StepCheckpoint` (``fit_cluster_contrast(..., checkpoint=...)``, as `train_reid` passes)
a killed run resumes mid-round: the checkpoint holds the weights, the optimiser, the cluster
memory (a model variable), the round's pseudo-labels and clustering stats and the rounds'
log; a resumed round trains on the same pseudo-identities and the same P x K stream from the
next batch. A round resumed at its start clusters again, from the restored weights (as the
uninterrupted run did).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from valpat_keras.data.pipelines import reid_train_dataset
from valpat_keras.data.records import ReIDRecord, camids_of, pids_of
from valpat_keras.data.sampler import PKSampler
from valpat_keras.evaluation.features import extract_features
from valpat_keras.losses.reid import cluster_contrast_loss, update_cluster_memory
from valpat_keras.models.image_encoder import ImageEncoder
from valpat_keras.models.preprocessors import ImagePreprocessor
from valpat_keras.models.reid_head import BNNeck
from valpat_keras.schedules import REID_LEARNING_RATE
from valpat_keras.tasks.base import EmbeddingMixin, ValPatTask
from valpat_keras.tasks.checkpointing import StepCheckpoint, fit_resumable
from valpat_keras.tasks.clustering import (
    AUTO_EPS_RHO,
    cluster_centroids,
    clustering_stats,
    jaccard_pseudo_labels,
)

__all__ = ["ClusterContrastReID", "ClusterMemory", "fit_cluster_contrast", "pseudo_label_epoch"]

logger = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="valpat_keras")
class ClusterMemory(keras.layers.Layer):
    """Cluster centroids as a fixed-size, non-trainable memory with a valid-row count.

    A state holder of `ClusterContrastReID` (not part of its forward graph): the rows
    ``>= num_clusters`` are padding that `cluster_contrast_loss` masks out.

    Args:
        capacity: Rows allocated (the most clusters an epoch may have).
        feature_dim: Embedding size.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(self, capacity: int, feature_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.capacity = int(capacity)
        self.feature_dim = int(feature_dim)

    def build(self, input_shape=None):
        self.centroids = self.add_weight(shape=(self.capacity, self.feature_dim),
                                         initializer="zeros", trainable=False,
                                         name="centroids")
        self.num_clusters = self.add_weight(shape=(), initializer="zeros", dtype="int32",
                                            trainable=False, name="num_clusters")
        self.built = True

    def set_centroids(self, centroids: np.ndarray) -> None:
        """Loads ``(C, D)`` centroids into the first C rows (C <= capacity), zeroing the rest."""
        centroids = np.asarray(centroids, dtype="float32")
        if centroids.ndim != 2 or centroids.shape[1] != self.feature_dim:
            raise ValueError(f"expected ({self.capacity} or fewer, {self.feature_dim}) "
                             f"centroids, got {centroids.shape}")
        if centroids.shape[0] > self.capacity:
            raise ValueError(f"{centroids.shape[0]} clusters exceed the memory capacity "
                             f"{self.capacity}; build the model with a larger capacity")
        padded = np.zeros((self.capacity, self.feature_dim), dtype="float32")
        padded[: centroids.shape[0]] = centroids
        self.centroids.assign(padded)
        self.num_clusters.assign(np.int32(centroids.shape[0]))

    def get_config(self):
        config = super().get_config()
        config.update({"capacity": self.capacity, "feature_dim": self.feature_dim})
        return config


@keras.saving.register_keras_serializable(package="valpat_keras")
class ClusterContrastReID(EmbeddingMixin, ValPatTask):
    """Cluster Contrast model: image encoder, BN (frozen shift) and a cluster memory.

    Outputs the post-BN embedding (the retrieval feature). Train on ``(images,
    pseudo_labels)`` P x K batches after `set_centroids`; `task_loss` applies the cluster
    contrast loss against the memory and moves the centroids of the batch's clusters toward
    their features (``assign`` inside the train step, which works on every backend; ``call``
    itself mutates nothing, so this is a functional keras-hub Task). ``compile()`` defaults
    to Cluster Contrast's Adam at 3.5e-4 and takes no ``loss``.

    Args:
        backbone: An `ImageEncoder`.
        memory_capacity: Largest number of clusters (e.g. the number of training images).
        temperature: Softmax temperature (0.05 in Cluster Contrast).
        memory_momentum: Weight the old centroid keeps at each update (0.1).
        hard_memory_update: Update each centroid with its batch's hardest (least similar)
            sample instead of the batch mean (Cluster Contrast's "hard" variant).
        preprocessor: An `ImagePreprocessor` or ``None`` (inputs arrive decoded).
        **kwargs: Standard `keras.Model` arguments.

    Example:

    ```python
    model = ClusterContrastReID(build_image_encoder("tiny", (64, 32)), memory_capacity=500)
    model.set_centroids(centroids)                  # (num_clusters, feature_dim)
    model.fit(pseudo_labelled_batches, epochs=1)
    ```
    """

    embedding_model_name = "reid_embedding"
    backbone_cls = ImageEncoder
    preprocessor_cls = ImagePreprocessor

    def __init__(self, backbone, memory_capacity: int, temperature: float = 0.05,
                 memory_momentum: float = 0.1, hard_memory_update: bool = False,
                 preprocessor=None, **kwargs):
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.neck = BNNeck(name="bnneck")
        self.memory = ClusterMemory(memory_capacity, backbone.feature_dim,
                                    name="cluster_memory")
        self.memory.build()

        # === Functional Model ===
        images = keras.Input(shape=tuple(backbone.image_shape), name="images")
        embeddings = self.neck(self.backbone(images))
        super().__init__(inputs=images, outputs=embeddings, **kwargs)

        # === Config ===
        self.memory_capacity = int(memory_capacity)
        self.temperature = float(temperature)
        self.memory_momentum = float(memory_momentum)
        self.hard_memory_update = bool(hard_memory_update)

    def default_optimizer(self) -> keras.optimizers.Optimizer:
        """Cluster Contrast's Adam at 3.5e-4."""
        return keras.optimizers.Adam(REID_LEARNING_RATE)

    def task_loss(self, x, y, y_pred, training: bool):
        """Cluster contrast loss; in training also the momentum update of the memory."""
        labels = ops.cast(ops.reshape(y, (-1,)), "int32")
        centroids = self.memory.centroids
        # A copy: PyTorch keeps the memory for the backward pass, and the in-place update
        # below would otherwise invalidate it.
        memory = ops.copy(ops.stop_gradient(centroids.value))
        loss = cluster_contrast_loss(y_pred, labels, memory, self.temperature,
                                     self.memory.num_clusters.value)
        if training:
            updated = update_cluster_memory(
                ops.stop_gradient(centroids.value), ops.stop_gradient(y_pred), labels,
                momentum=self.memory_momentum, hard=self.hard_memory_update)
            centroids.assign(updated)
        return loss

    def set_centroids(self, centroids: np.ndarray) -> None:
        """Re-initialises the memory with this epoch's ``(num_clusters, D)`` centroids."""
        self.memory.set_centroids(centroids)

    def embedding_outputs(self, images):
        """The post-BN retrieval embedding."""
        return self.neck(self.backbone(images))

    def get_config(self):
        config = super().get_config()
        config.update({
            "memory_capacity": self.memory_capacity,
            "temperature": self.temperature,
            "memory_momentum": self.memory_momentum,
            "hard_memory_update": self.hard_memory_update,
        })
        return config


def pseudo_label_epoch(model: ClusterContrastReID, records: Sequence[ReIDRecord],
                       image_size: tuple[int, int], eps: float | str = 0.6, min_samples: int = 4,
                       k1: int = 30, k2: int = 6, batch_size: int = 64,
                       true_ids: np.ndarray | None = None, rho: float | None = None
                       ) -> tuple[list[ReIDRecord], dict]:
    """Embeds all training images, clusters them and loads the memory.

    Args:
        model: The model being trained.
        records: Training records (their pids are only used as ``true_ids`` if given).
        image_size: ``(height, width)``.
        eps: DBSCAN radius on the Jaccard distance, or ``"auto"`` (`eps_from_distances`).
        min_samples: DBSCAN core-point size.
        k1: k-reciprocal neighbourhood size of the Jaccard distance.
        k2: Query-expansion size of the Jaccard distance.
        batch_size: Images per forward pass.
        true_ids: Ground-truth ids for the log (ARI / NMI), or None.
        rho: Share of the closest pairs behind ``eps="auto"`` (default `AUTO_EPS_RHO`).

    Returns:
        ``(pseudo_records, stats)``: the clustered images with their cluster index as pid
        (outliers dropped), and the `ClusteringStats` as a dict with the radius used (``eps``).
    """
    labels, stats = _cluster_labels(model, records, image_size, eps, min_samples, k1, k2,
                                    batch_size, true_ids, rho)
    pseudo = [ReIDRecord(r.path, int(label), r.camid)
              for r, label in zip(records, labels) if label >= 0]
    return pseudo, stats


def _cluster_labels(model: ClusterContrastReID, records: Sequence[ReIDRecord],
                    image_size: tuple[int, int], eps: float | str, min_samples: int, k1: int,
                    k2: int, batch_size: int, true_ids: np.ndarray | None, rho: float | None
                    ) -> tuple[np.ndarray, dict]:
    """`pseudo_label_epoch`'s labels (``-1``: outlier) and stats; loads the memory."""
    features = extract_features(model.embedding_model, list(records), image_size,
                                batch_size=batch_size, flip=False, normalize=True,
                                verbose=False).features
    # Sparse: only the pairs within the radius are held (O(N x k), not the N x N matrix).
    labels, radius = jaccard_pseudo_labels(features, eps if eps == "auto" else float(eps),
                                           min_samples, k1=k1, k2=k2, rho=rho or AUTO_EPS_RHO)
    stats = clustering_stats(labels, true_ids)
    if stats.num_clusters:
        model.set_centroids(cluster_centroids(features, labels, stats.num_clusters))
    return labels, {**stats.as_dict(), "eps": radius}


class _RoundState(keras.callbacks.Callback):
    """The rounds' log and the current round's pseudo-labels, kept with each checkpoint.

    At a round's end (before the checkpoint's epoch-end save) its entry gets the epoch's
    logs and joins ``history``. A mid-round checkpoint holds the round's labels and
    clustering stats, so a resumed round trains on the same pseudo-identities (the
    cluster memory is a model variable, restored with the weights).
    """

    def __init__(self):
        super().__init__()
        self.history: list[dict] = []
        self.round, self.labels, self.entry = None, None, None

    def on_epoch_end(self, epoch, logs=None):
        self.entry.update({key: float(value) for key, value in (logs or {}).items()})
        self.history.append(self.entry)

    def get_resume_state(self) -> dict:
        return {"history": self.history, "round": self.round, "entry": self.entry,
                "labels": None if self.labels is None else [int(v) for v in self.labels]}

    def set_resume_state(self, state: dict) -> None:
        self.history, self.round, self.entry = state["history"], state["round"], state["entry"]
        self.labels = None if state["labels"] is None else np.asarray(state["labels"])


def _round_labels(model, records, round_state: _RoundState, epoch: int, resumed_batch: int,
                  cluster_args: dict) -> tuple[list[ReIDRecord], dict]:
    """The round's pseudo-records and stats: clustered now, or those of a resumed round.

    A round resumed mid-way keeps its checkpointed labels (its memory was restored with
    the weights); a round starting afresh clusters the current features (after a restore,
    those of the restored weights, as in the uninterrupted run).
    """
    if resumed_batch and round_state.round == epoch and round_state.labels is not None:
        labels, entry = round_state.labels, round_state.entry
    else:
        labels, stats = _cluster_labels(model, records, batch_size=64, **cluster_args)
        entry = {"epoch": epoch, **stats}
    round_state.round, round_state.labels, round_state.entry = epoch, labels, entry
    pseudo = [ReIDRecord(r.path, int(label), r.camid)
              for r, label in zip(records, labels) if label >= 0]
    return pseudo, entry


def fit_cluster_contrast(model: ClusterContrastReID, records: Sequence[ReIDRecord],
                         epochs: int, image_size: tuple[int, int], p: int = 16, k: int = 4,
                         seed: int = 0, eps: float | str = 0.6, min_samples: int = 4, k1: int = 30,
                         k2: int = 6, steps_per_epoch: int | None = None,
                         augment: bool = True, use_true_ids: bool = True,
                         rho: float | None = None,
                         callbacks: Sequence[keras.callbacks.Callback] = (),
                         verbose: int = 0, checkpoint: StepCheckpoint | None = None
                         ) -> list[dict]:
    """The Cluster Contrast training loop: re-cluster, reset the memory, train one epoch.

    Args:
        model: A compiled `ClusterContrastReID`.
        records: Training records; pids are ignored for training.
        epochs: Clustering rounds (one training epoch each).
        image_size: ``(height, width)``.
        p: Pseudo-identities per batch (all the clusters when there are fewer).
        k: Images per pseudo-identity.
        seed: Seed of the sampler and augmentation (epoch ``e`` uses ``seed + e``).
        eps: DBSCAN radius, or ``"auto"``: read off each round's distances.
        min_samples: DBSCAN core-point size.
        k1: Jaccard k-reciprocal size.
        k2: Jaccard query-expansion size.
        steps_per_epoch: Batches per epoch (default: the sampler's epoch).
        augment: Apply the re-ID training augmentation.
        use_true_ids: Log ARI / NMI of the pseudo-labels against the records' pids.
        rho: Share of the closest pairs behind ``eps="auto"`` (default `AUTO_EPS_RHO`).
        callbacks: Keras callbacks for every epoch's ``fit`` (e.g. `ReIDEvaluationCallback`).
            With a ``checkpoint``, those with ``get_resume_state`` / ``set_resume_state``
            are saved and restored with it.
        verbose: ``fit`` verbosity.
        checkpoint: A `StepCheckpoint`: restored before the first round (resuming at the
            round, and the batch of it, where it stopped, with the round's pseudo-labels,
            cluster memory and the rounds' log), and written every N steps and at each
            round's end. None: no checkpoints.

    Returns:
        One dict per epoch: ``epoch``, ``num_clusters``, ``num_outliers``, ``ari``, ``nmi``
        and the epoch's ``fit`` logs (``loss`` and any callback metrics).
    """
    records = list(records)
    cluster_args = {"image_size": image_size, "eps": eps, "min_samples": min_samples,
                    "k1": k1, "k2": k2, "rho": rho,
                    "true_ids": pids_of(records) if use_true_ids else None}
    round_state = _RoundState()
    callbacks = [*callbacks, round_state]
    first, resumed_batch = 0, 0
    if checkpoint is not None:
        checkpoint.stateful = [c for c in callbacks if hasattr(c, "get_resume_state")
                               and hasattr(c, "set_resume_state")]
        # Under torch the memory (outside the forward graph) is not in model.variables.
        tracked = {id(v) for v in model.variables}
        checkpoint.extra_variables = [v for v in model.memory.variables
                                      if id(v) not in tracked]
        checkpoint.restore(model)
        _, first, resumed_batch = checkpoint.position
    for epoch in range(first, epochs):
        pseudo, entry = _round_labels(model, records, round_state, epoch,
                                      resumed_batch if epoch == first else 0, cluster_args)
        if entry["num_clusters"] < 2:
            # Contrast needs two clusters at least: skip this round; the log shows why.
            logger.warning("epoch %d: %d cluster(s), no training this epoch",
                           epoch, entry["num_clusters"])
            round_state.history.append({**entry, "skipped": True})
            if checkpoint is not None:
                checkpoint.skip_epoch(epoch)
            continue
        _fit_round(model, pseudo, epoch, entry["num_clusters"], image_size, p, k, seed,
                   augment, steps_per_epoch, callbacks, verbose, checkpoint)
        if verbose:
            quality = (f", ARI {entry['ari']:.3f}, NMI {entry['nmi']:.3f}"
                       if entry.get("ari") is not None else "")
            print(f"epoch {epoch + 1}/{epochs}: {entry['num_clusters']} clusters, "
                  f"{entry['num_outliers']} outliers{quality}, loss {entry['loss']:.4f}")
    return round_state.history


def _fit_round(model, pseudo: list[ReIDRecord], epoch: int, num_clusters: int,
               image_size: tuple[int, int], p: int, k: int, seed: int, augment: bool,
               steps_per_epoch: int | None, callbacks: list, verbose: int,
               checkpoint: StepCheckpoint | None) -> None:
    """One round's epoch of P x K batches of the pseudo-identities (resumed mid-way)."""
    # A random encoder often yields fewer clusters than P; skipping the round would
    # leave its features (and so its clusters) unchanged every later round, so it would
    # never train. Smaller batches of all the clusters let it start.
    epoch_p = min(p, num_clusters)
    if epoch_p < p:
        logger.warning("epoch %d: %d clusters < p=%d, batches of %d x %d this epoch",
                       epoch, num_clusters, p, epoch_p, k)
    settings = {"image_size": image_size, "p": epoch_p, "k": k, "seed": seed + epoch,
                "augment": augment}
    if checkpoint is None:
        dataset, steps = reid_train_dataset(pseudo, **settings)
        if steps_per_epoch is not None:
            dataset, steps = dataset.repeat(), steps_per_epoch
        model.fit(dataset, epochs=epoch + 1, initial_epoch=epoch, steps_per_epoch=steps,
                  shuffle=False, callbacks=list(callbacks), verbose=verbose)
        return
    step, _, batch = checkpoint.position
    round_start = step - batch  # the global step the round started at

    def round_data(global_step: int):
        return reid_train_dataset(pseudo, **settings, start_step=global_step - round_start)[0]

    steps = steps_per_epoch or PKSampler(pids_of(pseudo).tolist(), camids_of(pseudo).tolist(),
                                         p=epoch_p, k=k, seed=seed + epoch).num_batches
    fit_resumable(model, round_data, epochs=epoch + 1, steps_per_epoch=steps,
                  checkpoint=checkpoint, callbacks=callbacks, verbose=verbose,
                  total_steps=round_start + steps, restore=False)
