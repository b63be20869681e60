"""`train_reid`: fine-tune an image encoder for person re-ID and write a run folder.

Supervised: BoT (`ReIDModel`, P x K batches, ID + triplet loss, warm-up and step or cosine
learning rate). Unsupervised: Cluster Contrast (`ClusterContrastReID`, pseudo-labels from
DBSCAN on the Jaccard distance every epoch). Both start from ``init``: random weights, a
VAL-PAT pretraining run, a preset folder or a keras-hub preset name. Everything but the data
and the output folder is one `ReIDRunConfig` (loadable from a JSON / YAML recipe)::

    train_reid(data, "runs/bot", ReIDRunConfig(init="runs/pretrain", epochs=120))
    train_reid(data, "runs/bot", ReIDRunConfig.from_file("recipes/market_bot.yaml"))

Model selection never looks at the test split: a few training identities are held out as a
validation query / gallery (`split_reid_validation`), the epoch with the best validation mAP is
kept, and the test query / gallery are read once, by the final `evaluate_reid_model`. Without
a validation split (``validation_fraction=0``) the last epoch is kept.

The run folder holds ``metrics.json`` (test rank-1/5/10, mAP, mINP; a ``rerank`` sub-dict
with k-reciprocal re-ranking; the selection), ``history.json`` (one entry per epoch, with the
validation ``val_rank1`` / ``val_mAP`` / ``val_mINP``), ``ranked_results.png``, the kept
model ``reid_model.keras`` and its encoder as a keras-hub preset in ``image_encoder/``, and
``verification.json``: the cosine-similarity threshold for "same person", calibrated on the
validation ids (FPR <= 1e-3), whose test TPR / FPR ``metrics.json`` reports under
``verification`` with the test ROC AUC, EER and TPR at FPR 1e-2 / 1e-3 / 1e-4.

A killed run resumes: step checkpoints (every ``checkpoint_every_steps`` steps, by default
every 10 minutes, and at each epoch end) are written to ``checkpoints/`` in the run folder;
calling `train_reid` again with the same settings continues from the latest ("resuming at
step N"): weights, optimiser, the P x K order and augmentation stream, the epoch log and the
best epoch (BoT); the round, its pseudo-labels and the cluster memory (Cluster Contrast).
The checkpoints are deleted once the run folder is written, so a finished run started
again trains afresh.

`evaluate_reid_encoder` scores a trained or pretrained encoder without training (``valpat
evaluate``); `load_reid_embedding` decides which model file an ``init`` folder provides.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np

from valpat_keras.data.pipelines import reid_train_dataset
from valpat_keras.data.records import ReIDDataset, ReIDRecord, camids_of, pids_of
from valpat_keras.data.sampler import PKSampler
from valpat_keras.data.splits import split_reid_validation
from valpat_keras.distribute import runs_with_runtime_settings
from valpat_keras.errors import InputError
from valpat_keras.evaluation.callbacks import ReIDEvaluationCallback, ReIDEvaluator
from valpat_keras.evaluation.distances import pairwise_distance
from valpat_keras.evaluation.features import FeatureSet
from valpat_keras.evaluation.plots import plot_cmc, plot_ranked_results
from valpat_keras.evaluation.reranking import re_ranking_from_features
from valpat_keras.evaluation.verification import (
    DEFAULT_TARGET_FPR,
    calibrate_from_features,
    read_calibration,
    verification_from_features,
    write_calibration,
)
from valpat_keras.models.image_encoder import IMAGE_ENCODER_CONFIGS
from valpat_keras.models.init import TRANSFER_LAST_STRIDE, load_image_encoder
from valpat_keras.models.preprocessors import ImagePreprocessor
from valpat_keras.run_outputs import write_json
from valpat_keras.schedules import REID_LEARNING_RATE, WarmupLearningRate
from valpat_keras.tasks.callbacks import TerminateOnNonFiniteLoss
from valpat_keras.tasks.checkpointing import StepCheckpoint, fit_resumable
from valpat_keras.tasks.clustering import rho_for_identity_size
from valpat_keras.tasks.reid import REID_HEADS, FreezeBackbone, ReIDModel
from valpat_keras.tasks.run_config import (
    RunConfig,
    legacy_string_keyword,
    resolve_run_config,
)
from valpat_keras.tasks.transfer_common import run_checkpoint, write_task_preset
from valpat_keras.tasks.unsupervised_reid import ClusterContrastReID, fit_cluster_contrast

__all__ = [
    "MODEL_FILE", "ReIDEvaluationConfig", "ReIDRunConfig", "ReIDTrainingConfig",
    "evaluate_reid_encoder", "evaluate_reid_model", "load_reid_embedding", "train_reid",
]

MODEL_FILE = "reid_model.keras"
_METRIC_KEYS = ("rank1", "rank5", "rank10", "mAP", "mINP", "num_valid_queries")
#: The keywords of the old ``train_reid(dataset, out_dir, init=..., ...)`` signature.
_LEGACY_KEYWORDS = ("init", "config", "unsupervised", "epochs", "p", "k", "image_size", "seed",
                    "rerank", "options")


@dataclasses.dataclass
class ReIDRunConfig(RunConfig):
    """Everything `train_reid` runs with but the data and the output folder.

    Defaults: BoT (supervised) / Cluster Contrast (unsupervised) hyper-parameters.

    Attributes:
        init: ``"random"``, a VAL-PAT pretraining run folder, a preset folder or a keras-hub
            preset name (see `load_image_encoder`).
        encoder_config: Encoder configuration for ``init="random"`` (``"tiny"``,
            ``"resnet50"``, ...); the old ``train_reid(config=...)``.
        unsupervised: Cluster Contrast instead of supervised BoT.
        epochs: Training epochs (clustering rounds when unsupervised).
        p: Identities (clusters) per batch.
        k: Images per identity.
        image_size: ``(height, width)`` of the inputs.
        seed: Seeds the weights, the sampler, the augmentation and the validation split.
        rerank: Also report k-reciprocal re-ranked scores (``metrics["rerank"]``).
        learning_rate: Peak Adam learning rate.
        lr_schedule: ``"step"`` (x0.1 at 40 % and 70 % of training) or ``"cosine"``.
        warmup_epochs: Linear warm-up epochs (supervised); None = 10 % of the epochs.
        freeze_backbone_epochs: Epochs training only the BNNeck and classifier (supervised).
        label_smoothing: Identity-loss smoothing.
        triplet_margin: Triplet margin (None = soft margin).
        validation_fraction: Share of the training identities held out (seeded by ``seed``)
            as a validation query / gallery on which the best epoch is chosen, in ``[0, 1)``;
            see `split_reid_validation`. 0 trains on every identity, evaluates nothing during
            training and keeps the last epoch (as BoT does on real data).
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
        checkpoint_every_steps: Write a step checkpoint to ``OUT/checkpoints`` every this
            many steps; None: every 10 minutes. Checkpoints are also written at each epoch
            end; a run folder with checkpoints resumes from the latest (see `train_reid`).
        mixed_precision: None, ``"mixed_bfloat16"`` or ``"mixed_float16"``: the global
            dtype policy during the run (losses in float32; `valpat_keras.distribute`).
        distribute: None, or ``"data"``: data parallelism over ``devices`` devices (JAX
            only); ``p * k`` is the global batch, split over the devices.
        devices: Devices ``distribute="data"`` uses (None: all, on every host).
        head: The supervised head: ``"bot"`` (`ReIDModel`), ``"mgn"`` (`MGNReID`) or
            ``"agw"`` (`AGWReID`); MGN and AGW need a ResNet encoder.
        head_id_loss_weight: Weight of the identity loss (MGN: of each of its 8 CE terms);
            None: the head's default (BoT 1, MGN 0.125, AGW 1).
        head_triplet_loss_weight: Weight of the triplet loss (MGN: of each of its 5
            terms); None: the head's default (BoT 1, MGN 0.2, AGW 1).
        head_triplet_margin: Triplet margin of MGN and AGW (None: soft margin, as fast-reid's
            ``TRI.MARGIN: 0.0``); BoT uses ``triplet_margin``.
        mgn_embedding_dim: MGN's per-head reduction (fast-reid: 256; 8 heads make 2048).
    """

    init: str = "random"
    encoder_config: str = "tiny"
    unsupervised: bool = False
    epochs: int = 10
    p: int = 16
    k: int = 4
    image_size: tuple[int, int] = (256, 128)
    seed: int = 0
    rerank: bool = False
    learning_rate: float = REID_LEARNING_RATE
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
    checkpoint_every_steps: int | None = None
    mixed_precision: str | None = None
    distribute: str | None = None
    devices: int | None = None
    head: str = "bot"
    head_id_loss_weight: float | None = None
    head_triplet_loss_weight: float | None = None
    head_triplet_margin: float | None = None
    mgn_embedding_dim: int = 256


#: The old name of `ReIDRunConfig` (its hyper-parameter fields are unchanged).
ReIDTrainingConfig = ReIDRunConfig


@dataclasses.dataclass
class ReIDEvaluationConfig(RunConfig):
    """What `evaluate_reid_encoder` (``valpat evaluate``) scores, and how.

    Attributes:
        init: A `valpat reid` run folder, a pretraining run or preset folder, a keras-hub
            preset name or ``"random"`` (see `load_reid_embedding`).
        encoder_config: Encoder configuration for ``init="random"``.
        image_size: ``(height, width)`` the images are resized to.
        batch_size: Images per forward pass.
        rerank: Also score k-reciprocal re-ranked distances.
        target_fpr: The validation false-positive rate a verification threshold is
            calibrated to, when ``init`` has no ``verification.json`` of its own.
        validation_fraction: Share of the dataset's train identities held out (as
            `split_reid_validation` does in training) to calibrate that threshold on; 0
            reports no threshold.
        seed: Seeds that validation split.
    """

    init: str = "random"
    encoder_config: str = "tiny"
    image_size: tuple[int, int] = (256, 128)
    batch_size: int = 64
    rerank: bool = False
    target_fpr: float = DEFAULT_TARGET_FPR
    validation_fraction: float = 0.1
    seed: int = 0


class _Splits(NamedTuple):
    """The training records and the validation query / gallery held out of them."""

    train: list[ReIDRecord]
    val_query: list[ReIDRecord]
    val_gallery: list[ReIDRecord]


def _json_float(value: float) -> float | None:
    """``value``, or None when not finite (strict JSON for the checkpoint metadata)."""
    return float(value) if math.isfinite(float(value)) else None


class _EpochLog(keras.callbacks.Callback):
    """Keeps each epoch's logs whole (``History`` misaligns keys logged only some epochs).

    Its entries are saved with each step checkpoint and restored with it.
    """

    def __init__(self):
        super().__init__()
        self.entries: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        self.entries.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})

    def get_resume_state(self) -> list[dict]:
        return [{k: _json_float(v) if k != "epoch" else v for k, v in e.items()}
                for e in self.entries]

    def set_resume_state(self, state: list[dict]) -> None:
        self.entries = [{k: v if k == "epoch" else (math.nan if v is None else float(v))
                         for k, v in e.items()} for e in state]


class _KeepBest(keras.callbacks.Callback):
    """Saves the model whenever the logged validation mAP improves (across repeated fits).

    The file is written to a temporary name and renamed into place (a kill during the save
    leaves the previous best), before the epoch-end step checkpoint (`EpochEndSave` runs
    after this callback) that records ``best`` / ``best_epoch``. A kill between the two
    resumes from an earlier checkpoint, which replays the epoch and writes the file again.
    """

    def __init__(self, path: Path, monitor: str = "val_mAP"):
        super().__init__()
        self.path, self.monitor = path, monitor
        self.best, self.best_epoch = -math.inf, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.best:
            self.best, self.best_epoch = float(value), epoch
            self.save(self.model)

    def save(self, model) -> None:
        """Writes ``model`` to ``path`` atomically (temporary ``.keras`` file, then rename)."""
        tmp = self.path.with_name(f".{self.path.stem}.tmp{os.getpid()}.keras")
        model.save(tmp)
        os.replace(tmp, self.path)

    def get_resume_state(self) -> dict:
        best = None if self.best_epoch is None else _json_float(self.best)
        return {"best": best, "best_epoch": self.best_epoch}

    def set_resume_state(self, state: dict) -> None:
        self.best_epoch = state["best_epoch"]
        self.best = -math.inf if state["best"] is None else float(state["best"])
        if self.best_epoch is not None and not self.path.is_file():
            raise InputError(f"{self.path}: missing; the checkpoints record the best epoch "
                             f"({self.best_epoch + 1}) as saved there. Delete the checkpoints "
                             "folder to start over.")


def _num_ids(records) -> int:
    return int(np.unique(pids_of(records)).size)


def _schedule(config: ReIDRunConfig, steps: int, warmup: bool) -> WarmupLearningRate:
    total = config.epochs * steps
    warmup_epochs = config.warmup_epochs
    if warmup_epochs is None:
        warmup_epochs = max(0, round(0.1 * config.epochs)) if warmup else 0
    return WarmupLearningRate(
        config.learning_rate, warmup_steps=warmup_epochs * steps, total_steps=total,
        mode=config.lr_schedule, milestones=(round(0.4 * total), round(0.7 * total)))


# --- Evaluation -----------------------------------------------------------------------------


def _headline(result: Mapping) -> dict:
    """The JSON-ready scores of one ranking: the metrics and the first 20 CMC values."""
    out = {key: float(result[key]) for key in _METRIC_KEYS}
    out["num_valid_queries"] = int(result["num_valid_queries"])
    out["cmc"] = [float(v) for v in np.asarray(result["cmc"])[:20]]
    return out


def _plot_first_queries(query: FeatureSet, gallery: FeatureSet, rerank: bool,
                        path: str | Path) -> None:
    shown = min(len(query), 6)
    if rerank:
        distmat = re_ranking_from_features(query.features, gallery.features,
                                           metric="cosine")[:shown]
    else:
        distmat = pairwise_distance(query.features[:shown], gallery.features, "cosine")
    plot_ranked_results(query.paths[:shown], gallery.paths, distmat, query.pids[:shown],
                        gallery.pids, query.camids[:shown], gallery.camids, num_queries=shown,
                        topk=min(10, len(gallery)), path=str(path))


def evaluate_reid_model(model, dataset: ReIDDataset, image_size: tuple[int, int],
                        batch_size: int = 64, rerank: bool = False,
                        plot_path: str | Path | None = None,
                        threshold: float | None = None) -> dict:
    """Scores an embedding model on a dataset's query / gallery split.

    Cosine distance between flip-averaged, L2-normalised embeddings, the Market-1501
    protocol, computed blockwise so memory does not grow with Q x G (`ReIDEvaluator`).
    Verification (`valpat_keras.evaluation.verification`): the ROC of the cosine
    similarities of the query-gallery pairs (same pid and camera removed, as for CMC).

    Args:
        model: Maps float32 images in [0, 1] to embeddings (e.g. `ReIDModel.embedding_model`
            or an `ImageEncoder`).
        dataset: The `ReIDDataset` whose ``query`` and ``gallery`` are scored.
        image_size: ``(height, width)`` the images are resized to.
        batch_size: Images per forward pass.
        rerank: Also score k-reciprocal re-ranked distances (under ``"rerank"``).
        plot_path: Where to save the ranked-results figure of the first queries, or None.
        threshold: A cosine-similarity threshold calibrated on validation, to report the
            test TPR / FPR at; None reports none.

    Returns:
        ``rank1``, ``rank5``, ``rank10``, ``mAP``, ``mINP``, ``num_valid_queries``, the first
        20 CMC values, ``verification`` (``roc_auc``, ``eer``, ``tpr@fpr=1e-02`` /
        ``1e-03`` / ``1e-04``, pair counts and, with ``threshold``, ``threshold``,
        ``tpr_at_threshold``, ``fpr_at_threshold``) and, with ``rerank``, the ranking
        scores under ``"rerank"``.
    """
    evaluator = ReIDEvaluator(dataset.query, dataset.gallery, tuple(image_size), batch_size,
                              metric="cosine")
    query, gallery = evaluator.extract(model)
    metrics = _headline(evaluator.score(query, gallery, rerank=False))
    metrics["verification"] = verification_from_features(query, gallery, threshold)
    if rerank:
        metrics["rerank"] = _headline(evaluator.score(query, gallery, rerank=True))
    if plot_path is not None:
        _plot_first_queries(query, gallery, rerank, plot_path)
    return metrics


def calibrate_reid_threshold(model, val_query: list[ReIDRecord], val_gallery: list[ReIDRecord],
                             image_size: tuple[int, int], batch_size: int = 64,
                             target_fpr: float = DEFAULT_TARGET_FPR) -> dict | None:
    """A verification threshold calibrated on a validation query / gallery (never test).

    Features are extracted as for the test scores (`ReIDEvaluator`: flip-averaged,
    L2-normalised); the threshold is the highest-TPR cosine similarity whose FPR over the
    validation pairs is ``<= target_fpr`` (`calibrate_from_features`).

    Returns:
        The ``verification.json`` dict (with ``num_val_query`` / ``num_val_gallery``), or
        None when the validation split is empty.
    """
    if not val_query or not val_gallery:
        return None
    evaluator = ReIDEvaluator(val_query, val_gallery, tuple(image_size), batch_size,
                              metric="cosine")
    calibration = calibrate_from_features(*evaluator.extract(model), target_fpr)
    calibration.update(num_val_query=len(val_query), num_val_gallery=len(val_gallery))
    return calibration


def _encoder_calibration(model, dataset: ReIDDataset, config: ReIDEvaluationConfig) -> dict:
    """``init``'s own ``verification.json``, else one calibrated on held-out train ids."""
    calibration = read_calibration(config.init)
    if calibration is not None:
        return {**calibration, "source": str(Path(config.init) / "verification.json")}
    if not dataset.train or config.validation_fraction == 0:
        return {"source": None, "reason": "no train split to calibrate on" if not dataset.train
                else "validation_fraction is 0"}
    try:
        _, val_query, val_gallery = split_reid_validation(
            dataset.train, config.validation_fraction, config.seed)
    except InputError as err:
        return {"source": None, "reason": str(err)}
    calibration = calibrate_reid_threshold(model, val_query, val_gallery,
                                           tuple(config.image_size), config.batch_size,
                                           config.target_fpr)
    return {**calibration, "source": f"validation split of {dataset.name} train "
                                     f"(fraction {config.validation_fraction}, seed "
                                     f"{config.seed})"}


