"""`train_attributes`: fine-tune an `AttributeRecognizer` on a dataset and write its run folder.

The run reads as named steps: check the inputs, load the zero-shot backbone when asked (so a
missing backbone or prompt fails before training), `build_recognizer`, `fit_recognizer`
(the validation split feeds the fit logs), `calibrate_recognizer` (per-attribute thresholds
on the validation split), `evaluate_recognizer` on the test split once, then write the run
folder. Its settings are one `AttributesRunConfig`.

Thresholds: the headline test metrics stay those of the usual ``prob > 0.5`` (comparable
with the literature); ``metrics["calibrated"]`` holds the same metrics under the model's own
decisions: per-attribute thresholds maximising the validation balanced accuracy (each
attribute's term of mA, so they maximise the validation mA, the headline metric; F1 on
request, ``threshold_criterion="f1"``) and one choice in each mutually exclusive group (age
bins, viewpoints). Both are saved in the recognizer's config.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

from valpat_keras.data.pipelines import labeled_image_dataset
from valpat_keras.distribute import runs_with_runtime_settings
from valpat_keras.errors import InputError
from valpat_keras.evaluation import plot_attribute_bars
from valpat_keras.evaluation.attribute_metrics import (
    THRESHOLD_CRITERIA,
    calibrate_attribute_thresholds,
)
from valpat_keras.losses.attribute import positive_ratios
from valpat_keras.models.image_encoder import IMAGE_ENCODER_CONFIGS
from valpat_keras.models.init import TRANSFER_LAST_STRIDE, load_backbone, load_image_encoder
from valpat_keras.models.preprocessors import ImagePreprocessor
from valpat_keras.optimizers import GroupedAdamW
from valpat_keras.run_outputs import write_json
from valpat_keras.tasks.attribute_head_init import HEAD_INITS, init_head_from_linear_probe
from valpat_keras.tasks.attribute_recognizer import AttributeRecognizer
from valpat_keras.tasks.attribute_scores import (
    ATTRIBUTE_METRICS,
    attribute_labels,
    exclusive_groups_for,
    paths_of,
    score_attributes,
)
from valpat_keras.tasks.checkpointing import StepCheckpoint
from valpat_keras.tasks.run_config import (
    RunConfig,
    legacy_string_keyword,
    resolve_run_config,
)
from valpat_keras.tasks.transfer_common import (
    cap_epochs,
    check_batch_size,
    cosine_schedule,
    elapsed_seconds,
    fit_transfer,
    remove_checkpoints,
    run_checkpoint,
    start_run,
    write_history,
    write_task_preset,
)
from valpat_keras.tasks.zero_shot import evaluate_zero_shot, resolve_prompts

#: The trained model `train_attributes` writes into its output folder.
MODEL_FILE = "attribute_recognizer.keras"
#: The per-attribute mA bars of the fine-tuned model (and of the zero-shot scorer).
BARS_FILE = "attribute_bars.png"
ZERO_SHOT_BARS_FILE = "attribute_bars_zero_shot.png"


@dataclasses.dataclass
class AttributesRunConfig(RunConfig):
    """The settings of a `train_attributes` run (loadable from a JSON or YAML recipe).

    Args:
        init: Encoder initialisation: ``"random"``, a pretraining run folder, an
            `ImageEncoder` preset folder or a keras-hub preset name (see
            `valpat_keras.models.init.load_image_encoder`).
        encoder_config: Encoder configuration for random init (``"tiny"``, ``"resnet50"``,
            ...); the old ``config=`` keyword of `train_attributes`.
        epochs: Training epochs.
        batch_size: Images per batch.
        image_size: ``(H, W)`` of the inputs.
        learning_rate: Peak learning rate of the encoder (cosine decay over the run).
        weight_decay: AdamW weight decay.
        label_smoothing: Smoothing of the 0/1 targets.
        pooling: ``"gem"`` or ``"avg"`` feature pooling.
        augment: Apply the attribute training augmentation.
        seed: Seed of weights, shuffling and augmentation.
        head_lr_multiplier: Learning rate of the new head relative to the encoder's.
            Defaults to 10, as the Rethinking_of_PAR baseline (0.1 head, 0.01 backbone): a
            pretrained encoder needs small steps, a head learning from zero large ones
            (`valpat_keras.optimizers.GroupedAdamW`).
        freeze_batch_norm: Keep the encoder's batch-norm statistics and affine weights
            fixed (`valpat_keras.models.batch_norm.freeze_batch_norm`). ``None`` (default)
            freezes them when ``init`` is pretrained and trains them from random init.
        loss_weighting: ``"balanced"`` (default: positives and negatives weigh the same in
            total, the optimum of mA) or ``"deepmar"`` (Rethinking_of_PAR's weights); see
            `valpat_keras.losses.attribute.weighted_bce`.
        head_init: ``"prior"`` (the head's bias at the prior logits), ``"linear_probe"``
            (`init_head_from_linear_probe`: LP-FT) or ``"auto"`` (default): the linear probe
            from a pretrained ``init``, the prior from random init, whose features hold
            nothing a probe could keep.
        zero_shot: Also score the test set zero-shot with the pretrained image-text backbone
            (needs ``init`` to be a pretraining run folder with ``backbone/``; checked, with
            the prompts, before training).
        zero_shot_prompts: Per-attribute ``(positive, negative)`` prompts overriding
            `valpat_keras.tasks.zero_shot.PA100K_PROMPTS`.
        steps_per_epoch: Cap on the training steps per epoch (default: one pass).
        verbose: Keras ``fit`` verbosity.
        checkpoint_every_steps: Write a step checkpoint to ``OUT/checkpoints`` every this
            many steps; None: every 10 minutes (and at each epoch end). A run folder with
            checkpoints resumes from the latest; they are deleted once the run is written.
        mixed_precision: None, ``"mixed_bfloat16"`` or ``"mixed_float16"``: the global
            dtype policy during the run (losses in float32; `valpat_keras.distribute`).
        distribute: None, or ``"data"``: data parallelism over ``devices`` devices (JAX
            only); ``batch_size`` is the global batch, split over the devices.
        devices: Devices ``distribute="data"`` uses (None: all, on every host).
        threshold_criterion: What the per-attribute thresholds maximise on the validation
            split: ``"balanced_accuracy"`` (default; the attribute's mA term, so the
            validation mA is maximal) or ``"f1"`` (`calibrate_attribute_thresholds`).
    """

    init: str = "random"
    encoder_config: str = "tiny"
    epochs: int = 10
    batch_size: int = 32
    image_size: tuple[int, int] = (256, 128)
    learning_rate: float = 3e-4
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    pooling: str = "gem"
    augment: bool = True
    seed: int = 0
    head_lr_multiplier: float = 10.0
    freeze_batch_norm: bool | None = None
    loss_weighting: str = "balanced"
    head_init: str = "auto"
    zero_shot: bool = False
    zero_shot_prompts: dict[str, Any] | None = None
    steps_per_epoch: int | None = None
    verbose: int | str = "auto"
    checkpoint_every_steps: int | None = None
    mixed_precision: str | None = None
    distribute: str | None = None
    devices: int | None = None
    threshold_criterion: str = "balanced_accuracy"

    @property
    def pretrained(self) -> bool:
        """Whether the encoder starts from pretrained weights (any ``init`` but random)."""
        return str(self.init) != "random"

    @property
    def input_size(self) -> tuple[int, int]:
        """``image_size`` as a pair of ints."""
        return int(self.image_size[0]), int(self.image_size[1])


#: Old keyword -> `AttributesRunConfig` field (``config`` named the encoder configuration).
RENAMED_KEYWORDS = {"config": "encoder_config"}


def _run_config_of(config, legacy: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Moves an old ``config="tiny"`` (the encoder configuration) into the legacy keywords.

    Raises:
        TypeError: For a keyword that is neither an old one nor a config field.
    """
    legacy = dict(legacy)
    if isinstance(config, str):
        legacy = {legacy_string_keyword(config, legacy, IMAGE_ENCODER_CONFIGS): config, **legacy}
        config = None
    known = set(AttributesRunConfig.field_names()) | set(RENAMED_KEYWORDS)
    unknown = sorted(set(legacy) - known)
    if unknown:
        raise TypeError(f"train_attributes() got unexpected keyword argument(s) {unknown}")
    return config, legacy


def _check_inputs(dataset, config: AttributesRunConfig) -> None:
    """Raises an `InputError` for empty train / test splits or a bad head init / batch size."""
    if not dataset.train or not dataset.test:
        raise InputError(f"{dataset.name} ({dataset.root}): attribute training needs train "
                         f"and test images (got {len(dataset.train)} train, "
                         f"{len(dataset.test)} test)")
    if config.head_init not in HEAD_INITS:
        raise InputError(f"head_init must be one of {HEAD_INITS}, got {config.head_init!r}")
    if config.threshold_criterion not in THRESHOLD_CRITERIA:
        raise InputError(f"threshold_criterion must be one of {THRESHOLD_CRITERIA}, got "
                         f"{config.threshold_criterion!r}")
    check_batch_size(config.batch_size)


def load_zero_shot_backbone(dataset, config: AttributesRunConfig):
    """The pretrained ``(backbone, tokenizer)`` for zero-shot scoring, or None without it.

    Checked before training, so a missing backbone or prompt does not cost a run.

    Raises:
        InputError: ``zero_shot`` from a random init.
        KeyError: An evaluated attribute has no prompt pair.
    """
    if not config.zero_shot:
        return None
    if not config.pretrained:
        raise InputError("zero_shot=True needs init=RUN_DIR, a pretraining run folder "
                         "with the image-text backbone (backbone/)")
    resolve_prompts(dataset.attribute_names, config.zero_shot_prompts)
    return load_backbone(config.init, last_stride=TRANSFER_LAST_STRIDE)


def resolved_head_init(config: AttributesRunConfig) -> str:
    """``head_init`` with ``"auto"`` resolved: the linear probe from a pretrained encoder."""
    if config.head_init != "auto":
        return config.head_init
    return "linear_probe" if config.pretrained else "prior"


def build_recognizer(dataset, config: AttributesRunConfig) -> AttributeRecognizer:
    """The encoder of ``config.init`` under a new head for every attribute of ``dataset``.

    The loss weights come from the training labels; the head starts at the prior logits or
    at a linear probe of the training images (`resolved_head_init`); the known mutually
    exclusive groups among the attribute names are set (`exclusive_groups_for`).
    """
    train_labels = attribute_labels(dataset.train)
    encoder = load_image_encoder(config.init, config=config.encoder_config,
                                 image_size=config.input_size, pooling=config.pooling,
                                 last_stride=TRANSFER_LAST_STRIDE)
    freeze = (config.pretrained if config.freeze_batch_norm is None
              else config.freeze_batch_norm)
    model = AttributeRecognizer(
        encoder, num_attributes=train_labels.shape[1],
        positive_ratios=positive_ratios(train_labels),
        attribute_names=dataset.all_attribute_names, eval_indices=dataset.eval_indices,
        label_smoothing=config.label_smoothing, head_lr_multiplier=config.head_lr_multiplier,
        loss_weighting=config.loss_weighting, freeze_backbone_batch_norm=freeze,
        exclusive_groups=exclusive_groups_for(dataset.all_attribute_names) or None,
        name="attribute_recognizer")
    if resolved_head_init(config) == "linear_probe":
        init_head_from_linear_probe(model, paths_of(dataset.train), train_labels,
                                    config.input_size, config.batch_size)
    return model


def fit_recognizer(model: AttributeRecognizer, dataset, config: AttributesRunConfig,
                   checkpoint: StepCheckpoint | None = None) -> keras.callbacks.History:
    """Trains on ``train`` (`GroupedAdamW`, cosine decay); ``val`` only feeds the fit logs.

    With a ``checkpoint`` (`run_checkpoint`) the run resumes exactly from its latest step
    checkpoint: the input continues at the next batch (`labeled_image_dataset`
    ``start_step``) and the history holds every epoch.
    """
    paths, labels = paths_of(dataset.train), attribute_labels(dataset.train)
    settings = {"image_size": config.input_size, "batch_size": config.batch_size,
                "training": True, "seed": config.seed, "augment": config.augment}
    full_pass = int(np.ceil(len(dataset.train) / config.batch_size))
    if checkpoint is None:
        train_ds, steps = cap_epochs(labeled_image_dataset(paths, labels, **settings),
                                     config.steps_per_epoch, full_pass)
        fit_steps = config.steps_per_epoch
    else:
        steps = fit_steps = int(config.steps_per_epoch or full_pass)

        def train_ds(step: int):
            return labeled_image_dataset(paths, labels, **settings, start_step=step)
    schedule = cosine_schedule(config.learning_rate, config.epochs, steps)
    model.compile(optimizer=GroupedAdamW(schedule, weight_decay=config.weight_decay))
    val_ds = None
    if dataset.val:
        val_ds = labeled_image_dataset(paths_of(dataset.val), attribute_labels(dataset.val),
                                       image_size=config.input_size,
                                       batch_size=config.batch_size, training=False,
                                       seed=config.seed)
    return fit_transfer(model, train_ds, config.epochs, fit_steps, config.verbose,
                        validation_data=val_ds, checkpoint=checkpoint)


def calibrate_recognizer(model: AttributeRecognizer, dataset, batch_size: int = 64,
                         criterion: str = "balanced_accuracy") -> dict:
    """Sets the model's per-attribute thresholds from the validation split (never test).

    Every attribute the model predicts gets the threshold maximising ``criterion`` on the
    ``val`` labels (`calibrate_attribute_thresholds`); without a validation split the
    thresholds stay 0.5.

    Returns:
        How they were chosen, for ``metrics.json``: ``split`` (``"val"`` or None),
        ``criterion``, ``num_images`` and, without a split, ``reason``.
    """
    if not dataset.val:
        model.attribute_thresholds = None
        return {"split": None, "criterion": criterion, "num_images": 0,
                "reason": f"{dataset.name} has no validation split: thresholds stay 0.5"}
    probs = model.predict_probabilities(paths_of(dataset.val), batch_size=batch_size)
    model.attribute_thresholds = calibrate_attribute_thresholds(
        attribute_labels(dataset.val), probs, criterion)
    return {"split": "val", "criterion": criterion, "num_images": len(dataset.val)}


def evaluate_recognizer(model: AttributeRecognizer, dataset, split: str = "test",
                        batch_size: int = 64) -> dict:
    """`score_attributes` of the model on a split, over the evaluated attributes.

    The top-level scores are those of ``prob > 0.5``; ``calibrated`` holds the same
    metrics (JSON-ready) under the model's own decisions (`AttributeRecognizer.decide`:
    its thresholds and exclusive groups), with ``thresholds`` (name -> threshold) and
    ``exclusive_groups`` (lists of names); ``side_by_side`` pairs the scalar metrics.
    """
    records = getattr(dataset, split)
    probs = model.predict_probabilities(paths_of(records), batch_size=batch_size)
    labels = attribute_labels(records, dataset.eval_indices)
    keep = list(dataset.eval_indices)
    scores = score_attributes(labels, probs[:, keep], dataset.attribute_names)
    calibrated = score_attributes(labels, probs[:, keep], dataset.attribute_names,
                                  predictions=model.decide(probs)[:, keep])
    calibrated.pop("label_ma_array")
    names = model.attribute_names or [f"attr_{i}" for i in range(model.num_attributes)]
    calibrated["thresholds"] = dict(zip(dataset.attribute_names,
                                        model.attribute_thresholds[keep].tolist()))
    calibrated["exclusive_groups"] = [[names[i] for i in group]
                                      for group in model.exclusive_groups or []]
    scores["calibrated"] = calibrated
    scores["side_by_side"] = {key: {"threshold_0.5": scores[key],
                                    "calibrated": calibrated[key]}
                              for key in ATTRIBUTE_METRICS}
    return scores


def _run_info(dataset, config: AttributesRunConfig, model: AttributeRecognizer,
              started: float) -> dict:
    """What ran: the data, the settings that shaped the figures, and the wall time."""
    return {"dataset": dataset.name, "init": str(config.init),
            "config": config.encoder_config, "epochs": int(config.epochs),
            "learning_rate": float(config.learning_rate),
            "head_lr_multiplier": float(config.head_lr_multiplier),
            "loss_weighting": config.loss_weighting, "head_init": resolved_head_init(config),
            "freeze_batch_norm": model.freeze_backbone_batch_norm,
            "num_train": len(dataset.train), "num_test": len(dataset.test),
            "seconds": elapsed_seconds(started)}


def write_run_folder(out: Path, dataset, model: AttributeRecognizer, metrics: dict,
                     history: keras.callbacks.History, label_ma: np.ndarray) -> None:
    """Writes ``metrics.json``, ``history.json``, the mA bars and the trained model."""
    write_json(out / "metrics.json", metrics)
    write_history(out, history)
    plot_attribute_bars(dataset.attribute_names, label_ma, path=str(out / BARS_FILE),
                        title=f"{dataset.name}: fine-tuned mA per attribute")
    model.save(out / MODEL_FILE)
    write_task_preset(model, out, ImagePreprocessor.for_encoder(model.backbone))


def _zero_shot_metrics(out: Path, dataset, config: AttributesRunConfig,
                       zero_shot_model) -> dict:
    """Zero-shot scores of the test split (and their bar plot); JSON-ready."""
    backbone, tokenizer = zero_shot_model
    scores = evaluate_zero_shot(dataset, prompts=config.zero_shot_prompts,
                                batch_size=config.batch_size, backbone=backbone,
                                tokenizer=tokenizer)
    plot_attribute_bars(dataset.attribute_names, scores.pop("label_ma_array"),
                        path=str(out / ZERO_SHOT_BARS_FILE),
                        title=f"{dataset.name}: zero-shot mA per attribute")
    return scores


@runs_with_runtime_settings(lambda config: config.batch_size)
def train_attributes(dataset, out_dir: str | Path, config: AttributesRunConfig | None = None,
                     **legacy) -> dict:
    """Fine-tunes an `AttributeRecognizer` on an `AttributeDataset` and evaluates it.

    Trains on the ``train`` split with every attribute of the dataset (validation loss on
    ``val`` when it is not empty), then scores ``test`` once over the evaluated attributes
    (``dataset.eval_indices``) with `valpat_keras.evaluation.evaluate_attributes`.

    Writes into ``out_dir``: ``metrics.json`` (``ma``, ``instance_acc``, ``instance_prec``,
    ``instance_recall``, ``instance_f1``, per-attribute mA, all at ``prob > 0.5``; the same
    under ``calibrated`` with the thresholds calibrated on ``val`` and the exclusive groups,
    and ``side_by_side``; ``zero_shot`` metrics when asked), ``history.json`` (per-epoch fit logs), ``attribute_bars.png`` (per-attribute mA;
    ``attribute_bars_zero_shot.png`` too with ``zero_shot``) and
    ``attribute_recognizer.keras`` (the trained model).

    Args:
        dataset: An `AttributeDataset` (e.g. ``datasets.load("pa100k", root)``).
        out_dir: Output folder (created).
        config: The run's settings (defaults: ``AttributesRunConfig()``).
        **legacy: The keywords of the old signature (``init=``, ``epochs=``, ...;
            ``config="tiny"`` for the encoder configuration): deprecated, they override
            ``config``'s fields with a `DeprecationWarning`.

    Returns:
        The metrics dict written to ``metrics.json``.

    Raises:
        InputError: No train or test images, an unknown head init, a batch size below 1,
            or a zero-shot run from random init.
        NonFiniteLossError: Training diverged (the run folder stays without results).

    A killed run resumes: calling again with the same settings continues from the latest
    step checkpoint in ``out_dir/checkpoints`` ("resuming at step N"), with the weights,
    optimiser, input position and history; see ``checkpoint_every_steps``.

    Example:

    ```python
    data = datasets.load("pa100k", "/data/PA-100K")
    config = AttributesRunConfig(init="runs/pretrain", epochs=30, zero_shot=True)
    metrics = train_attributes(data, "runs/par", config)
    print(metrics["ma"], metrics["zero_shot"]["ma"])
    ```
    """
    config, legacy = _run_config_of(config, legacy)
    config = resolve_run_config(AttributesRunConfig, config, legacy, "train_attributes",
                                renamed=RENAMED_KEYWORDS)
    _check_inputs(dataset, config)
    out = start_run(out_dir, config.seed)
    started = time.time()
    zero_shot_model = load_zero_shot_backbone(dataset, config)
    model = build_recognizer(dataset, config)
    history = fit_recognizer(model, dataset, config,
                             run_checkpoint(out, config, num_train=len(dataset.train)))
    calibration = calibrate_recognizer(model, dataset, config.batch_size,
                                       config.threshold_criterion)
    metrics = evaluate_recognizer(model, dataset, batch_size=config.batch_size)
    metrics["calibrated"]["calibration"] = calibration
    label_ma = metrics.pop("label_ma_array")
    if zero_shot_model is not None:
        metrics["zero_shot"] = _zero_shot_metrics(out, dataset, config, zero_shot_model)
    metrics.update(_run_info(dataset, config, model, started))
    write_run_folder(out, dataset, model, metrics, history, label_ma)
    remove_checkpoints(out)  # only now: a kill while writing resumes at the last step
    return metrics
