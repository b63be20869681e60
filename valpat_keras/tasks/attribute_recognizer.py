"""The pedestrian attribute recognizer: an image encoder plus a linear head, and its mA metric.

The recipe is the strong baseline of Jia et al. ("Rethinking of pedestrian attribute
recognition", the Rethinking_of_PAR code base): pooled encoder features, one logit per
attribute (optionally batch-normalised), weighted binary cross entropy with the DeepMAR
positive-ratio weights, labels of -1 masked out. The model may train on every attribute of a
dataset while evaluation uses only its evaluated set (``dataset.eval_indices``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from valpat_keras.data.pipelines import image_dataset
from valpat_keras.losses.attribute import prior_logits, weighted_bce
from valpat_keras.models.batch_norm import freeze_batch_norm
from valpat_keras.models.embedding import predict_fixed_batches
from valpat_keras.models.heads import AttributeHead
from valpat_keras.models.image_encoder import ImageEncoder
from valpat_keras.models.preprocessors import ImagePreprocessor
from valpat_keras.optimizers import GroupedAdamW
from valpat_keras.tasks.attribute_scores import decide_attributes
from valpat_keras.tasks.base import ValPatTask


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
class AttributeRecognizer(ValPatTask):
    """Pedestrian attribute recognizer: image encoder -> (dropout) -> one logit per attribute.

    Trained with weighted binary cross entropy (positive-ratio weights of the training set,
    stored in the config so a saved model keeps its loss) and labels of -1 masked out;
    optional label smoothing of the 0/1 targets. Outputs logits; `predict_attributes` gives
    named probabilities. Follows the `valpat_keras.tasks.base.ValPatTask` contract:
    ``compile()`` defaults to a `GroupedAdamW` (encoder learning rate 3e-4, the head
    ``head_lr_multiplier`` times it, weight decay 5e-4) and the `AttributeMeanAccuracy`
    metric, and raises on a ``loss``. The model compiles itself once its config is set
    (pass ``compile=False`` to skip), as the default metric needs ``eval_indices``.

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
        thresholds: Sequence[float] | None. Per-attribute decision thresholds on the
            probabilities (an attribute is present when ``prob > threshold``), e.g.
            calibrated on validation by `train_attributes`; ``None``: 0.5 everywhere. Read
            them as `attribute_thresholds`; used by `decide`, `predict_labels`.
        exclusive_groups: Sequence[Sequence[int]] | None. Mutually exclusive attribute
            columns (age bins, viewpoints; `valpat_keras.tasks.attribute_scores.
            exclusive_groups_for`): `decide` picks exactly one member of each.
        preprocessor: An `ImagePreprocessor` or ``None`` (images arrive decoded, see
            `valpat_keras.data.pipelines`); the run function attaches one before saving.
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

    # `from_preset` builds this task around a saved `ImageEncoder`.
    backbone_cls = ImageEncoder
    preprocessor_cls = ImagePreprocessor

    def __init__(self, backbone, num_attributes: int,
                 positive_ratios: Sequence[float] | None = None,
                 attribute_names: Sequence[str] | None = None,
                 eval_indices: Sequence[int] | None = None,
                 label_smoothing: float = 0.0, dropout: float = 0.0,
                 head_batch_norm: bool = True, head_lr_multiplier: float = 10.0,
                 loss_weighting: str = "deepmar", freeze_backbone_batch_norm: bool = False,
                 thresholds: Sequence[float] | None = None,
                 exclusive_groups: Sequence[Sequence[int]] | None = None,
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
        self.thresholds = None
        self.attribute_thresholds = thresholds
        self.exclusive_groups = _checked_groups(exclusive_groups, num_attributes)
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
            "thresholds": self.thresholds,
            "exclusive_groups": self.exclusive_groups,
        })
        return config

    @property
    def attribute_thresholds(self) -> np.ndarray:
        """``(num_attributes,)`` decision thresholds (0.5 where none was calibrated).

        Assign a sequence (or None for 0.5 everywhere) to change them; they are saved in
        the config (``thresholds``), so ``.keras`` files and presets keep them.
        """
        if self.thresholds is None:
            return np.full(self.num_attributes, 0.5)
        return np.asarray(self.thresholds, dtype=np.float64)

    @attribute_thresholds.setter
    def attribute_thresholds(self, thresholds: Sequence[float] | None) -> None:
        if thresholds is None:
            self.thresholds = None
            return
        values = [float(t) for t in np.asarray(thresholds, dtype=np.float64).reshape(-1)]
        if len(values) != self.num_attributes or not all(0.0 <= t <= 1.0 for t in values):
            raise ValueError(f"thresholds must be {self.num_attributes} probabilities in "
                             f"[0, 1], got {thresholds}")
        self.thresholds = values

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """``(N, num_attributes)`` bool decisions from probabilities.

        ``prob > threshold`` per attribute (`attribute_thresholds`), and one member of each
        exclusive group (`valpat_keras.tasks.attribute_scores.decide_attributes`).
        """
        return decide_attributes(probs, self.attribute_thresholds, self.exclusive_groups)

    def default_optimizer(self) -> GroupedAdamW:
        """``compile(optimizer="auto")``: `GroupedAdamW`, encoder learning rate 3e-4, wd 5e-4.

        The head's learning rate is ``head_lr_multiplier`` times the encoder's (set by
        `configure_optimizer`).
        """
        return GroupedAdamW(learning_rate=3e-4, weight_decay=5e-4)

    def default_metrics(self) -> list:
        """``compile(metrics="auto")``: `AttributeMeanAccuracy` over the evaluated attributes."""
        return [AttributeMeanAccuracy(self.num_attributes, self.eval_indices)]

    def configure_optimizer(self, optimizer: keras.optimizers.Optimizer) -> None:
        """Gives the head its learning-rate multiplier when the optimizer is a `GroupedAdamW`.

        Also runs when a saved model is re-compiled (`compile_from_config`), since which
        variables are grouped is runtime state of the optimizer, not part of its config.
        """
        if isinstance(optimizer, GroupedAdamW):
            optimizer.set_multiplier(self.head.trainable_variables, self.head_lr_multiplier)

    def task_loss(self, x, y, y_pred, training: bool):
        """Weighted BCE of ``y`` (1 / 0 / -1 unknown, masked) against the logits ``y_pred``.

        Label smoothing adds `_smoothing_correction`; the layers' regularisation losses are
        added by `compute_loss`.
        """
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
            data = image_dataset([str(p) for p in images_or_paths],
                                 tuple(self.backbone.image_shape[:2]), batch_size)
            logits = predict_fixed_batches(self, data, batch_size)
        else:
            images = np.asarray(images_or_paths, dtype="float32")
            logits = predict_fixed_batches(self, images[None] if images.ndim == 3 else images,
                                           batch_size)
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

    def predict_labels(self, images_or_paths, batch_size: int = 64) -> np.ndarray:
        """``(N, num_attributes)`` bool: present or not, by `decide` (thresholds, groups).

        Args:
            images_or_paths: As for `predict_probabilities`.
            batch_size: Images per forward pass.
        """
        return self.decide(self.predict_probabilities(images_or_paths, batch_size))


def _checked_groups(groups: Sequence[Sequence[int]] | None,
                    num_attributes: int) -> list[list[int]] | None:
    """``exclusive_groups`` as lists of ints: disjoint, in range, two members or more."""
    if groups is None:
        return None
    checked = [[int(i) for i in group] for group in groups]
    flat = [i for group in checked for i in group]
    if (any(len(group) < 2 for group in checked) or len(set(flat)) != len(flat)
            or not all(0 <= i < num_attributes for i in flat)):
        raise ValueError(f"exclusive_groups must be disjoint lists of 2+ column indices in "
                         f"[0, {num_attributes}), got {groups}")
    return checked


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
