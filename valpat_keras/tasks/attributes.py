"""Transfer to pedestrian attribute recognition (PAR): an image encoder plus a linear head.

The recipe is the strong baseline of Jia et al. ("Rethinking of pedestrian attribute
recognition", the Rethinking_of_PAR code base): pooled encoder features, one logit per
attribute (optionally batch-normalised), weighted binary cross entropy with the DeepMAR
positive-ratio weights, labels of -1 masked out. The model may train on every attribute of a
dataset while evaluation uses only its evaluated set (``dataset.eval_indices``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import keras_hub
import numpy as np
from keras import ops

from valpat_keras.losses.attribute import prior_logits, weighted_bce
from valpat_keras.models.batch_norm import freeze_batch_norm
from valpat_keras.models.heads import AttributeHead

#: The trained model `train_attributes` writes into its output folder.
MODEL_FILE = "attribute_recognizer.keras"


@keras.saving.register_keras_serializable(package="valpat_keras")
class AttributeMeanAccuracy(keras.metrics.Metric):
    """Label-based mean accuracy mA, accumulated over batches (for the fit logs).

    ``mA = mean_j (TP_j / P_j + TN_j / N_j) / 2`` over the attributes ``indices``; labels
    other than 0/1 are ignored; a logit > 0 (probability > 0.5) is a positive prediction.
    The final test numbers come from `valpat_keras.evaluation.evaluate_attributes`; this
    metric accumulates the same counts during ``fit`` / ``evaluate``.

    Args:
        num_attributes: int. Width of the label vectors.
        indices: Sequence[int] | None. The evaluated attributes (default: all).
        name: str. Metric name. Defaults to ``"ma"``.
        **kwargs: Standard `keras.metrics.Metric` arguments.
    """

    def __init__(self, num_attributes: int, indices: Sequence[int] | None = None,
                 name: str = "ma", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_attributes = int(num_attributes)
        self.indices = None if indices is None else [int(i) for i in indices]
        width = len(self.indices) if self.indices is not None else self.num_attributes
        self.counts = [self.add_variable(shape=(width,), initializer="zeros", name=n)
                       for n in ("true_pos", "true_neg", "pos", "neg")]

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        if self.indices is not None:
            y_true = ops.take(y_true, self.indices, axis=1)
            y_pred = ops.take(y_pred, self.indices, axis=1)
        pos = ops.cast(ops.equal(y_true, 1.0), "float32")
        neg = ops.cast(ops.equal(y_true, 0.0), "float32")
        predicted = ops.cast(y_pred > 0.0, "float32")
        updates = (pos * predicted, neg * (1.0 - predicted), pos, neg)
        for variable, update in zip(self.counts, updates):
            variable.assign_add(ops.sum(update, axis=0))

    def result(self):
        tp, tn, pos, neg = (ops.convert_to_tensor(v) for v in self.counts)
        return ops.mean((tp / (pos + 1e-20) + tn / (neg + 1e-20)) / 2.0)

    def reset_state(self):
        for variable in self.counts:
            variable.assign(ops.zeros(variable.shape, "float32"))

    def get_config(self):
        config = super().get_config()
        config.update({"num_attributes": self.num_attributes, "indices": self.indices})
        return config


@keras.saving.register_keras_serializable(package="valpat_keras")
class AttributeRecognizer(keras_hub.models.Task):
    """Pedestrian attribute recognizer: image encoder -> (dropout) -> one logit per attribute.

    Trained with weighted binary cross entropy (positive-ratio weights of the training set,
    stored in the config so a saved model keeps its loss) and labels of -1 masked out;
    optional label smoothing of the 0/1 targets. Outputs logits; `predict_attributes` gives
    named probabilities.

    Args:
        backbone: valpat_keras.models.ImageEncoder (images in [0, 1] -> features).
        num_attributes: int. Number of attributes the head predicts (all of the dataset's).
        positive_ratios: Sequence[float] | None. Fraction of positives per attribute in the
            training labels (`valpat_keras.losses.attribute.positive_ratios`); ``None`` means
            0.5 everywhere (unweighted BCE). Given ratios also set the head's initial bias
            to the prior logit (see `_set_prior_bias`).
        attribute_names: Sequence[str] | None. Names of the outputs, for `predict_attributes`.
        eval_indices: Sequence[int] | None. The evaluated attributes (the fit-time ``ma``
            metric uses them); default all.
        label_smoothing: float. Targets become ``y (1 - e) + e / 2``. Defaults to ``0.0``.
        dropout: float. Dropout on the features before the head. Defaults to ``0.0``.
        head_batch_norm: bool. Batch-normalise the logits (Rethinking_of_PAR baseline).
            Defaults to ``True``.
        head_lr_multiplier: float. Learning rate of the head relative to the encoder's when
            the optimizer is a `valpat_keras.optimizers.GroupedAdamW` (``compile`` sets it,
            also when a saved model is re-compiled). Defaults to ``10.0`` (Rethinking_of_PAR).
        loss_weighting: str. ``"deepmar"`` (Rethinking_of_PAR's positive-ratio weights, the
            default) or ``"balanced"`` (both classes weigh the same in total, the optimum of
            mA); see `valpat_keras.losses.attribute.weighted_bce`.
        freeze_backbone_batch_norm: bool. Keep the backbone's batch-norm statistics and
            affine weights fixed (`valpat_keras.models.batch_norm.freeze_batch_norm`).
            Defaults to ``False``.
        preprocessor: None. Images arrive already decoded (see `valpat_keras.data.pipelines`).
        **kwargs: Standard `keras_hub.models.Task` arguments (``name``, ``compile``).

    Example:

    ```python
    encoder = build_image_encoder("tiny", image_size=(64, 32))
    model = AttributeRecognizer(encoder, num_attributes=26, attribute_names=PA100K_ATTRIBUTES)
    model.fit(images, labels, epochs=1)           # labels (N, 26) in {1, 0, -1}
    model.predict_attributes("person.jpg")[0]["Backpack"]

    # From a VAL-PAT pretraining run:
    encoder = load_image_encoder("runs/pretrain", image_size=(256, 128))
    model = AttributeRecognizer(encoder, 26, positive_ratios=positive_ratios(train_labels))
    ```
    """

    def __init__(self, backbone, num_attributes: int,
                 positive_ratios: Sequence[float] | None = None,
                 attribute_names: Sequence[str] | None = None,
                 eval_indices: Sequence[int] | None = None,
                 label_smoothing: float = 0.0, dropout: float = 0.0,
                 head_batch_norm: bool = True, head_lr_multiplier: float = 10.0,
                 loss_weighting: str = "deepmar", freeze_backbone_batch_norm: bool = False,
                 preprocessor=None, **kwargs):
        num_attributes = int(num_attributes)
        if positive_ratios is not None and len(positive_ratios) != num_attributes:
            raise ValueError(f"positive_ratios has {len(positive_ratios)} entries for "
                             f"{num_attributes} attributes")
        if head_lr_multiplier < 0:
            raise ValueError(f"head_lr_multiplier must be >= 0, got {head_lr_multiplier}")
        if attribute_names is not None and len(attribute_names) != num_attributes:
            raise ValueError(f"attribute_names has {len(attribute_names)} entries for "
                             f"{num_attributes} attributes")
        # === Layers ===
        self.backbone = backbone
        if freeze_backbone_batch_norm:
            # In the constructor, so a loaded model is frozen again before its optimizer is
            # rebuilt (the saved optimizer holds state for the trainable variables only).
            freeze_batch_norm(backbone)
        self.preprocessor = preprocessor
        self.feature_dropout = keras.layers.Dropout(dropout, name="feature_dropout")
        self.head = AttributeHead(num_attributes, batch_norm=head_batch_norm,
                                  name="attribute_head")

        # === Functional Model ===
        inputs = backbone.input
        features = backbone(inputs)
        logits = self.head(self.feature_dropout(features))
        # Compiled below, once the config the default metrics need is set.
        compile_now = kwargs.pop("compile", True)
        super().__init__(inputs=inputs, outputs=logits, compile=False, **kwargs)

        # === Config ===
        self.num_attributes = num_attributes
        self.positive_ratios = (None if positive_ratios is None
                                else [float(r) for r in positive_ratios])
        self.attribute_names = (None if attribute_names is None
                                else [str(n) for n in attribute_names])
        self.eval_indices = None if eval_indices is None else [int(i) for i in eval_indices]
        self.label_smoothing = float(label_smoothing)
        self.dropout = float(dropout)
        self.head_batch_norm = bool(head_batch_norm)
        self.head_lr_multiplier = float(head_lr_multiplier)
        self.loss_weighting = str(loss_weighting)
        self.freeze_backbone_batch_norm = bool(freeze_backbone_batch_norm)
        if self.positive_ratios is not None:
            self._set_prior_bias(self.positive_ratios)
        if compile_now:
            self.compile()

    def _set_prior_bias(self, ratios: Sequence[float]) -> None:
        """Starts every logit at the constant that minimises the weighted BCE (a prior bias).

        With a zero bias every attribute starts at probability 0.5, and under the logit
        batch norm (whose output mean is its ``beta``) half of each batch stays predicted
        positive until ``beta`` has moved by several units: thousands of steps at fine-tuning
        learning rates, so rare attributes end in floods of false positives. For positive
        ratio ``r`` and the DeepMAR weights the minimiser is
        ``log(r / (1 - r)) + 1 - 2 r`` (`prior_logits`). Loaded weights replace this
        initial value.
        """
        bias = self.head.norm.beta if self.head.norm is not None else self.head.dense.bias
        bias.assign(prior_logits(ratios, weighting=self.loss_weighting))

    def get_config(self):
        # The backbone is serialised by `Task.get_config`.
        config = super().get_config()
        config.update({
            "num_attributes": self.num_attributes,
            "positive_ratios": self.positive_ratios,
            "attribute_names": self.attribute_names,
            "eval_indices": self.eval_indices,
            "label_smoothing": self.label_smoothing,
            "dropout": self.dropout,
            "head_batch_norm": self.head_batch_norm,
            "head_lr_multiplier": self.head_lr_multiplier,
            "loss_weighting": self.loss_weighting,
            "freeze_backbone_batch_norm": self.freeze_backbone_batch_norm,
        })
        return config

    def compile(self, optimizer="auto", loss=None, *, metrics="auto", **kwargs):
        """Configures training; the loss is always the weighted BCE of `compute_loss`.

        Args:
            optimizer: ``"auto"`` (`GroupedAdamW`: encoder learning rate 3e-4, head
                ``head_lr_multiplier`` times it, weight decay 5e-4) or any Keras optimizer;
                a `GroupedAdamW` gets the head's multiplier.
            loss: Ignored (must be ``None``): the task computes its own loss.
            metrics: ``"auto"`` (`AttributeMeanAccuracy` over the evaluated attributes) or a
                list of metrics.
            **kwargs: See `keras.Model.compile`.
        """
        if loss is not None:
            raise ValueError("AttributeRecognizer computes its own weighted BCE loss; "
                             "compile it without `loss`.")
        from valpat_keras.optimizers import GroupedAdamW

        if isinstance(optimizer, str) and optimizer == "auto":
            optimizer = GroupedAdamW(learning_rate=3e-4, weight_decay=5e-4)
        if isinstance(optimizer, GroupedAdamW):
            optimizer.set_multiplier(self.head.trainable_variables, self.head_lr_multiplier)
        if metrics == "auto":
            metrics = [AttributeMeanAccuracy(self.num_attributes, self.eval_indices)]
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        """Re-compiles a loaded model with its saved optimizer (and metrics)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Weighted BCE of ``y`` (1 / 0 / -1 unknown, masked) against the logits ``y_pred``."""
        if y is None:
            raise ValueError("AttributeRecognizer needs attribute labels: fit on (images, "
                             "labels) batches.")
        ratios = (self.positive_ratios if self.positive_ratios is not None
                  else [0.5] * self.num_attributes)
        labels = ops.cast(y, "float32")
        logits = ops.cast(y_pred, "float32")
        loss = weighted_bce(labels, logits, ratios, weighting=self.loss_weighting)
        if self.label_smoothing > 0:
            loss = loss + _smoothing_correction(labels, logits, ratios, self.label_smoothing)
        for extra in self.losses:
            loss = loss + ops.cast(extra, "float32")
        return loss

    def predict_probabilities(self, images_or_paths, batch_size: int = 64) -> np.ndarray:
        """Attribute probabilities ``(N, num_attributes)`` of images or image files.

        Args:
            images_or_paths: One image path, a list of paths, one float32 image in [0, 1]
                ``(H, W, 3)`` or a batch ``(N, H, W, 3)``. Paths are decoded and resized to
                the encoder's input size.
            batch_size: Images per forward pass.
        """
        if isinstance(images_or_paths, (str, os.PathLike)):
            images_or_paths = [images_or_paths]
        if isinstance(images_or_paths, (list, tuple)) and images_or_paths and isinstance(
                images_or_paths[0], (str, os.PathLike)):
            from valpat_keras.data.pipelines import image_dataset

            data = image_dataset([str(p) for p in images_or_paths],
                                 tuple(self.backbone.image_shape[:2]), batch_size)
            logits = self.predict(data, verbose=0)
        else:
            images = np.asarray(images_or_paths, dtype="float32")
            logits = self.predict(images[None] if images.ndim == 3 else images,
                                  batch_size=batch_size, verbose=0)
        logits = np.asarray(logits, dtype=np.float64)
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    def predict_attributes(self, images_or_paths, batch_size: int = 64) -> list[dict[str, float]]:
        """Named attribute probabilities, one dict per image.

        Args:
            images_or_paths: One image path, a list of paths, one image ``(H, W, 3)`` or a
                batch ``(N, H, W, 3)`` of float32 images in [0, 1].
            batch_size: Images per forward pass.

        Returns:
            ``[{attribute name: probability}, ...]`` in input order (names ``attr_<i>`` when
            the model was built without ``attribute_names``).

        Example:

        ```python
        model.predict_attributes("person.jpg")[0]  # {"Female": 0.91, "Hat": 0.03, ...}
        ```
        """
        names = self.attribute_names or [f"attr_{i}" for i in range(self.num_attributes)]
        probs = self.predict_probabilities(images_or_paths, batch_size)
        return [dict(zip(names, map(float, row))) for row in probs]


def _smoothing_correction(labels, logits, ratios, epsilon: float):
    """What label smoothing adds to `weighted_bce` (same weights, same mean over known labels).

    With targets ``t = y (1 - e) + e / 2`` the BCE on logits ``z`` is
    ``bce(y, z) + z (y - t) = bce(y, z) + e z (y - 1/2)``; the DeepMAR weights stay those of
    the hard label ``y``.
    """
    positive = ops.cast(ops.equal(labels, 1.0), "float32")
    mask = ops.cast(ops.logical_or(ops.equal(labels, 0.0), ops.equal(labels, 1.0)), "float32")
    ratio = ops.cast(ops.convert_to_tensor(ratios), "float32")
    weight = ops.exp(positive * (1.0 - ratio) + (1.0 - positive) * ratio) * mask
    correction = ops.sum(weight * logits * (positive - 0.5)) * epsilon
    return correction / ops.maximum(ops.sum(mask), 1.0)


def _labels_of(records) -> np.ndarray:
    return np.stack([np.asarray(r.attributes) for r in records]).astype(np.float32)


#: How `train_attributes` starts the head: the prior bias, or a linear probe (LP-FT).
HEAD_INITS = ("auto", "prior", "linear_probe")


def init_head_from_linear_probe(model: AttributeRecognizer, paths: Sequence[str],
                                labels: np.ndarray, image_size: tuple[int, int],
                                batch_size: int = 64, c: float = 0.1) -> None:
    """Starts the head at a linear probe of the frozen encoder's features (LP-FT).

    Fine-tuning a pretrained encoder under a head that starts from scratch distorts the
    features before the head has learnt to read them (Kumar et al. 2022, "Fine-Tuning can
    Distort Pretrained Features"); a linear probe first, then fine-tuning, keeps what the
    encoder knows. The probe (`fit_attribute_probe`, balanced when the loss is) is fit on
    the un-augmented training images; the logit batch norm is set to the identity on their
    logits (``gamma`` the logits' std, ``beta`` and the moving mean their mean), so the
    recognizer starts out predicting what the probe predicts.

    Args:
        model: The recognizer whose head is set.
        paths: Training image paths.
        labels: ``(N, A)`` training labels.
        image_size: ``(height, width)``.
        batch_size: Images per forward pass.
        c: The probe's inverse regularisation strength.
    """
    from valpat_keras.evaluation.features import extract_features
    from valpat_keras.evaluation.linear_probe import fit_attribute_probe

    features = extract_features(model.backbone, list(paths), image_size, batch_size,
                                flip=False, normalize=False, verbose=False).features
    weights, bias = fit_attribute_probe(features, labels, c,
                                        balanced=model.loss_weighting == "balanced")
    model.head.dense.kernel.assign(weights)
    model.head.dense.bias.assign(bias)
    norm = model.head.norm
    if norm is not None:
        logits = features @ weights + bias
        mean, var = logits.mean(axis=0), logits.var(axis=0)
        norm.moving_mean.assign(mean)
        norm.moving_variance.assign(var)
        norm.gamma.assign(np.sqrt(var + norm.epsilon))
        norm.beta.assign(mean)


def train_attributes(dataset, out_dir: str | Path, init: str = "random", config: str = "tiny",
                     epochs: int = 10, batch_size: int = 32,
                     image_size: tuple[int, int] = (256, 128), learning_rate: float = 3e-4,
                     weight_decay: float = 5e-4, label_smoothing: float = 0.0,
                     pooling: str = "gem", augment: bool = True, seed: int = 0,
                     head_lr_multiplier: float = 10.0, freeze_batch_norm: bool | None = None,
                     loss_weighting: str = "balanced", head_init: str = "auto",
                     zero_shot: bool = False, zero_shot_prompts=None,
                     steps_per_epoch: int | None = None, verbose: int | str = "auto") -> dict:
    """Fine-tunes an `AttributeRecognizer` on an `AttributeDataset` and evaluates it.

    Trains on the ``train`` split with every attribute of the dataset (validation loss on
    ``val`` when it is not empty), then evaluates on ``test`` over the evaluated attributes
    (``dataset.eval_indices``) with `valpat_keras.evaluation.evaluate_attributes`.

    Writes into ``out_dir``: ``metrics.json`` (``ma``, ``instance_acc``, ``instance_prec``,
    ``instance_recall``, ``instance_f1``, per-attribute mA, and ``zero_shot`` metrics when
    asked), ``history.json`` (per-epoch fit logs), ``attribute_bars.png`` (per-attribute mA;
    ``attribute_bars_zero_shot.png`` too with ``zero_shot``) and
    ``attribute_recognizer.keras`` (the trained model).

    Args:
        dataset: An `AttributeDataset` (e.g. ``datasets.load("pa100k", root)``).
        out_dir: Output folder (created).
        init: Encoder initialisation: ``"random"``, a pretraining run folder, an
            `ImageEncoder` preset folder or a keras-hub preset name (see
            `valpat_keras.models.init.load_image_encoder`).
        config: Encoder configuration for random init (``"tiny"``, ``"resnet50"``, ...).
        epochs: Training epochs.
        batch_size: Images per batch.
        image_size: ``(H, W)`` of the inputs.
        learning_rate: Peak learning rate of the encoder (cosine decay over the run).
        weight_decay: AdamW weight decay.
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
        label_smoothing: Smoothing of the 0/1 targets.
        pooling: ``"gem"`` or ``"avg"`` feature pooling.
        augment: Apply the attribute training augmentation.
        seed: Seed of weights, shuffling and augmentation.
        zero_shot: Also score the test set zero-shot with the pretrained image-text backbone
            (needs ``init`` to be a pretraining run folder with ``backbone/``; checked, with
            the prompts, before training).
        zero_shot_prompts: Per-attribute ``(positive, negative)`` prompts overriding
            `valpat_keras.tasks.zero_shot.PA100K_PROMPTS`.
        steps_per_epoch: Cap on the training steps per epoch (default: one pass).
        verbose: Keras ``fit`` verbosity.

    Returns:
        The metrics dict written to ``metrics.json``.

    Raises:
        InputError: Bad input (no train or test images, a zero-shot run without a
            pretraining run folder, a batch size below 1).
        NonFiniteLossError: A loss became NaN or infinite; training stops at that batch
            and nothing is written.

    Example:

    ```python
    data = datasets.load("pa100k", "/data/PA-100K")
    metrics = train_attributes(data, "runs/par", init="runs/pretrain", epochs=30,
                               zero_shot=True)
    print(metrics["ma"], metrics["zero_shot"]["ma"])
    ```
    """
    from valpat_keras.data.pipelines import labeled_image_dataset
    from valpat_keras.errors import InputError
    from valpat_keras.evaluation import evaluate_attributes, plot_attribute_bars
    from valpat_keras.losses.attribute import positive_ratios
    from valpat_keras.models.init import load_image_encoder
    from valpat_keras.optimizers import GroupedAdamW
    from valpat_keras.run_outputs import write_json
    from valpat_keras.tasks.callbacks import TerminateOnNonFiniteLoss

    if not dataset.train or not dataset.test:
        raise InputError(f"{dataset.name} ({dataset.root}): attribute training needs train "
                         f"and test images (got {len(dataset.train)} train, "
                         f"{len(dataset.test)} test)")
    if head_init not in HEAD_INITS:
        raise InputError(f"head_init must be one of {HEAD_INITS}, got {head_init!r}")
    if int(batch_size) <= 0:
        raise InputError(f"batch_size must be a positive integer, got {batch_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    started = time.time()
    image_size = (int(image_size[0]), int(image_size[1]))

    zero_shot_model = None
    if zero_shot:
        # Checked before training, so a missing backbone or prompt does not cost a run.
        from valpat_keras.models.init import load_backbone
        from valpat_keras.tasks.zero_shot import evaluate_zero_shot, resolve_prompts

        if init == "random":
            raise InputError("zero_shot=True needs init=RUN_DIR, a pretraining run folder "
                             "with the image-text backbone (backbone/)")
        resolve_prompts(dataset.attribute_names, zero_shot_prompts)
        zero_shot_model = load_backbone(init)

    train_labels = _labels_of(dataset.train)
    encoder = load_image_encoder(init, config=config, image_size=image_size, pooling=pooling)
    if freeze_batch_norm is None:
        freeze_batch_norm = str(init) != "random"
    model = AttributeRecognizer(
        encoder, num_attributes=train_labels.shape[1],
        positive_ratios=positive_ratios(train_labels),
        attribute_names=dataset.all_attribute_names, eval_indices=dataset.eval_indices,
        label_smoothing=label_smoothing, head_lr_multiplier=head_lr_multiplier,
        loss_weighting=loss_weighting, freeze_backbone_batch_norm=freeze_batch_norm,
        name="attribute_recognizer")
    if head_init == "auto":
        head_init = "prior" if str(init) == "random" else "linear_probe"
    if head_init == "linear_probe":
        init_head_from_linear_probe(model, [r.path for r in dataset.train], train_labels,
                                    image_size, batch_size)
    train_ds = labeled_image_dataset([r.path for r in dataset.train], train_labels,
                                     image_size=image_size, batch_size=batch_size,
                                     training=True, seed=seed, augment=augment)
    steps = steps_per_epoch or int(np.ceil(len(dataset.train) / batch_size))
    if steps_per_epoch:
        train_ds = train_ds.repeat()
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=max(1, epochs * steps), alpha=0.01)
    model.compile(optimizer=GroupedAdamW(schedule, weight_decay=weight_decay))
    val_ds = None
    if dataset.val:
        val_ds = labeled_image_dataset([r.path for r in dataset.val], _labels_of(dataset.val),
                                       image_size=image_size, batch_size=batch_size,
                                       training=False, seed=seed)
    history = model.fit(train_ds, epochs=epochs, validation_data=val_ds, shuffle=False,
                        steps_per_epoch=steps if steps_per_epoch else None, verbose=verbose,
                        callbacks=[TerminateOnNonFiniteLoss(raise_error=True)])

    test_labels = _labels_of(dataset.test)[:, dataset.eval_indices]
    probs = model.predict_probabilities([r.path for r in dataset.test], batch_size=batch_size)
    result = evaluate_attributes(test_labels, probs[:, dataset.eval_indices])
    names = dataset.attribute_names
    metrics = {k: float(result[k]) for k in ("ma", "instance_acc", "instance_prec",
                                             "instance_recall", "instance_f1")}
    metrics["label_ma"] = dict(zip(names, map(float, result["label_ma"])))
    if zero_shot_model is not None:
        zs = evaluate_zero_shot(dataset, prompts=zero_shot_prompts, batch_size=batch_size,
                                backbone=zero_shot_model[0], tokenizer=zero_shot_model[1])
        metrics["zero_shot"] = {k: v for k, v in zs.items() if k != "label_ma_array"}
        plot_attribute_bars(names, zs["label_ma_array"],
                            path=str(out / "attribute_bars_zero_shot.png"),
                            title=f"{dataset.name}: zero-shot mA per attribute")
    metrics.update({"dataset": dataset.name, "init": str(init), "config": config,
                    "epochs": int(epochs), "learning_rate": float(learning_rate),
                    "head_lr_multiplier": float(head_lr_multiplier), "loss_weighting": loss_weighting,
                    "head_init": head_init,
                    "freeze_batch_norm": bool(freeze_batch_norm), "num_train": len(dataset.train),
                    "num_test": len(dataset.test), "seconds": round(time.time() - started, 1)})

    write_json(out / "metrics.json", metrics)
    write_json(out / "history.json",
               {k: [float(v) for v in vals] for k, vals in history.history.items()})
    plot_attribute_bars(names, result["label_ma"], path=str(out / "attribute_bars.png"),
                        title=f"{dataset.name}: fine-tuned mA per attribute")
    model.save(out / MODEL_FILE)
    return metrics
