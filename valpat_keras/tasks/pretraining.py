"""`pretrain`: VAL-PAT pretraining from data to a run directory (what `valpat pretrain` runs).

`pretrain(data, out_dir, PretrainConfig(...))` reads as its steps: load the data
(`load_pretrain_data`), plan the run from the data size (`plan_pretraining`), build the
tokenizer, the input pipeline and the task (`build_pretrainer`), fit (`fit_pretrainer`) and
write the run folder (`valpat_keras.run_outputs.write_pretraining_run`). Old keyword calls
(``pretrain(data, out, config="tiny", steps=600)``) still work for one release, with a
`DeprecationWarning`.

The run directory holds everything the transfer tasks and a resumed run need:

```
RUN_DIR/config.json        the run's settings (`PretrainConfig` plus what was derived)
RUN_DIR/history.json       per-epoch value of every logged loss and metric
RUN_DIR/loss_curves.png    the losses and accuracies per epoch
RUN_DIR/pretrainer.keras   the whole ValPatPretrainer (momentum encoder and queue included)
RUN_DIR/image_encoder/     keras-hub preset of the image encoder (`load_image_encoder`)
RUN_DIR/backbone/          keras-hub preset of the ValPatBackbone (`load_backbone`)
RUN_DIR/backbone/tokenizer/  the caption tokenizer
RUN_DIR/checkpoints/       step checkpoints while a run is unfinished (`StepCheckpoint`)
```

A run directory with checkpoints resumes exactly: weights, optimiser, momentum encoder,
queue, the epoch's running metrics, the data order and the augmentation stream continue
from the last checkpoint (written every ``checkpoint_every_steps`` steps, by default every
10 minutes, and at each epoch end), and ``history.json`` holds every epoch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

from valpat_keras import datasets
from valpat_keras.data.pipelines import pretrain_dataset
from valpat_keras.data.records import PretrainDataset
from valpat_keras.data.shards import INDEX_FILE as SHARD_INDEX
from valpat_keras.data.shards import ShardPretrainDataset, shard_pretrain_dataset
from valpat_keras.data.synthped import SynthPedConfig, ensure_synthped
from valpat_keras.data.tokenizer import CaptionTokenizer
from valpat_keras.distribute import runtime_scope
from valpat_keras.errors import InputError, NonFiniteLossError
from valpat_keras.losses.attribute import positive_ratios
from valpat_keras.models import ValPatBackbone, build_image_encoder, build_text_encoder
from valpat_keras.models.init import image_encoder_from_preset
from valpat_keras.models.text_encoder import load_text_tokenizer
from valpat_keras.run_outputs import plot_history, write_history, write_json, write_pretraining_run
from valpat_keras.tasks.callbacks import TerminateOnNonFiniteLoss
from valpat_keras.tasks.checkpointing import DEFAULT_EVERY_SECONDS, StepCheckpoint, fit_resumable
from valpat_keras.tasks.pretrain_config import PRETRAIN_CONFIGS, RENAMED, PretrainConfig
from valpat_keras.tasks.pretrainer import ValPatPretrainer
from valpat_keras.tasks.run_config import resolve_run_config

__all__ = ["PRETRAIN_CONFIGS", "PretrainConfig", "PretrainPlan", "StopAtStep",
           "build_pretrainer", "default_momentum", "default_queue_size", "fit_pretrainer",
           "load_pretrain_data", "plan_pretraining", "plot_history", "pretrain",
           "run_config_of"]


def load_pretrain_data(data: PretrainDataset | str | Path | None, out_dir: Path,
                       synthped_preset: str = "small", seed: int = 0) -> PretrainDataset:
    """Resolves the ``data`` argument of `pretrain` into a `PretrainDataset`.

    Args:
        data: A dataset; a manifest file or a folder with ``manifest.jsonl``
            (``luperson_ta`` loader); a ``valpat pack`` shard folder (``shards``: streamed
            with a parallel interleave); a LUPerson LMDB tree with ``keys.pkl``
            (``luperson_lmdb``); a SynthPed output folder (its ``pretrain/``); a folder
            of images (``image_folder``: no captions, no attributes); or ``None``: SynthPed
            (``synthped_preset``) in ``out_dir/synthped``, generated unless already written
            with the same config (`ensure_synthped`). Files read from a path have every
            image decoded (once, cached): unreadable ones are dropped and reported.
        out_dir: The run directory.
        synthped_preset: SynthPed size generated when ``data`` is None.
        seed: SynthPed seed.

    Returns:
        The pretraining records.
    """
    if isinstance(data, PretrainDataset):
        return data
    if data is None:
        root = Path(out_dir) / "synthped"
        info = ensure_synthped(
            root, SynthPedConfig.preset(synthped_preset, seed=seed),
            progress=lambda _: print(f"No --data: generating SynthPed ({synthped_preset}) "
                                     f"in {root}"))
        return datasets.load("luperson_ta", str(info.paths["pretrain_manifest"]))
    path = Path(data)
    if (path / "pretrain" / "manifest.jsonl").is_file():
        path = path / "pretrain"
    if (path / SHARD_INDEX).is_file():  # `valpat pack` output: streamed, not re-read per image
        return datasets.load("shards", str(path))
    if (path / "keys.pkl").is_file() or (path / "lupnl_lmdb" / "keys.pkl").is_file():
        return datasets.load("luperson_lmdb", str(path))
    # A user's files: unreadable images are dropped, counted and reported before training
    # rather than failing inside the input pipeline later.
    if path.is_file() or (path / "manifest.jsonl").is_file():
        return datasets.load("luperson_ta", str(path), verify_images=True)
    return datasets.load("image_folder", str(path), verify_images=True)


def _attribute_matrix(dataset: PretrainDataset) -> np.ndarray | None:
    rows = [r.attributes for r in dataset.records if r.attributes is not None]
    if not rows:
        return None
    width = len(rows[0])
    return np.stack([np.asarray(r.attributes if r.attributes is not None else -np.ones(width))
                     for r in dataset.records]).astype("float32")


def _resolve_objectives(objectives: tuple[str, ...], loss_weights: Mapping[str, float] | None,
                        dataset: PretrainDataset) -> dict[str, float]:
    weights = {name: float((loss_weights or {}).get(name, 1.0)) for name in objectives}
    has_captions = any(r.captions for r in dataset.records)
    has_attributes = any(r.attributes is not None for r in dataset.records)
    for name, available, what in (("itc", has_captions, "captions"),
                                  ("attr", has_attributes, "attribute labels")):
        if weights.get(name) and not available:
            warnings.warn(f"{dataset.name} ({dataset.root}) has no {what}: the '{name}' "
                          "objective is switched off.", UserWarning, stacklevel=4)
            weights.pop(name)
    weights = {k: v for k, v in weights.items() if v}
    if not weights:
        raise InputError(f"No objective left to train on {dataset.name} ({dataset.root}); "
                         "ssl needs only images, itc captions, attr attribute labels.")
    return weights


def default_queue_size(num_images: int, batch_size: int, config_queue_size: int) -> int:
    """The MoCo queue length for a dataset: the config's, capped at a quarter of the images.

    MoCo's queue is a small fraction of its data (65,536 keys for 1.28M images). A queue as
    long as the dataset holds stale keys of the query's own image and of its identity's other
    images as negatives, which caps the image-image accuracy: SynthPed small has 1,500
    pretraining images, and the former fixed 4,096-key queue held every image 2.7 times.

    Args:
        num_images: Images in the pretraining set.
        batch_size: Images per step (the queue is a multiple of it).
        config_queue_size: The configuration's queue length (the upper bound).

    Returns:
        A multiple of ``batch_size``, or 0 (in-batch negatives only) when a quarter of the
        data is less than one batch.
    """
    cap = (int(num_images) // 4) // int(batch_size) * int(batch_size)
    return int(min(int(config_queue_size), cap))


def default_momentum(total_steps: int) -> float:
    """Key-encoder EMA momentum suited to a run of ``total_steps`` optimiser steps.

    The key encoder keeps ``momentum ** steps`` of its random initialisation: 0.999 keeps
    61 % of it after a 500-step CPU run, so the keys stay close to a random network the whole
    run. The momentum is ``1 - 20 / total_steps`` (the EMA spans about a twentieth of the
    run) clipped to [0.99, 0.999]: MoCo's 0.999 for long runs, 0.99 for short ones.

    Args:
        total_steps: Optimiser steps of the run.

    Returns:
        The momentum.
    """
    return float(np.clip(1.0 - 20.0 / max(int(total_steps), 1), 0.99, 0.999))


class StopAtStep(keras.callbacks.Callback):
    """Stops ``fit`` once the optimiser has made ``steps`` steps in total.

    Args:
        steps: The total number of optimiser steps of the run.
    """

    def __init__(self, steps: int):
        super().__init__()
        self.steps = int(steps)

    def on_train_batch_end(self, batch, logs=None):
        # The optimiser's counter survives BackupAndRestore; a Python counter would not.
        if int(self.model.optimizer.iterations.numpy()) >= self.steps:
            self.model.stop_training = True


@dataclasses.dataclass
class PretrainPlan:
    """What a `PretrainConfig` means for one dataset: objectives, run length, queue, momentum.

    Attributes:
        weights: The active objectives and their loss weights.
        steps_per_epoch: Optimiser steps per logged epoch.
        num_epochs: Logged epochs.
        total_steps: Optimiser steps of the whole run.
        queue_size: The MoCo queue length (a multiple of the batch size, or 0).
        momentum: The key encoder's EMA momentum.
        image_size: (height, width) of the inputs.
    """

    weights: dict[str, float]
    steps_per_epoch: int
    num_epochs: int
    total_steps: int
    queue_size: int
    momentum: float
    image_size: tuple[int, int]


def _check_enough_images(dataset: PretrainDataset, batch_size: int) -> None:
    if not dataset.records:
        dropped = sum(dataset.skipped.values())
        raise InputError(f"{dataset.root}: no images to pretrain on"
                         + (f" ({dropped} dropped: see the summary)" if dropped else "")
                         + f"; expected at least one batch ({batch_size}) of readable images")
    if len(dataset.records) // batch_size == 0:
        raise InputError(f"{dataset.name} ({dataset.root}) has {len(dataset.records)} images, "
                         f"fewer than one batch of {batch_size}; lower the batch size "
                         "(--batch-size).")


def plan_pretraining(dataset: PretrainDataset, config: PretrainConfig) -> PretrainPlan:
    """Resolves the data-dependent settings of a run (see `PretrainPlan`).

    Raises:
        InputError: No images, fewer than one batch, or no objective the data supports.
    """
    weights = _resolve_objectives(config.objectives, config.loss_weights, dataset)
    batch_size = int(config.batch_size)
    _check_enough_images(dataset, batch_size)
    num_batches = len(dataset.records) // batch_size
    if config.steps is not None:
        steps_per_epoch = min(int(config.steps), num_batches)
        num_epochs = math.ceil(int(config.steps) / steps_per_epoch)
        total_steps = int(config.steps)
    else:
        steps_per_epoch, num_epochs = num_batches, int(config.epochs or 1)
        total_steps = num_epochs * num_batches
    queue_size = config.queue_size
    if queue_size is None:
        queue_size = default_queue_size(len(dataset.records), batch_size,
                                        config.preset["queue_size"])
    momentum = (default_momentum(total_steps) if config.momentum is None
                else float(config.momentum))
    return PretrainPlan(weights=weights, steps_per_epoch=steps_per_epoch,
                        num_epochs=num_epochs, total_steps=total_steps,
                        queue_size=int(queue_size), momentum=momentum,
                        image_size=config.resolved_image_size)


def _run_record(data, config: PretrainConfig, plan: PretrainPlan) -> dict[str, Any]:
    """The ``config.json`` of a run: its settings with the derived queue and momentum."""
    return {
        "data": None if data is None else str(getattr(data, "root", data)),
        "config": config.encoder_config, "objectives": list(config.objectives),
        "loss_weights": dict(config.loss_weights or {}), "epochs": config.epochs,
        "steps": config.steps, "batch_size": config.batch_size,
        "image_size": list(plan.image_size), "seed": config.seed,
        "queue_size": plan.queue_size, "learning_rate": config.learning_rate,
        "mixed_precision": config.mixed_precision, "momentum": plan.momentum,
        "momentum_schedule": config.momentum_schedule,
        "vocabulary_size": config.vocabulary_size, "sequence_length": config.sequence_length,
        "augment": config.augment, "backend": keras.backend.backend(),
        **{name: getattr(config, name) for name in ("text_preset", "image_preset")
           if getattr(config, name)},
        **({"pixel_normalization": config.resolved_pixel_normalization}
           if config.image_preset or config.pixel_normalization else {}),
    }


def _make_tokenizer(dataset: PretrainDataset, config: PretrainConfig) -> CaptionTokenizer | None:
    """The caption tokenizer learnt from the training captions (None without captions), or
    the text preset's own (`load_text_tokenizer`)."""
    captions = [c for r in dataset.records for c in r.captions]
    if not captions:
        return None
    if config.text_preset:
        return load_text_tokenizer(config.text_preset, config.sequence_length)
    return CaptionTokenizer.from_captions(captions, vocabulary_size=config.vocabulary_size,
                                          sequence_length=config.sequence_length)