def load_reid_embedding(init: str, encoder_config: str = "tiny",
                        image_size: tuple[int, int] = (256, 128)) -> keras.Model:
    """The embedding model an ``init`` provides for evaluation.

    Args:
        init: A `valpat reid` run folder (its ``reid_model.keras`` BNNeck embedding), a
            pretraining run or preset folder (the pooled image-encoder feature), a keras-hub
            preset name, or ``"random"``.
        encoder_config: Encoder configuration for ``init="random"``.
        image_size: ``(height, width)`` of the inputs (for an encoder built here).

    Raises:
        InputError: A ``reid_model.keras`` that does not load, or an ``init`` that
            `load_image_encoder` cannot read.
    """
    reid_model = Path(init) / MODEL_FILE
    if not reid_model.is_file():
        return load_image_encoder(init, config=encoder_config, image_size=tuple(image_size),
                                  last_stride=TRANSFER_LAST_STRIDE)
    try:
        model = keras.saving.load_model(reid_model)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise InputError(f"{reid_model}: cannot load the re-ID model ({err}); expected the "
                         "reid_model.keras a `valpat reid` run writes") from err
    return model.embedding_model


def evaluate_reid_encoder(dataset: ReIDDataset, out_dir: str | Path,
                          config: ReIDEvaluationConfig | None = None,
                          record: Mapping[str, Any] | None = None) -> dict:
    """Scores ``config.init`` on the query / gallery split and writes the results folder.

    Writes ``metrics.json`` (the `evaluate_reid_model` scores, ``record`` and ``init``),
    ``ranked_results.png`` and ``cmc.png`` (plain and, with ``rerank``, re-ranked CMC).
    The verification threshold is ``init``'s ``verification.json`` (a `valpat reid` run
    calibrates one on its validation ids), else one calibrated here on identities held out
    of ``dataset.train`` (`split_reid_validation`, ``config.seed``), never on the test
    split; ``metrics["verification"]["calibration"]`` says which, or why there is none.

    Args:
        dataset: The `ReIDDataset` whose ``query`` and ``gallery`` are scored.
        out_dir: Output folder (created).
        config: What to score; `ReIDEvaluationConfig()` when None.
        record: Extra entries for ``metrics.json`` (e.g. the ``--data`` value).

    Returns:
        The metrics written.
    """
    config = config or ReIDEvaluationConfig()
    image_size = tuple(int(v) for v in config.image_size)
    model = load_reid_embedding(config.init, config.encoder_config, image_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    calibration = _encoder_calibration(model, dataset, config)
    metrics = evaluate_reid_model(model, dataset, image_size, config.batch_size,
                                  rerank=config.rerank, plot_path=out / "ranked_results.png",
                                  threshold=calibration.get("threshold"))
    metrics["verification"]["calibration"] = calibration
    curves = {"plain": metrics["cmc"]}
    if "rerank" in metrics:
        curves["re-ranked"] = metrics["rerank"]["cmc"]
    plot_cmc(curves, path=str(out / "cmc.png"))
    metrics.update({**(record or {}), "init": config.init})
    write_json(out / "metrics.json", metrics)
    return metrics


# --- Training steps -------------------------------------------------------------------------


def _legacy_arguments(config, legacy: dict) -> tuple[ReIDRunConfig | None, dict]:
    """Maps the old ``train_reid`` keywords onto a base config and field overrides.

    The old ``config`` was the encoder configuration name (now ``encoder_config``), and
    ``options`` the hyper-parameter config (now the one ``config``).
    """
    unknown = sorted(set(legacy) - set(_LEGACY_KEYWORDS))
    if unknown:
        raise TypeError(f"train_reid() got unexpected keyword argument(s) {unknown}")
    legacy = dict(legacy)
    if isinstance(config, str):
        legacy[legacy_string_keyword(config, legacy, IMAGE_ENCODER_CONFIGS)] = config
        config = None
    options = legacy.pop("options", None)
    if options is not None:
        if config is not None:
            raise TypeError("train_reid(): pass either config=ReIDRunConfig(...) or the old "
                            "options=, not both")
        config = options
        if not legacy:
            warnings.warn("train_reid(options=...) is deprecated and will be removed in the "
                          "next release; pass ReIDRunConfig(...) as config instead",
                          DeprecationWarning, stacklevel=3)
    return config, legacy


def _split_training_ids(dataset: ReIDDataset, config: ReIDRunConfig) -> _Splits:
    """Checks the splits and holds the validation identities out of ``train``."""
    # Only the sizes of query and gallery are looked at before the final evaluation.
    if not dataset.train or not dataset.query or not dataset.gallery:
        raise ValueError(f"{dataset.name}: train, query and gallery must all be non-empty")
    fraction = config.validation_fraction
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"validation_fraction must be in [0, 1) (0: no validation split, "
                         f"keep the last epoch), got {fraction}")
    try:
        return _Splits(*split_reid_validation(dataset.train, fraction, config.seed))
    except InputError as err:
        raise InputError(f"{dataset.name}: {err}") from err


