"""`train_reid`: fine-tune an image encoder for person re-ID and write a run folder.

Supervised: BoT (`ReIDModel`, P x K batches, ID + triplet loss, warm-up and step or cosine
learning rate). Unsupervised: Cluster Contrast (`ClusterContrastReID`, pseudo-labels from
DBSCAN on the Jaccard distance every epoch). Both start from ``init``: random weights, a
VAL-PAT pretraining run, a preset folder or a keras-hub preset name.

Model selection never looks at the test split: a few training identities are held out as a
validation query / gallery (`split_reid_validation`), the epoch with the best validation mAP is
kept, and the test query / gallery are read once, by the final `evaluate_reid_model`. Without
a validation split (``validation_fraction=0``) the last epoch is kept.

The run folder holds ``metrics.json`` (test rank-1/5/10, mAP, mINP; a ``rerank`` sub-dict
with k-reciprocal re-ranking; the selection), ``history.json`` (one entry per epoch, with the
validation ``val_rank1`` / ``val_mAP`` / ``val_mINP``), ``ranked_results.png``, the kept
model ``reid_model.keras`` and its encoder as a keras-hub preset in ``image_encoder/``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import keras
import numpy as np

from valpat_keras.data.pipelines import reid_train_dataset
from valpat_keras.data.records import ReIDDataset
from valpat_keras.data.splits import split_reid_validation
from valpat_keras.errors import InputError
from valpat_keras.evaluation.callbacks import ReIDEvaluationCallback, ReIDEvaluator
from valpat_keras.evaluation.distances import iter_distance_blocks, pairwise_distance
from valpat_keras.evaluation.features import extract_features
from valpat_keras.evaluation.plots import plot_ranked_results
from valpat_keras.evaluation.reid_metrics import evaluate_reid_from_blocks
from valpat_keras.evaluation.reranking import iter_re_ranking_blocks, re_ranking_from_features
from valpat_keras.models.init import load_image_encoder
from valpat_keras.run_outputs import write_json
from valpat_keras.tasks.callbacks import TerminateOnNonFiniteLoss
from valpat_keras.tasks.clustering import rho_for_identity_size
from valpat_keras.tasks.reid import (
    FreezeBackbone,
    ReIDModel,
    WarmupLearningRate,
)
from valpat_keras.tasks.unsupervised_reid import ClusterContrastReID, fit_cluster_contrast

MODEL_FILE = "reid_model.keras"
_METRIC_KEYS = ("rank1", "rank5", "rank10", "mAP", "mINP", "num_valid_queries")


@dataclasses.dataclass
class ReIDTrainingConfig:
    """Hyper-parameters of `train_reid` beyond the common ones (defaults: BoT / Cluster Contrast).

    Attributes:
        learning_rate: Peak Adam learning rate.
        lr_schedule: ``"step"`` (x0.1 at 40 % and 70 % of training) or ``"cosine"``.
        warmup_epochs: Linear warm-up epochs (supervised); None = 10 % of the epochs.
        freeze_backbone_epochs: Epochs training only the BNNeck and classifier (supervised).
        label_smoothing: Identity-loss smoothing.
        triplet_margin: Triplet margin (None = soft margin).
        validation_fraction: Share of the training identities held out (seeded by
            `train_reid`'s ``seed``) as a validation query / gallery on which the best epoch
            is chosen, in ``[0, 1)``; see `split_reid_validation`. 0 trains on every
            identity, evaluates nothing during training and keeps the last epoch (as BoT
            does on real data).
        eval_every: Evaluate on the validation split (and keep the best model) every this
            many epochs.
        eval_batch_size: Images per forward pass when extracting features.
        pooling: Encoder pooling (``"gem"`` / ``"avg"``; ViT: ``"token"`` / ``"avg"``).
        eps: DBSCAN radius (unsupervised), or ``"auto"``: each round's radius read off the
            Jaccard distances (`eps_from_distances`), with SSG's ``rho`` scaled to the images
            per identity of the validation ids (`rho_for_identity_size`) when there are any.
        min_samples: DBSCAN core-point size (unsupervised).
        k1: Jaccard / re-ranking k-reciprocal size for clustering (unsupervised).
        k2: Jaccard query expansion size (unsupervised).
        temperature: Cluster contrast temperature.
        memory_momentum: Cluster memory momentum.
        hard_memory_update: Cluster Contrast's hardest-instance memory update.
        steps_per_epoch: Batches per epoch; None = one sampler epoch (supervised) or
            ``len(train) // (P K)`` (unsupervised).
        augment: Re-ID training augmentation (flip, pad-crop, random erasing).
        verbose: Keras ``fit`` verbosity.
    """

    learning_rate: float = 3.5e-4
    lr_schedule: str = "step"
    warmup_epochs: int | None = None
    freeze_backbone_epochs: int = 0
    label_smoothing: float = 0.1
    triplet_margin: float | None = 0.3
    validation_fraction: float = 0.1
    eval_every: int = 1
    eval_batch_size: int = 64
    pooling: str = "gem"
    eps: float | str = 0.6
    min_samples: int = 4
    k1: int = 30
    k2: int = 6
    temperature: float = 0.05
    memory_momentum: float = 0.1
    hard_memory_update: bool = False
    steps_per_epoch: int | None = None
    augment: bool = True
    verbose: int = 1


class _EpochLog(keras.callbacks.Callback):
    """Keeps each epoch's logs whole (``History`` misaligns keys logged only some epochs)."""

    def __init__(self):
        super().__init__()
        self.entries: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        self.entries.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})