def _make_pipeline(dataset: PretrainDataset, config: PretrainConfig, plan: PretrainPlan,
                   tokenizer: CaptionTokenizer | None, start_step: int = 0):
    """The endless `pretrain_dataset` stream (pass after pass) from batch ``start_step`` on.

    Batch ``n`` is the same whatever ``start_step`` is, and the same as batch ``n`` of the
    one-pass pipeline repeated, so a resumed run sees the batches an uninterrupted one does.
    """
    labels = _attribute_matrix(dataset)
    settings = {"image_size": plan.image_size, "batch_size": config.batch_size,
                "tokenizer": tokenizer if "itc" in plan.weights else None,
                "seed": config.seed, "augment": config.augment, "shuffle": True,
                "drop_remainder": True, "start_step": start_step,
                "num_attributes": None if labels is None else labels.shape[1]}
    if isinstance(dataset, ShardPretrainDataset):
        return shard_pretrain_dataset(dataset, **settings)
    return pretrain_dataset(dataset.records, **settings,
                            image_source=getattr(dataset, "image_source", None))


def build_pretrainer(dataset: PretrainDataset, config: PretrainConfig, plan: PretrainPlan,
                     tokenizer: CaptionTokenizer | None) -> ValPatPretrainer:
    """The `ValPatBackbone` and compiled `ValPatPretrainer` of a run (seeded first).

    Args:
        dataset: The pretraining records (attribute names and positive ratios).
        config: The run's settings.
        plan: Its data-dependent settings.
        tokenizer: The caption tokenizer (its vocabulary sizes the text encoder).

    Returns:
        The pretrainer, compiled with AdamW at ``config.learning_rate``.
    """
    keras.utils.set_random_seed(config.seed)
    preset = config.preset
    backbone = ValPatBackbone(
        _image_tower(config, plan),
        _text_tower(config, tokenizer), embedding_dim=preset["embedding_dim"])
    labels = _attribute_matrix(dataset)
    model = ValPatPretrainer(
        backbone, num_attributes=0 if labels is None else labels.shape[1],
        attribute_names=dataset.attribute_names,
        positive_ratios=None if labels is None else positive_ratios(labels).tolist(),
        loss_weights=plan.weights, ssl_dim=preset["ssl_dim"],
        ssl_hidden_dim=preset["ssl_hidden_dim"], queue_size=plan.queue_size,
        momentum=plan.momentum,
        momentum_schedule_steps=plan.total_steps if config.momentum_schedule else 0)
    model.compile(learning_rate=config.learning_rate)
    return model