def _build_task(config: ReIDRunConfig, train: list[ReIDRecord]):
    """The seeded encoder from ``config.init`` under a BoT or Cluster Contrast task."""
    keras.utils.set_random_seed(config.seed)
    if config.unsupervised and config.head != "bot":
        raise InputError(f"head={config.head!r} is a supervised head; unsupervised training "
                         "is Cluster Contrast (leave head at 'bot')")
    encoder = load_image_encoder(config.init, config=config.encoder_config,
                                 image_size=config.image_size, pooling=config.pooling,
                                 last_stride=TRANSFER_LAST_STRIDE)
    if config.unsupervised:
        return ClusterContrastReID(encoder, memory_capacity=len(train),
                                   temperature=config.temperature,
                                   memory_momentum=config.memory_momentum,
                                   hard_memory_update=config.hard_memory_update)
    return _supervised_head(config, encoder, _num_ids(train))


def _supervised_head(config: ReIDRunConfig, encoder, num_classes: int):
    """The ``config.head`` task (BoT, MGN or AGW) on ``encoder``, with its loss weights."""
    if config.head not in REID_HEADS:
        raise InputError(f"head must be one of {sorted(REID_HEADS)}, got {config.head!r}")
    kwargs = {"num_classes": num_classes, "label_smoothing": config.label_smoothing,
              "triplet_margin": config.triplet_margin}
    if config.head != "bot":
        kwargs["triplet_margin"] = config.head_triplet_margin
    if config.head == "mgn":
        kwargs["embedding_dim"] = config.mgn_embedding_dim
    if config.head_id_loss_weight is not None:
        kwargs["id_loss_weight"] = config.head_id_loss_weight
    if config.head_triplet_loss_weight is not None:
        kwargs["triplet_loss_weight"] = config.head_triplet_loss_weight
    return REID_HEADS[config.head](encoder, **kwargs)


