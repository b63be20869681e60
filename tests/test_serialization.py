"""Every class registered with ``register_keras_serializable(package="valpat_keras")`` goes
through the shared harness (tests/harness.py): config round trip, ``.keras`` round trip for
tasks and models, ``save_to_preset`` / ``from_preset`` for keras-hub backbones, equal outputs
and variables after reload.

`test_every_registered_class_has_a_case` imports every module of the package and fails naming
any registered class without an entry in `CASES`, so a new class cannot skip the harness.
Marked ``keras``: runs on jax, tensorflow and torch. Sizes are tiny (32x16 images, the
"tiny" encoder configs) to keep the file fast.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path

import keras
import keras_hub
import numpy as np
import pytest
from harness import (
    assert_allclose_structure,
    perturb_weights,
    run_layer_test,
    run_metric_test,
    run_model_saving_test,
    run_optimizer_test,
    run_preprocessor_preset_test,
    run_preset_saving_test,
    run_schedule_test,
    run_serialization_test,
    to_numpy,
    token_lists,
)

import valpat_keras
from valpat_keras.data.tokenizer import CaptionWordPieceTokenizer
from valpat_keras.models.backbone import L2Normalize, LogitScale, ValPatBackbone
from valpat_keras.models.batch_norm import BatchNormalization as ClosedFormBatchNormalization
from valpat_keras.models.fast_layers import Conv2D as FastConv2D
from valpat_keras.models.fast_layers import MaxPooling2D as FastMaxPooling2D
from valpat_keras.models.heads import AttributeHead, PredictionHead, ProjectionHead
from valpat_keras.models.image_encoder import ImageEncoder, build_image_encoder
from valpat_keras.models.mgn import EmbeddingHead
from valpat_keras.models.non_local import NonLocalBlock
from valpat_keras.models.pooling import GeneralizedMeanPooling2D, TokenPooling
from valpat_keras.models.preprocessors import (
    CaptionPreprocessor,
    ImagePreprocessor,
    PedestrianImageConverter,
    ValPatPreprocessor,
)
from valpat_keras.models.reid_head import BNNeck
from valpat_keras.models.text_encoder import PresetTextEncoder, TextEncoder, build_text_encoder
from valpat_keras.models.vit_resize import StridedViTBackbone, StridedViTPatchingAndEmbedding
from valpat_keras.optimizers import GroupedAdamW
from valpat_keras.tasks.attributes import AttributeMeanAccuracy, AttributeRecognizer
from valpat_keras.tasks.pretrainer import ValPatPretrainer
from valpat_keras.tasks.reid import (
    AGWReID,
    GradientGate,
    MGNReID,
    ReIDModel,
    WarmupLearningRate,
)
from valpat_keras.tasks.search import TextSearchModel
from valpat_keras.tasks.unsupervised_reid import ClusterContrastReID, ClusterMemory

pytestmark = pytest.mark.keras

PACKAGE = "valpat_keras"
IMAGE_SIZE = (32, 16)
VOCABULARY_SIZE, SEQUENCE_LENGTH = 40, 8

#: Registered name ("valpat_keras>Class") -> the check, called with a temporary folder.
CASES: dict[str, Callable[[Path], None]] = {}


def case(name: str):
    """Registers the harness case of the serializable class ``name``."""
    def register(check):
        CASES[f"{PACKAGE}>{name}"] = check
        return check
    return register


def _rng(seed=0):
    return np.random.default_rng(seed)


def _images(n=2, seed=0):
    return _rng(seed).random((n, *IMAGE_SIZE, 3)).astype("float32")


def _token_ids():
    return np.array([[2, 7, 9, 11, 3, 0, 0, 0], [2, 5, 3, 0, 0, 0, 0, 0]], "int32")


def _image_encoder():
    return build_image_encoder("tiny", image_size=IMAGE_SIZE)


def _text_encoder():
    return build_text_encoder("tiny", vocabulary_size=VOCABULARY_SIZE,
                              sequence_length=SEQUENCE_LENGTH)


def _backbone():
    return ValPatBackbone(_image_encoder(), _text_encoder(), embedding_dim=16)


def _pairs():
    return {"images": _images(), "token_ids": _token_ids()}


INFERENCE = {"training": False}


# === Layers ===

@case("LogitScale")
def _logit_scale(tmp_path):
    layer, revived = run_layer_test(LogitScale, {"init": 2.0, "max_log_scale": 3.0},
                                    _rng().random((2, 4)).astype("float32"))
    np.testing.assert_allclose(float(to_numpy(revived.scale())), float(to_numpy(layer.scale())))
    layer.log_scale.assign(5.0)  # above the clip
    np.testing.assert_allclose(float(to_numpy(layer.scale())), np.exp(3.0), rtol=1e-6)


@case("L2Normalize")
def _l2_normalize(tmp_path):
    x = _rng().normal(size=(3, 5)).astype("float32")
    layer, _ = run_layer_test(L2Normalize, {}, x, expected_output_shape=(3, 5))
    np.testing.assert_allclose(to_numpy(layer(x)), x / np.linalg.norm(x, axis=1, keepdims=True),
                               rtol=1e-5)


@case("GradientGate")
def _gradient_gate(tmp_path):
    run_layer_test(GradientGate, {}, _rng().normal(size=(2, 5)).astype("float32"))


@case("BNNeck")
def _bnneck(tmp_path):
    run_layer_test(BNNeck, {"momentum": 0.8, "epsilon": 1e-3},
                   _rng().normal(size=(4, 6)).astype("float32"), call_kwargs=INFERENCE,
                   expected_output_shape=(4, 6))


@case("BatchNormalization")
def _closed_form_batch_norm(tmp_path):
    x = _rng().normal(size=(4, 3, 2, 5)).astype("float32")
    layer, revived = run_layer_test(ClosedFormBatchNormalization,
                                    {"momentum": 0.9, "epsilon": 1e-5}, x,
                                    call_kwargs=INFERENCE)
    assert type(revived) is ClosedFormBatchNormalization
    # Training mode (batch statistics, the closed-form path) agrees too.
    assert_allclose_structure(revived(x, training=True), layer(x, training=True))


@case("Conv2D")
def _fast_conv2d(tmp_path):
    x = _rng().normal(size=(2, 6, 4, 3)).astype("float32")
    _, revived = run_layer_test(FastConv2D, {"filters": 5, "kernel_size": 3, "padding": "same"},
                                x, expected_output_shape=(2, 6, 4, 5))
    assert type(revived) is FastConv2D


@case("MaxPooling2D")
def _fast_max_pooling2d(tmp_path):
    x = _rng().normal(size=(2, 7, 5, 3)).astype("float32")
    _, revived = run_layer_test(FastMaxPooling2D, {"pool_size": 3, "strides": 2}, x,
                                expected_output_shape=(2, 3, 2, 3))
    assert type(revived) is FastMaxPooling2D


@case("EmbeddingHead")
def _embedding_head(tmp_path):
    run_layer_test(EmbeddingHead, {"embedding_dim": 4, "num_classes": 3},
                   _rng().normal(size=(4, 6)).astype("float32"), call_kwargs=INFERENCE,
                   expected_output_shape=((4, 4), (4, 3)))


@case("NonLocalBlock")
def _non_local_block(tmp_path):
    x = _rng().normal(size=(2, 3, 2, 5)).astype("float32")
    run_layer_test(NonLocalBlock, {"inter_channels": 2}, x, call_kwargs=INFERENCE,
                   expected_output_shape=(2, 3, 2, 5))
    # The output batch norm starts at zero scale: a new block is the identity.
    np.testing.assert_allclose(to_numpy(NonLocalBlock(2)(x, training=False)), x, atol=1e-6)


@case("GeneralizedMeanPooling2D")
def _gem(tmp_path):
    run_layer_test(GeneralizedMeanPooling2D, {"p": 2.5, "trainable_p": False, "eps": 1e-5},
                   _rng().random((2, 4, 3, 5)).astype("float32"), expected_output_shape=(2, 5))


@case("StridedViTPatchingAndEmbedding")
def _strided_vit_patching(tmp_path):
    # 8-pixel patches every 4 pixels on 16x12: a 3x2 grid plus the class token.
    run_layer_test(StridedViTPatchingAndEmbedding,
                   {"image_size": (16, 12), "patch_size": (8, 8), "hidden_dim": 4,
                    "patch_stride": (4, 4)},
                   _rng().random((2, 16, 12, 3)).astype("float32"),
                   expected_output_shape=(2, 7, 4))


@case("StridedViTBackbone")
def _strided_vit_backbone(tmp_path):
    init = {"image_shape": (16, 12, 3), "patch_size": 8, "patch_stride": 4, "num_layers": 1,
            "num_heads": 2, "hidden_dim": 4, "mlp_dim": 8}
    images = _rng().random((2, 16, 12, 3)).astype("float32")
    run_preset_saving_test(StridedViTBackbone, init, images, tmp_path / "preset")
    run_model_saving_test(StridedViTBackbone, init, images, tmp_path)


@case("TokenPooling")
def _token_pooling(tmp_path):
    x = _rng().normal(size=(2, 4, 3)).astype("float32")
    layer, _ = run_layer_test(TokenPooling, {"mode": "mean", "skip_first": True}, x)
    np.testing.assert_allclose(to_numpy(layer(x)), x[:, 1:].mean(axis=1), rtol=1e-5)


@case("ProjectionHead")
def _projection_head(tmp_path):
    run_layer_test(ProjectionHead, {"hidden_dim": 8, "output_dim": 4, "num_layers": 3},
                   _rng().normal(size=(4, 6)).astype("float32"), call_kwargs=INFERENCE,
                   expected_output_shape=(4, 4))


@case("PredictionHead")
def _prediction_head(tmp_path):
    run_layer_test(PredictionHead, {"hidden_dim": 8, "output_dim": 4, "norm": "layer"},
                   _rng().normal(size=(4, 6)).astype("float32"), call_kwargs=INFERENCE,
                   expected_output_shape=(4, 4))


@case("AttributeHead")
def _attribute_head(tmp_path):
    run_layer_test(AttributeHead, {"num_attributes": 3, "batch_norm": True},
                   _rng().normal(size=(4, 6)).astype("float32"), call_kwargs=INFERENCE,
                   expected_output_shape=(4, 3))


@case("ClusterMemory")
def _cluster_memory(tmp_path):
    # A state holder without a forward pass: its centroids and count must survive.
    memory = ClusterMemory(capacity=4, feature_dim=3, name="memory")
    memory.build()
    centroids = _rng().normal(size=(2, 3)).astype("float32")
    memory.set_centroids(centroids)
    revived = run_serialization_test(memory)
    if not revived.built:  # `deserialize_keras_object` builds it from its build config
        revived.build()
    revived.set_weights(memory.get_weights())
    np.testing.assert_array_equal(to_numpy(revived.centroids)[:2], centroids)
    assert not to_numpy(revived.centroids)[2:].any()
    assert int(to_numpy(revived.num_clusters)) == 2
    with pytest.raises(ValueError, match="capacity"):
        revived.set_centroids(np.zeros((5, 3), "float32"))


# === Tokenizer and preprocessors (saved in a preset next to their backbone) ===

CAPTIONS = ["a woman in a red coat with a black backpack", "a man in blue jeans",
            "a man with a white shirt and a red bag"]
QUERIES = ["a man in a red coat", "a woman with a zebra"]


def _tokenizer():
    return CaptionWordPieceTokenizer.from_captions(CAPTIONS, vocabulary_size=60)


def _raw_images(seed=0):
    return _rng(seed).integers(0, 256, size=(2, 40, 20, 3), dtype="uint8")


@case("CaptionWordPieceTokenizer")
def _caption_tokenizer(tmp_path):
    tokenizer = _tokenizer()
    run_serialization_test(tokenizer)
    expected = token_lists(tokenizer(QUERIES))
    unk = tokenizer.token_to_id("[UNK]")
    assert expected[0] and unk not in expected[0] and unk in expected[1]  # "zebra" is unknown
    # A keras-hub tokenizer preset lives inside a model preset: saved with the caption
    # preprocessor that owns it, it comes back with its vocabulary and the same ids.
    _, restored = run_preprocessor_preset_test(
        CaptionPreprocessor(tokenizer, sequence_length=SEQUENCE_LENGTH), _backbone(), QUERIES,
        tmp_path)
    assert type(restored.tokenizer) is CaptionWordPieceTokenizer
    assert restored.tokenizer.get_vocabulary() == tokenizer.get_vocabulary()
    assert token_lists(restored.tokenizer(QUERIES)) == expected


@case("PedestrianImageConverter")
def _image_converter(tmp_path):
    converter, _ = run_layer_test(PedestrianImageConverter, {"image_size": IMAGE_SIZE},
                                  _raw_images(), expected_output_shape=(2, *IMAGE_SIZE, 3))
    # uint8 pixels are divided by 255 before the resize; pipeline images pass unchanged.
    raw = _raw_images()
    assert_allclose_structure(converter(raw), converter(raw.astype("float32") / 255.0))
    assert_allclose_structure(converter(_images()), _images(), atol=1e-6)


@case("ImagePreprocessor")
def _image_preprocessor(tmp_path):
    encoder = _image_encoder()
    preprocessor, _ = run_preprocessor_preset_test(
        ImagePreprocessor.for_encoder(encoder), encoder, _raw_images(), tmp_path)
    assert tuple(to_numpy(preprocessor(_raw_images())).shape) == (2, *IMAGE_SIZE, 3)


@case("CaptionPreprocessor")
def _caption_preprocessor(tmp_path):
    preprocessor, _ = run_preprocessor_preset_test(
        CaptionPreprocessor(_tokenizer(), sequence_length=SEQUENCE_LENGTH), _backbone(),
        QUERIES, tmp_path)
    ids = to_numpy(preprocessor(QUERIES))
    pieces = token_lists(preprocessor.tokenizer(QUERIES))
    cls_id, sep_id = (preprocessor.tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]"))
    for row, piece in zip(ids.tolist(), pieces):
        framed = [cls_id, *piece[: SEQUENCE_LENGTH - 2], sep_id]
        assert row == framed + [0] * (SEQUENCE_LENGTH - len(framed))


@case("ValPatPreprocessor")
def _valpat_preprocessor(tmp_path):
    preprocessor, _ = run_preprocessor_preset_test(
        ValPatPreprocessor(PedestrianImageConverter(IMAGE_SIZE), _tokenizer(),
                           sequence_length=SEQUENCE_LENGTH, image_keys=("view1", "view2")),
        _backbone(), {"view1": _raw_images(), "view2": _raw_images(1), "captions": QUERIES},
        tmp_path)
    out = preprocessor({"view1": _raw_images(), "captions": QUERIES, "pids": np.arange(2)})
    assert set(out) == {"view1", "token_ids", "pids"}
    assert_allclose_structure(out["token_ids"], CaptionPreprocessor(
        preprocessor.tokenizer, sequence_length=SEQUENCE_LENGTH)(QUERIES), atol=0, rtol=0)


# === Metrics, schedules, optimizers ===

def _mean_accuracy(labels, logits, indices):
    labels, predicted = labels[:, indices], (logits[:, indices] > 0)
    pos, neg = labels == 1, labels == 0
    tpr = (pos & predicted).sum(0) / pos.sum(0)
    tnr = (neg & ~predicted).sum(0) / neg.sum(0)
    return float(np.mean((tpr + tnr) / 2))


@case("AttributeMeanAccuracy")
def _attribute_mean_accuracy(tmp_path):
    rng = _rng()
    labels = rng.choice([0.0, 1.0, -1.0], size=(12, 4), p=[0.45, 0.45, 0.1]).astype("float32")
    labels[:2] = [[1, 0, 1, 0], [0, 1, 0, 1]]  # every attribute has both classes
    logits = rng.normal(size=(12, 4)).astype("float32")
    indices = [0, 2, 3]
    run_metric_test(AttributeMeanAccuracy, {"num_attributes": 4, "indices": indices},
                    [(labels[:5], logits[:5]), (labels[5:], logits[5:])],
                    expected=_mean_accuracy(labels, logits, indices), atol=1e-5)


@case("WarmupLearningRate")
def _warmup_learning_rate(tmp_path):
    run_schedule_test(WarmupLearningRate,
                      {"base_learning_rate": 1e-3, "warmup_steps": 4, "total_steps": 20,
                       "mode": "step", "milestones": (8, 12), "gamma": 0.1},
                      steps=[0, 2, 4, 9, 13], expected=[1e-4, 5.5e-4, 1e-3, 1e-4, 1e-5])
    cosine = {"base_learning_rate": 1e-3, "warmup_steps": 0, "total_steps": 10,
              "mode": "cosine", "min_ratio": 0.1}
    run_schedule_test(WarmupLearningRate, cosine, steps=[0, 5, 10],
                      expected=[1e-3, 1e-3 * (0.1 + 0.9 * 0.5), 1e-4])


@case("GroupedAdamW")
def _grouped_adamw(tmp_path):
    _, revived = run_optimizer_test(
        GroupedAdamW, {"learning_rate": 1e-2, "weight_decay": 0.1, "beta_2": 0.99})
    assert revived.weight_decay == pytest.approx(0.1)


# === Backbones: .keras and preset ===

@case("ImageEncoder")
def _image_encoder_case(tmp_path):
    init = {"backbone": _image_encoder().backbone, "pooling": "gem", "gem_p": 2.0}
    run_preset_saving_test(ImageEncoder, init, _images(), tmp_path / "preset")
    run_model_saving_test(ImageEncoder, {**init, "backbone": _image_encoder().backbone},
                          _images(), tmp_path)


@case("TextEncoder")
def _text_encoder_case(tmp_path):
    init = {"vocabulary_size": VOCABULARY_SIZE, "sequence_length": SEQUENCE_LENGTH,
            "num_layers": 1, "num_heads": 2, "hidden_dim": 16, "intermediate_dim": 32,
            "pooling": "mean"}
    run_preset_saving_test(TextEncoder, init, _token_ids(), tmp_path / "preset")
    run_model_saving_test(TextEncoder, init, _token_ids(), tmp_path)


@case("PresetTextEncoder")
def _preset_text_encoder(tmp_path):
    # A tiny random BERT (as `tests/tiny_presets.py` saves it) with BERT's [SEP]-ended ids.
    def init():
        bert = keras_hub.models.BertBackbone(
            vocabulary_size=VOCABULARY_SIZE, num_layers=1, num_heads=2, hidden_dim=16,
            intermediate_dim=32, max_sequence_length=SEQUENCE_LENGTH)
        return {"backbone": bert, "end_token_id": 3, "pooling": "mean"}
    run_preset_saving_test(PresetTextEncoder, init(), _token_ids(), tmp_path / "preset")
    run_model_saving_test(PresetTextEncoder, init(), _token_ids(), tmp_path)
    backbone = {"image_encoder": _image_encoder(), "embedding_dim": 8,
                "text_encoder": PresetTextEncoder(**init())}
    (tmp_path / "backbone").mkdir()
    run_model_saving_test(ValPatBackbone, backbone, _pairs(), tmp_path / "backbone")


@case("ValPatBackbone")
def _valpat_backbone(tmp_path):
    def init():
        return {"image_encoder": _image_encoder(), "text_encoder": _text_encoder(),
                "embedding_dim": 16, "logit_scale_init": 2.5}
    model, restored = run_preset_saving_test(ValPatBackbone, init(), _pairs(),
                                             tmp_path / "preset")
    # The logit scale is no output of the functional model: compare it on its own.
    np.testing.assert_allclose(float(to_numpy(restored.logit_scale)),
                               float(to_numpy(model.logit_scale)), rtol=1e-6)
    assert float(to_numpy(model.logit_scale)) != pytest.approx(np.exp(2.5))  # perturbed
    run_model_saving_test(ValPatBackbone, init(), _pairs(), tmp_path)


# === Tasks: .keras with their optimizer ===

@case("ReIDModel")
def _reid_model(tmp_path):
    model, restored = run_model_saving_test(
        ReIDModel, {"backbone": _image_encoder(), "num_classes": 5, "label_smoothing": 0.2,
                    "triplet_margin": None}, _images(), tmp_path, compile_kwargs={})
    assert restored.triplet_margin is None and restored.label_smoothing == pytest.approx(0.2)
    assert_allclose_structure(restored.embedding_model(_images()),
                              model.embedding_model(_images()))


@case("MGNReID")
def _mgn_reid(tmp_path):
    model, restored = run_model_saving_test(
        MGNReID, {"backbone": _image_encoder(), "num_classes": 5, "embedding_dim": 4,
                  "id_loss_weight": 0.5, "part_triplet": False}, _images(), tmp_path,
        compile_kwargs={})
    assert restored.embedding_dim == 4 and not restored.part_triplet
    assert_allclose_structure(restored.embedding_model(_images()),
                              model.embedding_model(_images()))


@case("AGWReID")
def _agw_reid(tmp_path):
    model, restored = run_model_saving_test(
        AGWReID, {"backbone": _image_encoder(), "num_classes": 5, "triplet_margin": 0.2,
                  "non_local_blocks": [0, 1, 1], "non_local_inter_channels": 2},
        _images(), tmp_path, compile_kwargs={})
    assert restored.non_local_blocks == [0, 1, 1] and len(restored.non_local) == 2
    assert not restored.backbone.pooling_layer.exponent.trainable
    assert_allclose_structure(restored.embedding_model(_images()),
                              model.embedding_model(_images()))


@case("ClusterContrastReID")
def _cluster_contrast(tmp_path):
    centroids = _rng(1).normal(size=(3, _image_encoder().feature_dim)).astype("float32")
    _, restored = run_model_saving_test(
        ClusterContrastReID, {"backbone": _image_encoder(), "memory_capacity": 6,
                              "temperature": 0.1, "hard_memory_update": True},
        _images(), tmp_path, compile_kwargs={}, prepare=lambda m: m.set_centroids(centroids))
    np.testing.assert_allclose(to_numpy(restored.memory.centroids)[:3], centroids)
    assert int(to_numpy(restored.memory.num_clusters)) == 3 and restored.hard_memory_update


@case("AttributeRecognizer")
def _attribute_recognizer(tmp_path):
    names = ["hat", "bag", "coat", "skirt"]
    _, restored = run_model_saving_test(
        AttributeRecognizer,
        {"backbone": _image_encoder(), "num_attributes": 4,
         "positive_ratios": [0.2, 0.5, 0.7, 0.4], "attribute_names": names,
         "eval_indices": [0, 2, 3], "label_smoothing": 0.1, "head_lr_multiplier": 5.0,
         "thresholds": [0.3, 0.5, 0.65, 0.2], "exclusive_groups": [[1, 3]]},
        _images(), tmp_path, compile_kwargs={"optimizer": GroupedAdamW(1e-3)})
    assert restored.attribute_names == names
    # The calibrated decision rules are config: a loaded model decides as the saved one.
    np.testing.assert_array_equal(restored.attribute_thresholds, [0.3, 0.5, 0.65, 0.2])
    assert restored.exclusive_groups == [[1, 3]]
    probs = np.array([[0.31, 0.6, 0.6, 0.9], [0.29, 0.1, 0.7, 0.15]])
    np.testing.assert_array_equal(restored.decide(probs), [[True, False, False, True],
                                                          [False, False, True, True]])
    # The head's learning-rate multiplier is runtime state: re-compiling sets it again.
    head = restored.head.trainable_variables
    assert head and {restored.optimizer.multiplier(v) for v in head} == {5.0}
    assert restored.optimizer.multiplier(restored.backbone.trainable_variables[0]) == 1.0


@case("TextSearchModel")
def _text_search(tmp_path):
    _, restored = run_model_saving_test(
        TextSearchModel, {"backbone": _backbone(), "num_classes": 3,
                          "loss_weights": {"itc": 1.0, "sdm": 0.5, "id": 0.25}},
        _pairs(), tmp_path, compile_kwargs={})
    assert restored.loss_weights == {"itc": 1.0, "sdm": 0.5, "id": 0.25}


@case("ValPatPretrainer")
def _pretrainer(tmp_path):
    inputs = {"view1": _images(), "view2": _images(seed=1), "token_ids": _token_ids(),
              "attributes": np.array([[1, 0, -1, 1], [0, 1, 1, 0]], "float32")}
    _, restored = run_model_saving_test(
        ValPatPretrainer, {"backbone": _backbone(), "num_attributes": 4,
                           "positive_ratios": [0.3, 0.5, 0.6, 0.2], "ssl_dim": 8,
                           "ssl_hidden_dim": 16, "queue_size": 4, "momentum": 0.9},
        inputs, tmp_path, compile_kwargs={})
    assert restored.objectives == ["ssl", "itc", "attr"] and restored.queue_size == 4


# === Tasks: presets (backbone, task config and weights, preprocessor in one folder) ===

#: Task class -> (init kwargs factory, input data factory). Every `keras_hub.models.Task`
#: among the registered classes needs an entry (`test_every_task_has_a_preset_case`).
TASK_PRESET_CASES = {
    ReIDModel: (lambda: {"backbone": _image_encoder(), "num_classes": 5}, _images),
    ClusterContrastReID: (lambda: {"backbone": _image_encoder(), "memory_capacity": 6},
                          _images),
    AttributeRecognizer: (lambda: {"backbone": _image_encoder(), "num_attributes": 3,
                                   "positive_ratios": [0.2, 0.5, 0.7],
                                   "thresholds": [0.4, 0.5, 0.3],
                                   "exclusive_groups": [[0, 2]]}, _images),
    TextSearchModel: (lambda: {"backbone": _backbone(), "num_classes": 3}, _pairs),
    MGNReID: (lambda: {"backbone": _image_encoder(), "num_classes": 5, "embedding_dim": 4},
              _images),
    AGWReID: (lambda: {"backbone": _image_encoder(), "num_classes": 5}, _images),
}


@pytest.mark.parametrize("task_cls", list(TASK_PRESET_CASES), ids=lambda c: c.__name__)
def test_task_preset_round_trip(task_cls, tmp_path):
    keras.utils.set_random_seed(0)
    init, inputs = TASK_PRESET_CASES[task_cls]
    run_preset_saving_test(task_cls, init(), inputs(), tmp_path)


def test_every_task_has_a_preset_case():
    _import_package()
    tasks = {cls for name, cls in keras.saving.get_custom_objects().items()
             if name.startswith(f"{PACKAGE}>") and isinstance(cls, type)
             and issubclass(cls, keras_hub.models.Task)}
    missing = sorted(cls.__name__ for cls in tasks - set(TASK_PRESET_CASES))
    assert not missing, f"keras-hub tasks without a preset case: {missing}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip(name, tmp_path):
    keras.utils.set_random_seed(0)
    CASES[name](tmp_path)


def _import_package() -> list[str]:
    """Imports every module of valpat_keras; returns the ones that fail, with the error."""
    failures = []
    for module in pkgutil.walk_packages(valpat_keras.__path__, f"{PACKAGE}."):
        if module.name.endswith("__main__"):  # runs the CLI
            continue
        try:
            importlib.import_module(module.name)
        except Exception as err:  # noqa: BLE001 - reported by name below
            failures.append(f"{module.name}: {err!r}")
    return failures


def test_every_registration_uses_the_package_name():
    # A class registered under another package would escape the case check below.
    calls = []
    for path in Path(valpat_keras.__file__).parent.rglob("*.py"):
        calls += [(path.name, args) for args in re.findall(
            r"register_keras_serializable\(([^)]*)\)", path.read_text())]
    assert calls
    assert {args for _, args in calls} == {f'package="{PACKAGE}"'}, calls


def test_every_registered_class_has_a_case():
    failures = _import_package()
    assert not failures, f"modules that do not import: {failures}"
    registered = {name for name in keras.saving.get_custom_objects()
                  if name.startswith(f"{PACKAGE}>")}
    missing = sorted(registered - set(CASES))
    assert not missing, (f"registered serializable classes without a harness case in "
                         f"tests/test_serialization.py: {missing}")
    stale = sorted(set(CASES) - registered)
    assert not stale, f"cases of classes no longer registered: {stale}"


def test_perturb_weights_moves_every_float_variable():
    # The harness's guard against "restored by luck": no variable keeps its initial value.
    encoder = _image_encoder()
    before = [to_numpy(v) for v in encoder.weights]
    perturb_weights(encoder)
    for variable, old in zip(encoder.weights, before):
        assert not np.array_equal(to_numpy(variable), old), variable.path


def test_saving_registers_every_module_that_registers_classes():
    # `valpat_keras.saving.load_model` (and `load_task`) import exactly these modules in a
    # fresh process: a module missing from the list would leave its classes unloadable.
    import ast

    from valpat_keras.saving import SERIALIZABLE_MODULES

    def registers(path: Path) -> bool:
        # Decorators in the code only (a docstring example does not register anything).
        return any("register_keras_serializable" in ast.unparse(decorator)
                   for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, ast.ClassDef) for decorator in node.decorator_list)

    root = Path(valpat_keras.__file__).parent
    registering = sorted(
        "valpat_keras." + ".".join(path.relative_to(root).with_suffix("").parts)
        for path in root.rglob("*.py") if registers(path))
    assert sorted(SERIALIZABLE_MODULES) == registering


def test_load_model_in_a_fresh_process_needs_no_task_import(tmp_path):
    import os
    import subprocess
    import sys

    model = ReIDModel(_image_encoder(), num_classes=3)
    images = np.random.default_rng(0).random((2, 32, 16, 3)).astype("float32")
    expected = model.embed(images)
    model.save(tmp_path / "reid_model.keras")
    np.save(tmp_path / "images.npy", images)
    script = ("import sys, numpy as np\n"
              "from valpat_keras.saving import load_model\n"
              "m = load_model(sys.argv[1])\n"
              "np.save(sys.argv[2], m.embed(np.load(sys.argv[3])))\n"
              "print(type(m).__name__)\n")
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "reid_model.keras"),
         str(tmp_path / "out.npy"), str(tmp_path / "images.npy")],
        check=False, capture_output=True, text=True, env={**os.environ}, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "ReIDModel"
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-5)