def _image_tower(config: PretrainConfig, plan: PretrainPlan):
    """The image encoder at ``config.resolved_last_stride``: ``config.image_preset``'s weights,
    or random."""
    if config.image_preset:
        return image_encoder_from_preset(
            config.image_preset, image_size=plan.image_size,
            last_stride=config.resolved_last_stride,
            pixel_normalization=config.resolved_pixel_normalization)
    return build_image_encoder(config.preset["image"], image_size=plan.image_size,
                               last_stride=config.resolved_last_stride,
                               pixel_normalization=config.resolved_pixel_normalization)


def _text_tower(config: PretrainConfig, tokenizer: CaptionTokenizer | None):
    """The text encoder: ``config.text_preset``'s, or a random one sized by the tokenizer."""
    if not config.text_preset:
        return build_text_encoder(
            config.preset["text"], vocabulary_size=tokenizer.vocabulary_size if tokenizer else 8,
            sequence_length=config.sequence_length)
    encoder = build_text_encoder(config.text_preset, sequence_length=config.sequence_length)
    if tokenizer is not None and encoder.sequence_length \
            and tokenizer.sequence_length > encoder.sequence_length:
        raise InputError(f"sequence_length {tokenizer.sequence_length} exceeds the text "
                         f"preset's {encoder.sequence_length} positions ({config.text_preset})")
    return encoder


