"""`pretrain`: VAL-PAT pretraining from data to a run directory (what `valpat pretrain` runs).

The run directory holds everything the transfer tasks and a resumed run need:

```
RUN_DIR/config.json        the run's arguments
RUN_DIR/history.json       per-epoch value of every logged loss and metric
RUN_DIR/loss_curves.png    the losses and accuracies per epoch
RUN_DIR/pretrainer.keras   the whole ValPatPretrainer (momentum encoder and queue included)
RUN_DIR/image_encoder/     keras-hub preset of the image encoder (`load_image_encoder`)
RUN_DIR/backbone/          keras-hub preset of the ValPatBackbone (`load_backbone`)
RUN_DIR/backbone/tokenizer/  the caption tokenizer
RUN_DIR/checkpoints/       BackupAndRestore state while a run is unfinished
```
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from valpat_keras.data.records import PretrainDataset
from valpat_keras.errors import InputError, NonFiniteLossError
from valpat_keras.run_outputs import write_json

#: Named pretraining configurations: encoder sizes, head widths and default sizes.
PRETRAIN_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"image": "tiny", "text": "tiny", "embedding_dim": 128, "ssl_dim": 128,
             "ssl_hidden_dim": 512, "queue_size": 4096, "image_size": (128, 64)},
    "resnet50": {"image": "resnet50", "text": "base", "embedding_dim": 256, "ssl_dim": 256,
                 "ssl_hidden_dim": 2048, "queue_size": 65536, "image_size": (256, 128)},
    "vit": {"image": "vit_small", "text": "base", "embedding_dim": 256, "ssl_dim": 256,
            "ssl_hidden_dim": 2048, "queue_size": 65536, "image_size": (256, 128)},
}


def load_pretrain_data(data: PretrainDataset | str | Path | None, out_dir: Path,
                       synthped_preset: str = "small", seed: int = 0) -> PretrainDataset:
    """Resolves the ``data`` argument of `pretrain` into a `PretrainDataset`.

    Args:
        data: A dataset; a manifest file or a folder with ``manifest.jsonl``
            (``luperson_ta`` loader); a SynthPed output folder (its ``pretrain/``); a folder
            of images (``image_folder``: no captions, no attributes); or ``None``: generate
            SynthPed (``synthped_preset``) into ``out_dir/synthped``. Files read from a
            path have every image decoded (once, cached): unreadable ones are dropped and
            reported.
        out_dir: The run directory.
        synthped_preset: SynthPed size generated when ``data`` is None.
        seed: SynthPed seed.

    Returns:
        The pretraining records.
    """
    from valpat_keras import datasets

    if isinstance(data, PretrainDataset):
        return data
    if data is None:
        from valpat_keras.data.synthped import SynthPedConfig, write_synthped

        root = Path(out_dir) / "synthped"
        print(f"No --data: generating SynthPed ({synthped_preset}) in {root}")
        write_synthped(root, SynthPedConfig.preset(synthped_preset, seed=seed))
        return datasets.load("luperson_ta", str(root / "pretrain" / "manifest.jsonl"))
    path = Path(data)
    if (path / "pretrain" / "manifest.jsonl").is_file():
        path = path / "pretrain"
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


def _resolve_objectives(objectives: Sequence[str], loss_weights: Mapping[str, float] | None,
                        dataset: PretrainDataset) -> dict[str, float]:
    weights = {name: float((loss_weights or {}).get(name, 1.0)) for name in objectives}
    has_captions = any(r.captions for r in dataset.records)
    has_attributes = any(r.attributes is not None for r in dataset.records)
    for name, available, what in (("itc", has_captions, "captions"),
                                  ("attr", has_attributes, "attribute labels")):
        if weights.get(name) and not available:
            warnings.warn(f"{dataset.name} ({dataset.root}) has no {what}: the '{name}' "
                          "objective is switched off.", UserWarning, stacklevel=3)
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


def plot_history(history: Mapping[str, Sequence[float]], path: str | Path) -> Path:
    """Draws the per-epoch losses (left) and accuracies (right) of a pretraining run.

    Args:
        history: ``History.history``-like mapping of metric name to per-epoch values.
        path: The PNG file to write.

    Returns:
        The path written.
    """
    # A bare Figure (no pyplot) leaves the caller's matplotlib backend alone, e.g. in Jupyter.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for name, values in history.items():
        axis = ax_loss if name.endswith("loss") else ax_acc
        epochs = np.arange(1, len(values) + 1)
        axis.plot(epochs, values, marker="o", label=name)
    ax_loss.set(title="losses", xlabel="epoch")
    ax_acc.set(title="top-1 accuracy / attribute mA", xlabel="epoch", ylim=(0, 1))
    for axis in (ax_loss, ax_acc):
        if axis.lines:
            axis.legend()
        axis.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def pretrain(data: PretrainDataset | str | Path | None, out_dir: str | Path,
             config: str = "tiny", objectives: Sequence[str] = ("ssl", "itc", "attr"),
             loss_weights: Mapping[str, float] | None = None, epochs: int | None = None,
             steps: int | None = None, batch_size: int = 32,
             image_size: tuple[int, int] | None = None, seed: int = 0,
             queue_size: int | None = None, learning_rate: float = 1e-3,
             mixed_precision: str | None = None, momentum: float | None = None,
             momentum_schedule: bool = False, vocabulary_size: int = 2000,
             sequence_length: int = 32, augment: bool | str = "reid",
             synthped_preset: str = "small",
             verbose: int | str = 1):
    """Pretrains a VAL-PAT backbone and writes the run directory (see the module docstring).

    Builds the caption tokenizer from the training captions, the tf.data pipeline
    (`pretrain_dataset`: two augmented views, one caption per image, attributes), the
    `ValPatBackbone` and `ValPatPretrainer`, and fits with a progress bar. A run directory
    with checkpoints from an interrupted run resumes where it stopped (BackupAndRestore:
    weights, optimiser, momentum encoder and queue).

    Args:
        data: See `load_pretrain_data` (None: SynthPed generated on the fly).
        out_dir: The run directory (created).
        config: ``"tiny"``, ``"resnet50"`` or ``"vit"`` (see `PRETRAIN_CONFIGS`).
        objectives: Objectives to train among ``ssl``, ``itc``, ``attr``; ones the data
            cannot support (no captions / attributes) are switched off with a warning.
        loss_weights: Weight per objective (default 1; 0 switches it off).
        epochs: Passes over the data (default 1 when ``steps`` is not given either).
        steps: Optimiser steps instead of epochs (exact; logged in epochs of one pass).
        batch_size: Images per step; must divide the queue size.
        image_size: (height, width); the config's default when None.
        seed: Seed of SynthPed, shuffling, augmentation and weight initialisation.
        queue_size: MoCo queue length; None: the config's, capped at a quarter of the
            images (`default_queue_size`); 0: in-batch negatives only.
        learning_rate: AdamW learning rate.
        mixed_precision: None, ``"mixed_bfloat16"`` or ``"mixed_float16"`` (global policy
            during the run; losses stay float32).
        momentum: Key encoder EMA momentum; None picks it from the run length
            (`default_momentum`: 0.99 for a few hundred steps, up to 0.999).
        momentum_schedule: Raise the momentum to 1 along a half cosine over the run.
        vocabulary_size: Upper bound of the WordPiece vocabulary.
        sequence_length: Caption length in tokens.
        augment: The two views' augmentation: ``"reid"`` (crop and flip:
            `reid_ssl_view_augment`, which keeps clothing colour), ``"moco_v2"`` or
            True (MoCo v2's, with hue, saturation, grayscale and blur), False (plain resized
            images).
        synthped_preset: SynthPed size when ``data`` is None.
        verbose: Keras ``fit`` verbosity (1: progress bar with ETA).

    Returns:
        The `keras.callbacks.History` of the run.

    Raises:
        InputError: Unknown config, a batch size that does not divide the queue, no images
            or too few for one batch, no objective the data supports, or an unreadable
            checkpoint left by an earlier run (a `ValueError`).
        NonFiniteLossError: The loss became NaN/inf (a `FloatingPointError`; the message
            names the loss term and the step). ``history.json`` holds the epochs so far,
            the non-finite values written as null.
    """
    from valpat_keras.data.pipelines import pretrain_dataset
    from valpat_keras.data.tokenizer import CaptionTokenizer
    from valpat_keras.losses.attribute import positive_ratios
    from valpat_keras.models import ValPatBackbone, build_image_encoder, build_text_encoder
    from valpat_keras.models.init import BACKBONE_DIR, IMAGE_ENCODER_DIR, TOKENIZER_DIR
    from valpat_keras.tasks.callbacks import TerminateOnNonFiniteLoss
    from valpat_keras.tasks.pretrainer import ValPatPretrainer

    if config not in PRETRAIN_CONFIGS:
        raise InputError(f"Unknown pretraining config {config!r}; choose one of "
                         f"{sorted(PRETRAIN_CONFIGS)}")
    if epochs is not None and steps is not None:
        raise InputError("Give epochs or steps, not both.")
    for name, value in (("batch_size", batch_size), ("epochs", epochs), ("steps", steps)):
        if value is not None and int(value) <= 0:
            raise InputError(f"{name} must be a positive integer, got {value}")
    preset = PRETRAIN_CONFIGS[config]
    image_size = tuple(image_size or preset["image_size"])
    if queue_size is not None and int(queue_size) % batch_size:
        raise InputError(f"The queue size ({queue_size}) must be a multiple of the batch size "
                         f"({batch_size}): the queue is filled one batch at a time.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    dataset = load_pretrain_data(data, out_dir, synthped_preset=synthped_preset, seed=seed)
    weights = _resolve_objectives(objectives, loss_weights, dataset)
    num_batches = len(dataset.records) // batch_size
    if not dataset.records:
        dropped = sum(dataset.skipped.values())
        raise InputError(f"{dataset.root}: no images to pretrain on"
                         + (f" ({dropped} dropped: see the summary)" if dropped else "")
                         + f"; expected at least one batch ({batch_size}) of readable images")
    if num_batches == 0:
        raise InputError(f"{dataset.name} ({dataset.root}) has {len(dataset.records)} images, "
                         f"fewer than one batch of {batch_size}; lower the batch size "
                         "(--batch-size).")
    if steps is not None:
        steps_per_epoch = min(int(steps), num_batches)
        num_epochs = math.ceil(int(steps) / steps_per_epoch)
        total_steps = int(steps)
    else:
        steps_per_epoch, num_epochs = num_batches, int(epochs or 1)
        total_steps = num_epochs * num_batches
    if queue_size is None:
        queue_size = default_queue_size(len(dataset.records), batch_size, preset["queue_size"])
    queue_size = int(queue_size)
    momentum = default_momentum(total_steps) if momentum is None else float(momentum)
    run_config = {
        "data": None if data is None else str(getattr(data, "root", data)), "config": config,
        "objectives": list(objectives), "loss_weights": dict(loss_weights or {}),
        "epochs": epochs, "steps": steps, "batch_size": batch_size,
        "image_size": list(image_size), "seed": seed, "queue_size": queue_size,
        "learning_rate": learning_rate, "mixed_precision": mixed_precision,
        "momentum": momentum, "momentum_schedule": momentum_schedule,
        "vocabulary_size": vocabulary_size, "sequence_length": sequence_length,
        "augment": augment, "backend": keras.backend.backend(),
    }
    write_json(out_dir / "config.json", run_config)
    captions = [c for r in dataset.records for c in r.captions]
    tokenizer = (CaptionTokenizer.from_captions(captions, vocabulary_size=vocabulary_size,
                                                sequence_length=sequence_length)
                 if captions else None)
    labels = _attribute_matrix(dataset)
    num_attributes = 0 if labels is None else labels.shape[1]
    train_data = pretrain_dataset(
        dataset.records, image_size=image_size, batch_size=batch_size,
        tokenizer=tokenizer if "itc" in weights else None, seed=seed, augment=augment,
        shuffle=True, drop_remainder=True,
        num_attributes=num_attributes or None)

    if steps is not None:
        train_data = train_data.repeat()

    previous_policy = keras.mixed_precision.dtype_policy()
    if mixed_precision:
        keras.mixed_precision.set_global_policy(mixed_precision)
    try:
        keras.utils.set_random_seed(seed)
        backbone = ValPatBackbone(
            build_image_encoder(preset["image"], image_size=image_size),
            build_text_encoder(preset["text"],
                               vocabulary_size=tokenizer.vocabulary_size if tokenizer else 8,
                               sequence_length=sequence_length),
            embedding_dim=preset["embedding_dim"])
        model = ValPatPretrainer(
            backbone, num_attributes=num_attributes,
            attribute_names=dataset.attribute_names,
            positive_ratios=None if labels is None else positive_ratios(labels).tolist(),
            loss_weights=weights, ssl_dim=preset["ssl_dim"],
            ssl_hidden_dim=preset["ssl_hidden_dim"], queue_size=queue_size,
            momentum=momentum,
            momentum_schedule_steps=total_steps if momentum_schedule else 0)
        model.compile(learning_rate=learning_rate)
        _check_checkpoint_metadata(out_dir / "checkpoints")
        nan_guard = TerminateOnNonFiniteLoss()
        callbacks = [keras.callbacks.BackupAndRestore(str(out_dir / "checkpoints")), nan_guard]
        if steps is not None:
            callbacks.append(StopAtStep(total_steps))
        if verbose:
            print(f"{dataset.summary()}\nobjectives {weights}, {num_epochs} epoch(s) x "
                  f"{steps_per_epoch} steps, batch {batch_size}, images {image_size}, "
                  f"backend {keras.backend.backend()}")
        history = model.fit(train_data, epochs=num_epochs, steps_per_epoch=steps_per_epoch,
                            callbacks=callbacks, verbose=verbose, shuffle=False)
        values = {k: [float(v) for v in vs] for k, vs in history.history.items()}
        write_json(out_dir / "history.json", values)
        if nan_guard.message:
            raise NonFiniteLossError(nan_guard.message)
        plot_history(values, out_dir / "loss_curves.png")
        model.save(str(out_dir / "pretrainer.keras"))
        backbone.image_encoder.save_to_preset(str(out_dir / IMAGE_ENCODER_DIR))
        backbone.save_to_preset(str(out_dir / BACKBONE_DIR))
        if tokenizer is not None:
            tokenizer.save_to_preset(out_dir / BACKBONE_DIR / TOKENIZER_DIR)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    return history


def _check_checkpoint_metadata(folder: Path) -> None:
    # BackupAndRestore reads this file with a bare json.loads: a corrupt one (a kill while
    # it was written) would fail inside fit without the file's name.
    path = folder / "training_metadata.json"
    if not path.is_file():
        return
    try:
        json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: corrupt checkpoint metadata ({err}); expected the JSON "
                         "written by an interrupted run. Delete the checkpoints folder to "
                         "start over.") from None


def run_config_of(out_dir: str | Path) -> dict:
    """The ``config.json`` of a run directory (the arguments it was started with)."""
    return json.loads((Path(out_dir) / "config.json").read_text())