def _selection_callbacks(model, splits: _Splits, config: ReIDRunConfig,
                         keep_best: _KeepBest) -> list[keras.callbacks.Callback]:
    """Validation scoring and best-epoch saving (when there is a validation split)."""
    callbacks = []
    if splits.val_query:
        evaluator = ReIDEvaluator(splits.val_query, splits.val_gallery, config.image_size,
                                  batch_size=config.eval_batch_size)
        callbacks = [ReIDEvaluationCallback(evaluator, lambda: model.embedding_model,
                                            every_n_epochs=config.eval_every), keep_best]
    callbacks.append(TerminateOnNonFiniteLoss(raise_error=True))
    return callbacks


def _checkpoint(out: Path, config: ReIDRunConfig, splits: _Splits) -> StepCheckpoint:
    """The run's `StepCheckpoint` in ``out/checkpoints``, signed with its settings."""
    return run_checkpoint(out, config, num_train_images=len(splits.train),
                          num_train_ids=_num_ids(splits.train))


def _fit_supervised(model: ReIDModel, splits: _Splits, config: ReIDRunConfig,
                    callbacks: list, checkpoint: StepCheckpoint) -> list[dict]:
    """BoT: P x K batches of the training ids, warm-up then step / cosine decay.

    Resumes exactly from ``checkpoint`` (`fit_resumable`): the P x K stream continues at
    the restored step (`reid_train_dataset` ``start_step``), the epoch log and the best
    epoch are restored, and `FreezeBackbone` follows the epoch training resumes in.
    """
    def train_data(step: int):
        return reid_train_dataset(splits.train, config.image_size, p=config.p, k=config.k,
                                  seed=config.seed, augment=config.augment,
                                  epochs=config.epochs, start_step=step)[0]

    steps = config.steps_per_epoch or PKSampler(
        pids_of(splits.train).tolist(), camids_of(splits.train).tolist(), p=config.p,
        k=config.k, seed=config.seed).num_batches
    model.compile(optimizer=keras.optimizers.Adam(_schedule(config, steps, warmup=True)))
    if config.freeze_backbone_epochs:
        callbacks = [*callbacks, FreezeBackbone(config.freeze_backbone_epochs)]
    epoch_log = _EpochLog()
    fit_resumable(model, train_data, epochs=config.epochs, steps_per_epoch=steps,
                  checkpoint=checkpoint, callbacks=[*callbacks, epoch_log],
                  verbose=config.verbose)
    return epoch_log.entries