def _checkpoint_signature(dataset: PretrainDataset, config: PretrainConfig,
                          plan: PretrainPlan) -> dict[str, Any]:
    """What a resumed run must share with the interrupted one (data size, settings, plan)."""
    settings = {k: v for k, v in config.cache_fields().items()
                if k != "checkpoint_every_steps"}  # may change between the two runs
    return {"images": len(dataset.records), "config": settings,
            "steps_per_epoch": plan.steps_per_epoch, "num_epochs": plan.num_epochs,
            "total_steps": plan.total_steps, "backend": keras.backend.backend()}


def fit_pretrainer(model: ValPatPretrainer, train_data, dataset: PretrainDataset,
                   config: PretrainConfig, plan: PretrainPlan, out_dir: Path,
                   keep_checkpoints: bool = False) -> keras.callbacks.History:
    """Fits with step checkpoints in ``out_dir/checkpoints`` (resumed) and writes ``history.json``.

    Args:
        model: The compiled pretrainer (`build_pretrainer`).
        train_data: ``step -> dataset``: the input stream from global step ``step`` on
            (`_make_pipeline`), for an exact resume; or a dataset, used as is (a resumed run
            then restarts its data order).
        dataset: The pretraining records.
        config: The run's settings (``checkpoint_every_steps``: the interval).
        plan: Its data-dependent settings.
        out_dir: The run directory.
        keep_checkpoints: Keep ``out_dir/checkpoints`` once training is complete (`pretrain`
            deletes it after writing the run folder).

    Returns:
        The history of every epoch of the run (those before a resume included).

    Raises:
        InputError: An unreadable checkpoint folder left by an earlier run (the message
            names the file), or checkpoints of a run with other settings.
        NonFiniteLossError: The loss became NaN/inf (after ``history.json`` is written).
    """
    folder = out_dir / "checkpoints"
    checkpoint = StepCheckpoint(folder, every_steps=config.checkpoint_every_steps,
                                every_seconds=DEFAULT_EVERY_SECONDS,
                                signature=_checkpoint_signature(dataset, config, plan))
    nan_guard = TerminateOnNonFiniteLoss()
    callbacks = [nan_guard]
    if config.steps is not None:
        callbacks.append(StopAtStep(plan.total_steps))
    if config.verbose:
        print(f"{dataset.summary()}\nobjectives {plan.weights}, {plan.num_epochs} epoch(s) x "
              f"{plan.steps_per_epoch} steps, batch {config.batch_size}, images "
              f"{plan.image_size}, backend {keras.backend.backend()}")
    make_data: Callable[[int], Any] = train_data if callable(train_data) \
        else (lambda step: train_data)
    history = fit_resumable(model, make_data, epochs=plan.num_epochs,
                            steps_per_epoch=plan.steps_per_epoch, checkpoint=checkpoint,
                            callbacks=callbacks, verbose=config.verbose,
                            total_steps=plan.total_steps)
    write_history(out_dir / "history.json", history.history)
    if nan_guard.message:
        raise NonFiniteLossError(nan_guard.message)
    if not keep_checkpoints:
        shutil.rmtree(folder, ignore_errors=True)
    return history