class _KeepBest(keras.callbacks.Callback):
    """Saves the model whenever the logged validation mAP improves (across repeated fits)."""

    def __init__(self, path: Path, monitor: str = "val_mAP"):
        super().__init__()
        self.path, self.monitor = path, monitor
        self.best, self.best_epoch = -math.inf, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.best:
            self.best, self.best_epoch = float(value), epoch
            self.model.save(self.path)


def _schedule(config: ReIDTrainingConfig, epochs: int, steps: int,
              warmup: bool) -> WarmupLearningRate:
    total = epochs * steps
    warmup_epochs = config.warmup_epochs
    if warmup_epochs is None:
        warmup_epochs = max(0, round(0.1 * epochs)) if warmup else 0
    return WarmupLearningRate(
        config.learning_rate, warmup_steps=warmup_epochs * steps, total_steps=total,
        mode=config.lr_schedule, milestones=(round(0.4 * total), round(0.7 * total)))


def evaluate_reid_model(model, dataset: ReIDDataset, image_size: tuple[int, int],
                        batch_size: int = 64, rerank: bool = False,
                        plot_path: str | Path | None = None) -> dict:
    """Scores an embedding model on a dataset's query / gallery split.

    Cosine distance between flip-averaged, L2-normalised embeddings, the Market-1501
    protocol, computed blockwise so memory does not grow with Q x G.

    Args:
        model: Maps float32 images in [0, 1] to embeddings (e.g. `ReIDModel.embedding_model`
            or an `ImageEncoder`).
        dataset: The `ReIDDataset` whose ``query`` and ``gallery`` are scored.
        image_size: ``(height, width)`` the images are resized to.
        batch_size: Images per forward pass.
        rerank: Also score k-reciprocal re-ranked distances (under ``"rerank"``).
        plot_path: Where to save the ranked-results figure of the first queries, or None.

    Returns:
        ``rank1``, ``rank5``, ``rank10``, ``mAP``, ``mINP``, ``num_valid_queries``, the first
        20 CMC values and, with ``rerank``, the same under ``"rerank"``.
    """
    kwargs = {"image_size": image_size, "batch_size": batch_size, "flip": True,
              "normalize": True, "verbose": False}
    q = extract_features(model, dataset.query, **kwargs)
    g = extract_features(model, dataset.gallery, **kwargs)

    def scores(blocks) -> dict:
        result = evaluate_reid_from_blocks(blocks, q.pids, g.pids, q.camids, g.camids, 50)
        out = {key: float(result[key]) for key in _METRIC_KEYS}
        out["num_valid_queries"] = int(result["num_valid_queries"])
        out["cmc"] = [float(v) for v in np.asarray(result["cmc"])[:20]]
        return out

    metrics = scores(iter_distance_blocks(q.features, g.features, "cosine"))
    if rerank:
        metrics["rerank"] = scores(iter_re_ranking_blocks(q.features, g.features,
                                                          metric="cosine"))
    if plot_path is not None:
        shown = min(len(q), 6)
        if rerank:
            distmat = re_ranking_from_features(q.features, g.features, metric="cosine")[:shown]
        else:
            distmat = pairwise_distance(q.features[:shown], g.features, "cosine")
        plot_ranked_results(q.paths[:shown], g.paths, distmat, q.pids[:shown], g.pids,
                            q.camids[:shown], g.camids, num_queries=shown,
                            topk=min(10, len(g)), path=str(plot_path))
    return metrics