def _auto_eps_rho(config: ReIDRunConfig, splits: _Splits) -> float | None:
    """SSG's ``rho`` for ``eps="auto"``, scaled to the validation ids' identity size."""
    if config.eps != "auto" or not splits.val_query:
        return None
    per_identity = (len(splits.val_query) + len(splits.val_gallery)) / _num_ids(splits.val_query)
    return rho_for_identity_size(len(splits.train), per_identity)


def _fit_unsupervised(model: ClusterContrastReID, splits: _Splits, config: ReIDRunConfig,
                      callbacks: list, checkpoint: StepCheckpoint) -> list[dict]:
    """Cluster Contrast: re-cluster the training images, then one epoch, every round."""
    steps = config.steps_per_epoch or max(1, len(splits.train) // (config.p * config.k))
    model.compile(optimizer=keras.optimizers.Adam(_schedule(config, steps, warmup=False)))
    return fit_cluster_contrast(
        model, splits.train, config.epochs, config.image_size, p=config.p, k=config.k,
        seed=config.seed, eps=config.eps, min_samples=config.min_samples, k1=config.k1,
        k2=config.k2, steps_per_epoch=steps, augment=config.augment, callbacks=callbacks,
        verbose=config.verbose, rho=_auto_eps_rho(config, splits), checkpoint=checkpoint)


def _kept_model(model, keep_best: _KeepBest, history: list[dict]):
    """The model of the kept epoch, saved at ``keep_best.path``."""
    if keep_best.best_epoch is None:
        keep_best.save(model)  # never evaluated during training: keep the last weights
        return model
    if keep_best.best_epoch != history[-1]["epoch"]:
        # The best weights are from an earlier epoch.
        return keras.saving.load_model(keep_best.path)
    return model


def _selection_summary(config: ReIDRunConfig, keep_best: _KeepBest, splits: _Splits) -> dict:
    """How the kept epoch was chosen, and the split sizes (for ``metrics.json``)."""
    selected = keep_best.best_epoch is not None
    return {
        "init": config.init, "unsupervised": config.unsupervised, "epochs": config.epochs,
        "head": "cluster_contrast" if config.unsupervised else config.head,
        "selection": "validation" if selected else "last_epoch",
        "best_epoch": keep_best.best_epoch if selected else config.epochs - 1,
        "best_val_mAP": keep_best.best if selected else None,
        "validation_fraction": float(config.validation_fraction),
        "num_train_ids": _num_ids(splits.train), "num_train_images": len(splits.train),
        "num_val_ids": _num_ids(splits.val_query), "num_val_query": len(splits.val_query),
        "num_val_gallery": len(splits.val_gallery)}


def _evaluate_and_write(model, dataset: ReIDDataset, out: Path, config: ReIDRunConfig,
                        summary: dict, history: list[dict]) -> dict:
    """Calibrates the verification threshold on validation, then the one read of the test
    split, the encoder preset and the JSON files (``verification.json`` when calibrated)."""
    model.backbone.save_to_preset(str(out / "image_encoder"))
    # The same seeded split as training used (deterministic), so no test data is involved.
    splits = _split_training_ids(dataset, config)
    calibration = calibrate_reid_threshold(model.embedding_model, splits.val_query,
                                           splits.val_gallery, config.image_size,
                                           config.eval_batch_size, DEFAULT_TARGET_FPR)
    if calibration is not None:
        write_calibration(out, calibration)
    metrics = evaluate_reid_model(model.embedding_model, dataset, config.image_size,
                                  config.eval_batch_size, config.rerank,
                                  out / "ranked_results.png",
                                  threshold=calibration and calibration["threshold"])
    metrics["verification"]["calibration"] = (
        {**calibration, "source": str(out / "verification.json")} if calibration else
        {"source": None, "reason": "no validation split (validation_fraction is 0)"})
    metrics.update(summary)
    write_json(out / "history.json", history)
    write_json(out / "metrics.json", metrics)
    write_task_preset(model, out, ImagePreprocessor.for_encoder(model.backbone))
    return metrics


@runs_with_runtime_settings(lambda config: config.p * config.k, "P x K (--p x --k)")
def train_reid(dataset: ReIDDataset, out_dir: str | Path,
               config: ReIDRunConfig | None = None, **legacy) -> dict:
    """Fine-tunes an image encoder for re-ID on ``dataset`` and writes the run folder.

    Steps: hold validation ids out of ``train`` → build the task on ``config.init`` → fit
    (BoT or Cluster Contrast, keeping the best validation epoch) → score the test query /
    gallery once → write the run folder.

    Args:
        dataset: A `ReIDDataset` (train / query / gallery). Training and model selection
            use ``train`` only; ``query`` and ``gallery`` are read once, for the final
            scores. Unsupervised training uses the train pids only to hold out the
            validation identities and to log the pseudo-labels' ARI / NMI.
        out_dir: Run folder (created).
        config: The run settings; `ReIDRunConfig()` when None.
        **legacy: The old keywords (``init``, ``config`` as the encoder configuration name,
            ``unsupervised``, ``epochs``, ``p``, ``k``, ``image_size``, ``seed``, ``rerank``,
            ``options``), deprecated: they still work for one release, with a
            `DeprecationWarning`.

    Returns:
        The metrics written to ``metrics.json``: the test ``rank1``, ``rank5``, ``rank10``,
        ``mAP``, ``mINP`` (fractions), ``num_valid_queries``, ``cmc`` (first 20 ranks), and
        ``rerank`` (the same keys) when asked; ``init``, ``unsupervised``, ``epochs``; how
        the kept epoch was chosen: ``selection`` (``"validation"``, or ``"last_epoch"`` when
        nothing was evaluated), ``best_epoch`` (0-based, the kept epoch), ``best_val_mAP``
        (None without validation); and the split sizes: ``validation_fraction``,
        ``num_train_ids``, ``num_train_images``, ``num_val_ids``, ``num_val_query``,
        ``num_val_gallery``.

    Raises:
        ValueError: A split is empty; an `InputError` (a ``ValueError`` too) when
            ``config.validation_fraction`` is outside ``[0, 1)`` or the training identities
            cannot provide the validation split it asks for.

    Example:

    ```python
    data = datasets.load("market1501", "/data")
    metrics = train_reid(data, "runs/reid", ReIDRunConfig(
        init="runs/pretrain", encoder_config="resnet50", epochs=120, rerank=True))
    ```
    """
    config, legacy = _legacy_arguments(config, legacy)
    config = resolve_run_config(ReIDRunConfig, config, legacy, "train_reid",
                                renamed={"config": "encoder_config"})
    config = config.replace(image_size=tuple(int(v) for v in config.image_size))
    splits = _split_training_ids(dataset, config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = _build_task(config, splits.train)
    keep_best = _KeepBest(out / MODEL_FILE)
    callbacks = _selection_callbacks(model, splits, config, keep_best)
    fit = _fit_unsupervised if config.unsupervised else _fit_supervised
    history = fit(model, splits, config, callbacks, _checkpoint(out, config, splits))
    model = _kept_model(model, keep_best, history)
    metrics = _evaluate_and_write(model, dataset, out, config,
                                  _selection_summary(config, keep_best, splits), history)
    # Only now: a kill while the run folder was written resumes at the last step.
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return metrics
