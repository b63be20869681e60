"""The VAL-PAT pretraining task: image-image, image-text and attribute objectives.

One class, one code path on TensorFlow, PyTorch and JAX: the momentum (EMA) key encoder and
the queue of negative keys are non-trainable variables updated with ``assign`` inside
``call`` / ``compute_loss``, which every backend's ``fit`` carries between steps. That state
is why the pretrainer is a subclassed `keras.Model` (with the `TaskContract` of every task)
rather than a functional keras-hub Task.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import keras
import numpy as np
from keras import ops

from valpat_keras.evaluation.distances import l2_normalize as l2_normalize_np
from valpat_keras.losses.attribute import batch_mean_accuracy, prior_logits, weighted_bce
from valpat_keras.losses.contrastive import info_nce, symmetric_info_nce
from valpat_keras.losses.normalization import l2_normalize
from valpat_keras.models.backbone import ValPatBackbone
from valpat_keras.models.heads import AttributeHead, PredictionHead, ProjectionHead
from valpat_keras.models.image_encoder import ImageEncoder
from valpat_keras.tasks.base import TaskContract
from valpat_keras.tasks.callbacks import TerminateOnNonFiniteLoss

#: The former name of the NaN guard, now shared by every task (`valpat_keras.tasks.callbacks`).
TerminateOnNaNWithMessage = TerminateOnNonFiniteLoss

OBJECTIVES = ("ssl", "itc", "attr")

#: The accuracy-like metric logged per objective (``ssl_acc``, ``itc_acc``, ``attr_ma``).
_METRIC_NAMES = {"ssl": "acc", "itc": "acc", "attr": "ma"}


def _active_weights(loss_weights: Mapping[str, float] | None) -> dict[str, float]:
    weights = {"ssl": 1.0, "itc": 1.0, "attr": 1.0} if loss_weights is None else dict(loss_weights)
    unknown = set(weights) - set(OBJECTIVES)
    if unknown:
        raise ValueError(f"Unknown objective(s) {sorted(unknown)} in loss_weights; "
                         f"expected keys among {list(OBJECTIVES)}")
    return {name: float(w) for name, w in weights.items() if w}


def _torch_ema_update(pairs, momentum) -> None:
    """The EMA of every (query, key) variable pair as one fused in-place PyTorch update.

    Under the torch backend each generic op is an eager kernel launch plus Keras' Python
    dispatch, so the per-variable loop costs five calls per variable (a few hundred per step
    for ResNet-50); ``torch._foreach_*`` runs the whole tree in two calls, as the hand-written
    PyTorch loop in benchmarks/ does. Only reached under the torch backend (imports torch).
    """
    import torch

    keys = [key.value for _, key in pairs]
    queries = [query.value.detach() for query, _ in pairs]
    with torch.no_grad():
        torch._foreach_mul_(keys, momentum)
        torch._foreach_add_(keys, torch._foreach_mul(queries, 1.0 - momentum))


@keras.saving.register_keras_serializable(package="valpat_keras")
class ValPatPretrainer(TaskContract, keras.Model):
    """VAL-PAT pretraining: a `ValPatBackbone` plus the heads and state of three objectives.

    A keras-hub-style task (Bao et al. 2023) following the `TaskContract` of every VAL-PAT
    task (``compile(optimizer="auto")``, `task_loss`, trackers), but a subclassed
    `keras.Model` rather than a functional `keras_hub.models.Task`: its train step mutates
    state (the momentum encoder's EMA in ``call``, the queue of negative keys in the loss).
    The image encoder learns from

    1. ``ssl``: MoCo image-image contrast. Query: image encoder -> projection head ->
       predictor head on ``view1``. Key: a momentum copy of the encoder and projection
       (EMA of the query weights, ``momentum`` rising to 1 on a cosine schedule when
       ``momentum_schedule_steps`` > 0) on ``view2``. InfoNCE against a queue of
       ``queue_size`` earlier keys and/or the other keys of the batch.
    2. ``itc``: CLIP symmetric InfoNCE between the image and caption embeddings of the
       backbone, with its learnable (clipped) logit scale.
    3. ``attr``: a linear head on the image features with the weighted BCE of DeepMAR,
       weights from the training-set ``positive_ratios`` (kept in the config), -1 masked.

    ``loss_weights`` sets the weighted sum; a missing key or weight 0 switches an objective
    off, and nothing it needs is built (no key encoder or queue without ``ssl``). Inputs are
    the dict batches of `valpat_keras.data.pipelines.pretrain_dataset` (``"view1"``,
    ``"view2"``, ``"token_ids"``, ``"attributes"``), ``y`` is ``None``. ``fit`` logs
    ``loss`` and per objective ``ssl_loss``/``ssl_acc``, ``itc_loss``/``itc_acc``,
    ``attr_loss``/``attr_ma`` (batch-wise mean accuracy).

    Args:
        backbone: The `ValPatBackbone` to pretrain.
        num_attributes: int. Length of the attribute vectors (0: no attribute data).
        attribute_names: list of str. Names of the attributes (kept for the transfer).
        positive_ratios: list of float. Training-set positive ratio per attribute (see
            `valpat_keras.losses.positive_ratios`); ``None`` means 0.5 everywhere.
        loss_weights: dict. ``{"ssl": 1.0, "itc": 1.0, "attr": 1.0}`` by default.
        ssl_dim: int. Width of the image-image embedding. Defaults to ``128``.
        ssl_hidden_dim: int. Hidden width of the projection/predictor MLPs. Defaults
            to ``1024``.
        queue_size: int. Number of negative keys kept (0: in-batch negatives only). Must be
            a multiple of the batch size. Defaults to ``4096`` (MoCo used 65536 on GPUs).
        in_batch_negatives: bool. Also use the other keys of the batch as negatives.
            Always on without a queue. Defaults to ``False``.
        temperature: float. InfoNCE temperature of ``ssl``. Defaults to ``0.2``.
        momentum: float. EMA momentum of the key encoder. Defaults to ``0.999``.
        momentum_schedule_steps: int. Steps over which the momentum rises to 1 along a
            half cosine (0: constant). Defaults to ``0``.
        **kwargs: Standard `keras.Model` arguments (e.g. ``name``).

    Example:

    ```python
    backbone = ValPatBackbone(build_image_encoder("tiny", image_size=(64, 32)),
                              build_text_encoder("tiny", vocabulary_size=tok.vocabulary_size,
                                                 sequence_length=tok.sequence_length))
    pretrainer = ValPatPretrainer(backbone, num_attributes=26, queue_size=256)
    pretrainer.compile()
    pretrainer.fit(pretrain_dataset(records, (64, 32), 8, tokenizer=tok), epochs=1)
    ```
    """

    def __init__(self, backbone: ValPatBackbone, num_attributes: int = 0,
                 attribute_names: Sequence[str] | None = None,
                 positive_ratios: Sequence[float] | None = None,
                 loss_weights: Mapping[str, float] | None = None, ssl_dim: int = 128,
                 ssl_hidden_dim: int = 1024, queue_size: int = 4096,
                 in_batch_negatives: bool = False, temperature: float = 0.2,
                 momentum: float = 0.999, momentum_schedule_steps: int = 0, **kwargs):
        super().__init__(**kwargs)
        weights = _active_weights(loss_weights)
        if not weights:
            raise ValueError("loss_weights switches every objective off; enable at least one "
                             f"of {list(OBJECTIVES)}")
        if "attr" in weights and int(num_attributes) <= 0:
            raise ValueError("The 'attr' objective needs num_attributes > 0 (the data has no "
                             "attribute labels?); set its loss weight to 0 to switch it off.")
        if positive_ratios is not None and len(positive_ratios) != int(num_attributes):
            raise ValueError(f"positive_ratios has {len(positive_ratios)} entries but "
                             f"num_attributes={num_attributes}")
        # === Config ===
        self.num_attributes = int(num_attributes)
        self.attribute_names = list(attribute_names or [])
        self.positive_ratios = (
            [float(r) for r in positive_ratios] if positive_ratios is not None
            else [0.5] * self.num_attributes)
        self.loss_weights = weights
        self.ssl_dim = int(ssl_dim)
        self.ssl_hidden_dim = int(ssl_hidden_dim)
        self.queue_size = int(queue_size)
        self.in_batch_negatives = bool(in_batch_negatives) or self.queue_size == 0
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.momentum_schedule_steps = int(momentum_schedule_steps)

        # === Layers ===
        self.backbone = backbone
        feature_dim = backbone.image_encoder.feature_dim
        if "ssl" in weights:
            self.projection = ProjectionHead(self.ssl_hidden_dim, self.ssl_dim,
                                             name="ssl_projection")
            self.predictor = PredictionHead(self.ssl_hidden_dim, self.ssl_dim,
                                            name="ssl_predictor")
            self.projection.build((None, feature_dim))
            self.predictor.build((None, self.ssl_dim))
            self._build_momentum_encoder()
        if "attr" in weights:
            self.attribute_head = AttributeHead(self.num_attributes, name="attribute_head")
            self.attribute_head.build((None, feature_dim))
            if positive_ratios is not None:
                # Start each logit at the weighted-BCE optimum of a constant (the prior):
                # from a zero bias, rare attributes are predicted positive for half of every
                # batch for thousands of steps. Loaded weights replace it.
                self.attribute_head.dense.bias.assign(prior_logits(self.positive_ratios))
        if "itc" not in weights:
            # Without image-text contrast the text tower and both projections get no gradient:
            # freeze them per variable (a frozen layer would also switch BatchNorm to inference)
            # so the optimiser neither tracks them nor warns about missing gradients.
            for layer in (backbone.text_encoder, backbone.image_projection,
                          backbone.text_projection, backbone.logit_scale_layer):
                for variable in layer.weights:
                    variable.trainable = False

        # === Metrics (fit logs) ===
        self.make_trackers(f"{name}_{kind}" for name in OBJECTIVES if name in weights
                           for kind in ("loss", _METRIC_NAMES[name]))
        self.default_learning_rate, self.default_weight_decay = 1e-3, 1e-4
        self.built = True

    def _build_momentum_encoder(self):
        """Creates the key encoder / projection as copies, frozen per variable, and the queue."""
        query_encoder = self.backbone.image_encoder
        config = query_encoder.get_config()
        config["name"] = "key_image_encoder"
        # A second instance with weights copied through NumPy: `assign` from the query
        # variables would share JAX buffers ("donate the same buffer twice"). The name scope
        # gives its variables their own paths: under torch, variables are registered as
        # parameters by path, and a duplicate path hides the query weights from
        # `zero_grad`, so their gradients would accumulate from step to step.
        with keras.name_scope("momentum"):
            self.key_encoder = ImageEncoder.from_config(config)
            self.key_projection = ProjectionHead.from_config(
                {**self.projection.get_config(), "name": "key_ssl_projection"})
            self.key_projection.build((None, query_encoder.feature_dim))
        self.key_encoder.set_weights(query_encoder.get_weights())
        self.key_projection.set_weights(self.projection.get_weights())
        # Per variable, not per layer: a frozen layer would also put BatchNorm in inference
        # mode, while MoCo's key encoder uses batch statistics.
        for variable in self.key_encoder.weights + self.key_projection.weights:
            variable.trainable = False
        # Pairs (query variable, key variable) that the EMA moves; BN statistics are not
        # averaged (as MoCo: buffers follow the key encoder's own forward passes).
        query_vars = query_encoder.weights + self.projection.weights
        key_vars = self.key_encoder.weights + self.key_projection.weights
        self._ema_pairs = [(q, k) for q, k in zip(query_vars, key_vars) if q.trainable]
        self.ema_step = self.add_weight(name="ema_step", shape=(), dtype="int32",
                                        initializer="zeros", trainable=False)
        if self.queue_size:
            rng = np.random.default_rng(0)
            queue = l2_normalize_np(
                rng.normal(size=(self.queue_size, self.ssl_dim)).astype("float32"), axis=1)
            self.queue = self.add_weight(
                name="queue", shape=(self.queue_size, self.ssl_dim), dtype="float32",
                initializer=keras.initializers.Constant(queue), trainable=False)
            self.queue_pointer = self.add_weight(name="queue_pointer", shape=(), dtype="int32",
                                                 initializer="zeros", trainable=False)

    @property
    def objectives(self) -> list[str]:
        """The active objectives, in the order ``ssl``, ``itc``, ``attr``."""
        return [name for name in OBJECTIVES if name in self.loss_weights]

    def current_momentum(self):
        """The EMA momentum of the current step (float32 scalar tensor)."""
        if self.momentum_schedule_steps <= 0:
            return ops.convert_to_tensor(self.momentum, "float32")
        progress = ops.minimum(ops.cast(self.ema_step.value, "float32")
                               / float(self.momentum_schedule_steps), 1.0)
        return 1.0 - (1.0 - self.momentum) * (ops.cos(math.pi * progress) + 1.0) / 2.0

    def update_momentum_encoder(self):
        """One EMA step: ``key = m * key + (1 - m) * query`` for every averaged variable."""
        m = self.current_momentum()
        if keras.backend.backend() == "torch" and self._ema_is_float32():
            _torch_ema_update(self._ema_pairs, m)
        else:
            for query_var, key_var in self._ema_pairs:
                # stop_gradient: under JAX the key weights read later in this step would
                # otherwise carry gradients back into the query weights.
                source = ops.stop_gradient(ops.cast(query_var.value, "float32"))
                new = m * ops.cast(key_var.value, "float32") + (1.0 - m) * source
                key_var.assign(ops.cast(new, key_var.dtype))
        self.ema_step.assign(self.ema_step.value + 1)

    def _ema_is_float32(self) -> bool:
        return all(q.dtype == "float32" and k.dtype == "float32" for q, k in self._ema_pairs)

    def enqueue(self, keys):
        """Writes a batch of keys (L2-normalised) at the queue pointer and advances it (wraps)."""
        keys = l2_normalize(ops.stop_gradient(ops.convert_to_tensor(keys)))
        batch = keys.shape[0]
        if batch is not None and self.queue_size % batch:
            raise ValueError(
                f"The MoCo queue size ({self.queue_size}) must be a multiple of the batch size "
                f"({batch}); change --queue-size or --batch-size (and keep drop_remainder).")
        pointer = self.queue_pointer.value
        start = ops.stack([pointer, ops.zeros_like(pointer)])
        self.queue.assign(ops.slice_update(self.queue.value, start, keys))
        self.queue_pointer.assign((pointer + ops.shape(keys)[0]) % self.queue_size)

    def _require(self, x, key, objective):
        if key not in x:
            raise KeyError(f"The '{objective}' objective needs the input key {key!r} (got keys "
                           f"{sorted(x)}); check the data or switch '{objective}' off.")
        return x[key]

    def call(self, x, training=False):
        """Forward pass: the outputs every active objective needs (a dict of tensors)."""
        images = self._require(x, "view1", "image")
        features = self.backbone.image_encoder(images, training=training)
        outputs = {}
        if "ssl" in self.loss_weights:
            projected = self.projection(features, training=training)
            outputs["ssl_query"] = self.predictor(projected, training=training)
            if training:
                # MoCo updates the key encoder before computing this step's keys.
                self.update_momentum_encoder()
            key_view = self._require(x, "view2", "ssl")
            key_features = self.key_encoder(key_view, training=training)
            outputs["ssl_key"] = ops.stop_gradient(
                self.key_projection(key_features, training=training))
        if "itc" in self.loss_weights:
            token_ids = self._require(x, "token_ids", "itc")
            outputs["image_embedding"] = self.backbone.image_l2(
                self.backbone.image_projection(features))
            outputs["text_embedding"] = self.backbone.get_text_embeddings(
                token_ids, training=training)
        if "attr" in self.loss_weights:
            outputs["attribute_logits"] = self.attribute_head(features, training=training)
        return outputs

    def compute_objectives(self, x, y_pred) -> dict:
        """Per-objective ``(loss, accuracy)`` float32 scalars for a forward pass's outputs."""
        results = {}
        if "ssl" in self.loss_weights:
            negatives = self.queue.value if self.queue_size else None
            results["ssl"] = info_nce(y_pred["ssl_query"], y_pred["ssl_key"], negatives,
                                      temperature=self.temperature,
                                      in_batch_negatives=self.in_batch_negatives)
        if "itc" in self.loss_weights:
            results["itc"] = symmetric_info_nce(y_pred["image_embedding"],
                                                y_pred["text_embedding"],
                                                self.backbone.logit_scale)
        if "attr" in self.loss_weights:
            labels = self._require(x, "attributes", "attr")
            logits = y_pred["attribute_logits"]
            results["attr"] = (weighted_bce(labels, logits, self.positive_ratios),
                               batch_mean_accuracy(labels, logits))
        return results

    def task_loss(self, x, y, y_pred, training: bool):
        """Weighted sum of the active objectives; updates the queue when training."""
        total = ops.convert_to_tensor(0.0, "float32")
        for name, (loss, accuracy) in self.compute_objectives(x, y_pred).items():
            total = total + self.loss_weights[name] * loss
            self.track(f"{name}_loss", loss)
            self.track(f"{name}_{_METRIC_NAMES[name]}", accuracy)
        if training and "ssl" in self.loss_weights and self.queue_size:
            # After the loss: this step's keys are negatives only from the next step on.
            self.enqueue(y_pred["ssl_key"])
        return total

    def default_optimizer(self) -> keras.optimizers.Optimizer:
        """``AdamW`` with the ``learning_rate`` and ``weight_decay`` given to `compile`."""
        return keras.optimizers.AdamW(learning_rate=self.default_learning_rate,
                                      weight_decay=self.default_weight_decay)

    def compile(self, optimizer="auto", learning_rate: float = 1e-3,
                weight_decay: float = 1e-4, **kwargs):
        """Compiles with defaults for pretraining.

        Args:
            optimizer: ``"auto"`` gives ``AdamW(learning_rate, weight_decay)``
                (`default_optimizer`); otherwise any Keras optimizer (name or instance).
            learning_rate: Learning rate of the default optimizer.
            weight_decay: Weight decay of the default optimizer.
            **kwargs: Passed to `TaskContract.compile` (``metrics``, ``jit_compile``, ...;
                a ``loss`` other than ``"auto"`` / ``None`` raises).
        """
        self.default_learning_rate = float(learning_rate)
        self.default_weight_decay = float(weight_decay)
        super().compile(optimizer=optimizer, **kwargs)
        # Build the optimiser state now so `load_weights` (BackupAndRestore) restores it on
        # every backend instead of skipping variables that do not exist yet.
        self.optimizer.build(self.trainable_variables)

    def get_config(self):
        config = super().get_config()
        config.update({
            "backbone": keras.layers.serialize(self.backbone),
            "num_attributes": self.num_attributes,
            "attribute_names": self.attribute_names,
            "positive_ratios": self.positive_ratios,
            "loss_weights": self.loss_weights,
            "ssl_dim": self.ssl_dim,
            "ssl_hidden_dim": self.ssl_hidden_dim,
            "queue_size": self.queue_size,
            "in_batch_negatives": self.in_batch_negatives,
            "temperature": self.temperature,
            "momentum": self.momentum,
            "momentum_schedule_steps": self.momentum_schedule_steps,
        })
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["backbone"] = keras.layers.deserialize(config["backbone"],
                                                      custom_objects=custom_objects)
        return cls(**config)
