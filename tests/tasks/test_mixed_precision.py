"""Every task under ``mixed_bfloat16``: it computes in bfloat16 and its loss stays float32.

`valpat_keras.distribute.runtime_scope` sets the policy as each run function does
(``mixed_precision`` of its run config) and restores the previous one. The pretrainer's
bfloat16 train step is tests/tasks/test_pretrainer.py's
``test_mixed_bfloat16_trains_with_float32_losses`` (an eager forward pass of it takes minutes
on JAX).
"""

import keras
import numpy as np
import pytest
from keras import ops

from valpat_keras.distribute import runtime_scope
from valpat_keras.models import build_image_encoder
from valpat_keras.tasks.attribute_recognizer import AttributeRecognizer
from valpat_keras.tasks.reid import ReIDModel
from valpat_keras.tasks.search import TextSearchModel, build_search_backbone
from valpat_keras.tasks.unsupervised_reid import ClusterContrastReID

pytestmark = pytest.mark.keras

SIZE = (32, 16)
CAPTIONS = ["a woman in a red coat", "a man in blue shorts", "a girl in a white skirt",
            "an old man with a grey hat"]


def _dtype(tensor) -> str:
    return keras.backend.standardize_dtype(tensor.dtype)


def _images(count: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(size=(count, *SIZE, 3)).astype("float32")


def _reid():
    pids = np.repeat(np.arange(4), 2).astype("int32")
    return ReIDModel(build_image_encoder("tiny", SIZE), num_classes=4), _images(8), pids


def _cluster_contrast():
    model = ClusterContrastReID(build_image_encoder("tiny", SIZE), memory_capacity=8)
    centroids = np.random.default_rng(1).normal(size=(4, model.backbone.feature_dim))
    model.set_centroids(centroids / np.linalg.norm(centroids, axis=1, keepdims=True))
    return model, _images(8), np.repeat(np.arange(4), 2).astype("int32")


def _attributes():
    labels = np.random.default_rng(2).integers(-1, 2, size=(8, 5)).astype("float32")
    model = AttributeRecognizer(build_image_encoder("tiny", SIZE), num_attributes=5,
                                positive_ratios=[0.1, 0.3, 0.5, 0.7, 0.9])
    return model, _images(8), labels


def _search():
    backbone, tokenizer = build_search_backbone(CAPTIONS, image_size=SIZE, embedding_dim=16,
                                                vocabulary_size=60, sequence_length=10)
    x = {"images": _images(8), "token_ids": np.asarray(tokenizer(CAPTIONS * 2))}
    return TextSearchModel(backbone, num_classes=4), x, np.tile(np.arange(4), 2).astype("int32")


def _float32(outputs):
    return keras.tree.map_structure(lambda t: ops.cast(t, "float32"), outputs)


@pytest.mark.parametrize("build", [_reid, _cluster_contrast, _attributes, _search],
                         ids=["reid", "cluster_contrast", "attributes", "search"])
def test_task_computes_in_bfloat16_with_a_float32_loss(build):
    keras.utils.set_random_seed(0)
    with runtime_scope(mixed_precision="mixed_bfloat16"):
        model, x, y = build()
        assert model.backbone.compute_dtype == "bfloat16"
        outputs = model(x, training=False)
        assert "bfloat16" in {_dtype(t) for t in keras.tree.flatten(outputs)}
        loss = model.compute_loss(x, y, outputs, training=False)
        # The same outputs given in float32: the loss casts its inputs first.
        reference = model.compute_loss(x, y, _float32(outputs), training=False)
    assert keras.mixed_precision.dtype_policy().name == "float32"  # restored
    assert _dtype(loss) == "float32"
    assert np.isfinite(float(ops.convert_to_numpy(loss)))
    np.testing.assert_allclose(float(ops.convert_to_numpy(loss)),
                               float(ops.convert_to_numpy(reference)), rtol=1e-6)

