"""The attribute recognizer through the shared harness: default compile, frozen BN, presets.

`tests/test_serialization.py` runs every serializable class once; these cases add what the
attribute transfer relies on: the default `GroupedAdamW` and its head multiplier after a
reload, a frozen backbone batch norm, the saved loss, and the keras-hub preset round trip.
"""

import numpy as np
import pytest
from harness import run_model_saving_test, run_preset_saving_test

from valpat_keras.models import build_image_encoder
from valpat_keras.optimizers import GroupedAdamW
from valpat_keras.tasks.attributes import AttributeRecognizer

pytestmark = pytest.mark.keras

NAMES = ["Female", "Hat", "Backpack", "Shorts", "boots"]


def _recognizer_kwargs(**overrides):
    kwargs = {"backbone": build_image_encoder("tiny", image_size=(32, 16)),
              "num_attributes": 5, "positive_ratios": [0.1, 0.3, 0.5, 0.7, 0.9],
              "attribute_names": NAMES, "eval_indices": [0, 2, 4], "label_smoothing": 0.1,
              "dropout": 0.2, "head_lr_multiplier": 4.0, "loss_weighting": "balanced",
              "freeze_backbone_batch_norm": True}
    return {**kwargs, **overrides}


def _images(n=3):
    return np.random.default_rng(0).uniform(size=(n, 32, 16, 3)).astype("float32")


def test_recognizer_keras_round_trip_keeps_config_weights_and_grouped_optimizer(tmp_path):
    model, restored = run_model_saving_test(AttributeRecognizer, _recognizer_kwargs(),
                                            _images(), tmp_path, compile_kwargs={})
    # The head's learning-rate multiplier is runtime state, set again on re-compiling.
    assert type(restored.optimizer) is GroupedAdamW
    assert {restored.optimizer.multiplier(v) for v in restored.head.trainable_variables} == {4.0}
    assert {restored.optimizer.multiplier(v)
            for v in restored.backbone.trainable_variables} == {1.0}
    # The saved loss is the same loss.
    labels = np.random.default_rng(1).integers(-1, 2, size=(3, 5)).astype("float32")
    logits = np.random.default_rng(2).normal(size=(3, 5)).astype("float32")
    np.testing.assert_allclose(np.asarray(restored.compute_loss(y=labels, y_pred=logits)),
                               np.asarray(model.compute_loss(y=labels, y_pred=logits)),
                               rtol=1e-6)


def test_recognizer_preset_round_trip(tmp_path):
    run_preset_saving_test(AttributeRecognizer,
                           _recognizer_kwargs(freeze_backbone_batch_norm=False, dropout=0.0),
                           _images(), tmp_path)