def train_reid(dataset: ReIDDataset, out_dir: str | Path, init: str = "random",
               config: str = "tiny", unsupervised: bool = False, epochs: int = 10,
               p: int = 16, k: int = 4, image_size: tuple[int, int] = (256, 128),
               seed: int = 0, rerank: bool = False,
               options: ReIDTrainingConfig | None = None) -> dict:
    """Fine-tunes an image encoder for re-ID on ``dataset`` and writes the run folder.

    Args:
        dataset: A `ReIDDataset` (train / query / gallery). Training and model selection
            use ``train`` only; ``query`` and ``gallery`` are read once, for the final
            scores. Unsupervised training uses the train pids only to hold out the
            validation identities and to log the pseudo-labels' ARI / NMI.
        out_dir: Run folder (created).
        init: ``"random"``, a VAL-PAT pretraining run folder, a preset folder or a keras-hub
            preset name (see `load_image_encoder`).
        config: Encoder configuration for ``init="random"`` (``"tiny"``, ``"resnet50"``, ...).
        unsupervised: Cluster Contrast instead of supervised BoT.
        epochs: Training epochs (clustering rounds when unsupervised).
        p: Identities (clusters) per batch.
        k: Images per identity.
        image_size: ``(height, width)`` of the inputs.
        seed: Seeds the weights, the sampler, the augmentation and the validation split.
        rerank: Also report k-reciprocal re-ranked scores (``metrics["rerank"]``).
        options: Further hyper-parameters; `ReIDTrainingConfig()` when None.

    Returns:
        The metrics written to ``metrics.json``: the test ``rank1``, ``rank5``, ``rank10``,
        ``mAP``, ``mINP`` (fractions), ``num_valid_queries``, ``cmc`` (first 20 ranks), and
        ``rerank`` (the same keys) when asked; how the kept epoch was chosen: ``selection``
        (``"validation"``, or ``"last_epoch"`` when nothing was evaluated), ``best_epoch``
        (0-based, the kept epoch), ``best_val_mAP`` (None without validation); and the split
        sizes: ``validation_fraction``, ``num_train_ids``, ``num_train_images``,
        ``num_val_ids``, ``num_val_query``, ``num_val_gallery``.

    Raises:
        ValueError: A split is empty; an `InputError` (a ``ValueError`` too) when
            ``options.validation_fraction`` is outside ``[0, 1)`` or the training identities
            cannot provide the validation split it asks for.

    Example:

    ```python
    data = datasets.load("market1501", "/data")
    metrics = train_reid(data, "runs/reid", init="runs/pretrain", config="resnet50",
                         epochs=120, p=16, k=4, rerank=True)
    ```
    """
    options = options or ReIDTrainingConfig()
    # Only the sizes of query and gallery are looked at before the final evaluation.
    if not dataset.train or not dataset.query or not dataset.gallery:
        raise ValueError(f"{dataset.name}: train, query and gallery must all be non-empty")
    fraction = options.validation_fraction
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"validation_fraction must be in [0, 1) (0: no validation split, "
                         f"keep the last epoch), got {fraction}")
    try:
        train, val_query, val_gallery = split_reid_validation(dataset.train, fraction, seed)
    except InputError as err:
        raise InputError(f"{dataset.name}: {err}") from err
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image_size = (int(image_size[0]), int(image_size[1]))
    keras.utils.set_random_seed(seed)
    encoder = load_image_encoder(init, config=config, image_size=image_size,
                                 pooling=options.pooling)
    model_path = out / MODEL_FILE
    keep_best = _KeepBest(model_path)
    callbacks = []
    if val_query:
        evaluator = ReIDEvaluator(val_query, val_gallery, image_size,
                                  batch_size=options.eval_batch_size)
        callbacks = [ReIDEvaluationCallback(evaluator, lambda: model.embedding_model,
                                            every_n_epochs=options.eval_every), keep_best]
    callbacks.append(TerminateOnNonFiniteLoss(raise_error=True))

    if unsupervised:
        steps = options.steps_per_epoch or max(1, len(train) // (p * k))
        model = ClusterContrastReID(encoder, memory_capacity=len(train),
                                    temperature=options.temperature,
                                    memory_momentum=options.memory_momentum,
                                    hard_memory_update=options.hard_memory_update)
        model.compile(optimizer=keras.optimizers.Adam(_schedule(options, epochs, steps, False)))
        rho = None
        if options.eps == "auto" and val_query:
            # The radius follows the identity size measured on the labelled validation ids.
            per_identity = (len(val_query) + len(val_gallery)) / len({r.pid for r in val_query})
            rho = rho_for_identity_size(len(train), per_identity)
        history = fit_cluster_contrast(
            model, train, epochs, image_size, p=p, k=k, seed=seed, eps=options.eps,
            min_samples=options.min_samples, k1=options.k1, k2=options.k2,
            steps_per_epoch=steps, augment=options.augment, callbacks=callbacks,
            verbose=options.verbose, rho=rho)
    else:
        model = ReIDModel(encoder, num_classes=len({r.pid for r in train}),
                          label_smoothing=options.label_smoothing,
                          triplet_margin=options.triplet_margin)
        train_ds, steps = reid_train_dataset(train, image_size, p=p, k=k, seed=seed,
                                             augment=options.augment, epochs=epochs)
        if options.steps_per_epoch:
            train_ds, steps = train_ds.repeat(), options.steps_per_epoch
        model.compile(optimizer=keras.optimizers.Adam(_schedule(options, epochs, steps, True)))
        if options.freeze_backbone_epochs:
            callbacks.append(FreezeBackbone(options.freeze_backbone_epochs))
        epoch_log = _EpochLog()
        model.fit(train_ds, epochs=epochs, steps_per_epoch=steps, shuffle=False,
                  callbacks=[*callbacks, epoch_log], verbose=options.verbose)
        history = epoch_log.entries

    selected = keep_best.best_epoch is not None
    if not selected:
        model.save(model_path)  # never evaluated during training: keep the last weights
    elif keep_best.best_epoch != history[-1]["epoch"]:
        # The best weights are from an earlier epoch.
        model = keras.saving.load_model(model_path)
    model.backbone.save_to_preset(str(out / "image_encoder"))
    # The one read of the test split.
    metrics = evaluate_reid_model(model.embedding_model, dataset, image_size,
                                  options.eval_batch_size, rerank, out / "ranked_results.png")
    metrics.update({
        "init": init, "unsupervised": unsupervised, "epochs": epochs,
        "selection": "validation" if selected else "last_epoch",
        "best_epoch": keep_best.best_epoch if selected else epochs - 1,
        "best_val_mAP": keep_best.best if selected else None,
        "validation_fraction": float(fraction),
        "num_train_ids": len({r.pid for r in train}), "num_train_images": len(train),
        "num_val_ids": len({r.pid for r in val_query}), "num_val_query": len(val_query),
        "num_val_gallery": len(val_gallery)})
    write_json(out / "history.json", history)
    write_json(out / "metrics.json", metrics)
    return metrics
