"""Tiny run folders for the export tests: pretraining, re-ID and attributes runs.

Built directly from random tiny models saved the way the run functions save them (no
training: the tests compare an export with the Keras model it came from), once per session.
"""

import json

import numpy as np
import pytest

IMAGE_SIZE = (32, 16)
SEQUENCE_LENGTH = 8
ATTRIBUTE_NAMES = ["Female", "Hat", "Backpack"]
#: The calibrated verification threshold written into the pretraining run.
THRESHOLD = 0.625
CAPTIONS = ["a woman in a red coat with a black backpack", "a man in a blue shirt",
            "a person wearing a hat and white shorts", "a girl with long hair and a bag"]


def uint8_images(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Random uint8 RGB images with coarse blocks (pure noise gives near-equal features)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (count, 4, 2, 3))
    coarse = np.repeat(np.repeat(blocks, -(-height // 4), axis=1), -(-width // 2), axis=2)
    noise = rng.integers(-20, 21, coarse.shape)
    return np.clip(coarse + noise, 0, 255)[:, :height, :width].astype(np.uint8)


def _encoder():
    from valpat_keras.models import build_image_encoder

    return build_image_encoder("tiny", image_size=IMAGE_SIZE)


@pytest.fixture(scope="session")
def pretrain_run(tmp_path_factory):
    """A pretraining run folder: image_encoder/ and backbone/ (with its tokenizer)."""
    from valpat_keras.data.tokenizer import CaptionTokenizer
    from valpat_keras.models import ValPatBackbone, build_text_encoder
    from valpat_keras.models.loading import save_backbone
    from valpat_keras.models.preprocessors import ImagePreprocessor, ValPatPreprocessor

    run = tmp_path_factory.mktemp("pretrain_run")
    tokenizer = CaptionTokenizer.from_captions(CAPTIONS, vocabulary_size=80,
                                               sequence_length=SEQUENCE_LENGTH)
    backbone = ValPatBackbone(
        _encoder(), build_text_encoder("tiny", vocabulary_size=len(tokenizer.vocabulary),
                                       sequence_length=SEQUENCE_LENGTH), embedding_dim=16)
    encoder = backbone.image_encoder
    save_backbone(encoder, run / "image_encoder", ImagePreprocessor.for_encoder(encoder))
    save_backbone(backbone, run / "backbone", ValPatPreprocessor.for_backbone(backbone, tokenizer))
    (run / "verification.json").write_text(json.dumps(
        {"threshold": THRESHOLD, "similarity": "cosine", "target_fpr": 0.01, "split": "val"}))
    (run / "config.json").write_text(json.dumps({"backend": "jax"}))
    return run


@pytest.fixture(scope="session")
def reid_run(tmp_path_factory):
    """A supervised re-ID run folder (a `ReIDModel` task preset)."""
    from valpat_keras.models.loading import save_task
    from valpat_keras.models.preprocessors import ImagePreprocessor
    from valpat_keras.tasks.reid import ReIDModel

    run = tmp_path_factory.mktemp("reid_run")
    encoder = _encoder()
    save_task(ReIDModel(encoder, num_classes=4,
                        preprocessor=ImagePreprocessor.for_encoder(encoder)), run)
    return run


@pytest.fixture(scope="session")
def attributes_run(tmp_path_factory):
    """An attribute recognition run folder (an `AttributeRecognizer` task preset)."""
    from valpat_keras.models.loading import save_task
    from valpat_keras.models.preprocessors import ImagePreprocessor
    from valpat_keras.tasks.attribute_recognizer import AttributeRecognizer

    run = tmp_path_factory.mktemp("attributes_run")
    encoder = _encoder()
    save_task(AttributeRecognizer(encoder, len(ATTRIBUTE_NAMES), attribute_names=ATTRIBUTE_NAMES,
                                  positive_ratios=[0.2, 0.5, 0.4],
                                  preprocessor=ImagePreprocessor.for_encoder(encoder)), run)
    return run