def pretrain(data: PretrainDataset | str | Path | None, out_dir: str | Path,
             config: PretrainConfig | None = None, **legacy: Any) -> keras.callbacks.History:
    """Pretrains a VAL-PAT backbone and writes the run directory (see the module docstring).

    Builds the caption tokenizer from the training captions, the tf.data pipeline
    (`pretrain_dataset`: two augmented views, one caption per image, attributes), the
    `ValPatBackbone` and `ValPatPretrainer`, and fits with a progress bar. A run directory
    with checkpoints from an interrupted run resumes exactly where it stopped
    (`StepCheckpoint`: weights, optimiser, momentum encoder, queue, the epoch's metrics, the
    input position; "resuming at step N" is printed); ``history.json`` and the loss plot
    hold every epoch.

    Args:
        data: See `load_pretrain_data` (None: SynthPed generated on the fly).
        out_dir: The run directory (created).
        config: The run's settings (`PretrainConfig`; its defaults when None).
        **legacy: Deprecated: the old keyword arguments (``config="tiny"``, ``steps=...``,
            ...), one `PretrainConfig` field each (``config`` is ``encoder_config``); they override
            ``config`` and warn (`DeprecationWarning`). A string ``config`` is the old
            ``config=`` keyword.

    Returns:
        The `keras.callbacks.History` of the run.

    Raises:
        InputError: Unknown encoder config, a batch size that does not divide the queue, no images
            or too few for one batch, no objective the data supports, or an unreadable
            checkpoint left by an earlier run (a `ValueError`).
        NonFiniteLossError: The loss became NaN/inf (a `FloatingPointError`; the message
            names the loss term and the step). ``history.json`` holds the epochs so far,
            the non-finite values written as null.
    """
    if isinstance(config, str):  # the old `config="tiny"` keyword (or third positional)
        legacy, config = {"config": config, **legacy}, None
    config = resolve_run_config(PretrainConfig, config, legacy, "pretrain", renamed=RENAMED)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = load_pretrain_data(data, out_dir, synthped_preset=config.synthped_preset,
                                 seed=config.seed)
    plan = plan_pretraining(dataset, config)
    write_json(out_dir / "config.json", _run_record(data, config, plan))
    tokenizer = _make_tokenizer(dataset, config)

    def train_data(start_step: int):
        return _make_pipeline(dataset, config, plan, tokenizer, start_step)

    # The dtype policy and the distribution (`valpat_keras.distribute`) hold for the run.
    with runtime_scope(config.mixed_precision, config.distribute, config.devices,
                       batch_size=config.batch_size):
        model = build_pretrainer(dataset, config, plan, tokenizer)
        history = fit_pretrainer(model, train_data, dataset, config, plan, out_dir,
                                 keep_checkpoints=True)
        write_pretraining_run(out_dir, model, tokenizer, history.history)
    # Only now: a kill while the run folder was written resumes at the last step.
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    return history

def run_config_of(out_dir: str | Path) -> dict:
    """The ``config.json`` of a run directory (the arguments it was started with)."""
    return json.loads((Path(out_dir) / "config.json").read_text())


