"""keras-hub preprocessors: pipeline-equal outputs, tokenizer ids, preset and .keras round trips.

The tasks here are tiny registered `keras_hub.models.Task` subclasses defined for the test:
one image task (an `ImageEncoder` backbone and an `ImagePreprocessor`) and one image + text
task (a `ValPatBackbone` and a `ValPatPreprocessor`), saved with `save_task` as one preset
folder and loaded back with `load_task`.
"""

import json

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from keras.ops import convert_to_numpy as to_np
from PIL import Image

from valpat_keras.data.pipelines import caption_dataset, decode_image
from valpat_keras.data.tokenizer import CaptionTokenizer, CaptionWordPieceTokenizer
from valpat_keras.errors import InputError
from valpat_keras.models import ValPatBackbone, build_image_encoder, build_text_encoder
from valpat_keras.models.image_encoder import ImageEncoder
from valpat_keras.models.loading import load_preprocessor, load_task, save_backbone, save_task
from valpat_keras.models.preprocessors import (
    CaptionPreprocessor,
    ImagePreprocessor,
    PedestrianImageConverter,
    ValPatPreprocessor,
)

pytestmark = pytest.mark.keras

IMAGE_SIZE = (32, 16)
TRAIN_CAPTIONS = [
    "A woman in a red coat carries a black backpack.",
    "The man wears blue jeans and white sneakers.",
    "A young girl with long hair holds an umbrella.",
    "Café owner in a naïve T-shirt, jeans & boots!",
]
CAPTIONS = [
    "A WOMAN in red",
    "Crème brûlée-coloured coat; (umbrella)!!",
    "zzz qqq unknownword",
    "@#$ ... ,,",
    " ".join(TRAIN_CAPTIONS),  # longer than the sequence: truncated, [SEP] kept
    "",
    "t-shirt o'neil 42 años ÉLAN",
    "naïve café",
]


@keras.saving.register_keras_serializable(package="valpat_keras_tests")
class TinyImageTask(keras_hub.models.Task):
    """Image task for the test: encoder features through a small dense head."""

    backbone_cls = ImageEncoder
    preprocessor_cls = ImagePreprocessor

    def __init__(self, backbone, units=4, preprocessor=None, **kwargs):
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.head = keras.layers.Dense(units, name="head")
        # === Functional Model ===
        images = keras.Input(shape=backbone.image_shape, name="images")
        super().__init__(inputs=images, outputs=self.head(backbone(images)), **kwargs)
        # === Config ===
        self.units = units

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units})
        return config


@keras.saving.register_keras_serializable(package="valpat_keras_tests")
class TinySearchTask(keras_hub.models.Task):
    """Image + caption task for the test: the backbone's two embeddings."""

    backbone_cls = ValPatBackbone
    preprocessor_cls = ValPatPreprocessor

    def __init__(self, backbone, preprocessor=None, **kwargs):
        self.backbone = backbone
        self.preprocessor = preprocessor
        inputs = {"images": keras.Input(shape=backbone.image_encoder.image_shape, name="images"),
                  "token_ids": keras.Input(shape=(None,), dtype="int32", name="token_ids")}
        super().__init__(inputs=inputs, outputs=backbone(inputs), **kwargs)


@pytest.fixture(scope="module")
def tokenizer():
    return CaptionTokenizer.from_captions(TRAIN_CAPTIONS, vocabulary_size=300, sequence_length=12)


@pytest.fixture(scope="module")
def raw_images():
    return np.random.default_rng(0).integers(0, 256, (3, 70, 37, 3), dtype=np.uint8)


def _pipeline_images(raw_images, folder):
    """The pipeline's decode_image of the same images, saved as PNG files."""
    out = []
    for i, image in enumerate(raw_images):
        path = folder / f"{i}.png"
        Image.fromarray(image).save(path)
        out.append(decode_image(tf.constant(str(path)), IMAGE_SIZE).numpy())
    return np.stack(out)


def test_image_converter_matches_pipeline_eagerly_and_in_tf_data(raw_images, tmp_path):
    expected = _pipeline_images(raw_images, tmp_path)
    preprocessor = ImagePreprocessor(PedestrianImageConverter(image_size=IMAGE_SIZE))
    eager = to_np(preprocessor(raw_images))
    assert eager.dtype == np.float32 and eager.shape == (3, *IMAGE_SIZE, 3)
    np.testing.assert_allclose(eager, expected, atol=2e-6)
    mapped = next(iter(tf.data.Dataset.from_tensors(raw_images).map(preprocessor))).numpy()
    np.testing.assert_allclose(mapped, expected, atol=2e-6)
    # A pipeline's output (float in [0, 1], target size) passes through unchanged.
    np.testing.assert_allclose(to_np(preprocessor(expected)), expected, atol=1e-6)
    again = next(iter(tf.data.Dataset.from_tensors(expected).map(preprocessor))).numpy()
    np.testing.assert_allclose(again, expected, atol=1e-6)
    images, labels = preprocessor(raw_images, y=np.array([1, 2, 3]))
    np.testing.assert_allclose(to_np(images), eager, atol=1e-7)
    np.testing.assert_array_equal(to_np(labels), [1, 2, 3])


def test_caption_preprocessor_ids_equal_caption_tokenizer(tokenizer):
    preprocessor = CaptionPreprocessor(tokenizer.layer, sequence_length=12)
    expected = tokenizer(CAPTIONS).numpy()
    ids = to_np(preprocessor(CAPTIONS))
    assert ids.dtype == np.int32 and ids.shape == (len(CAPTIONS), 12)
    np.testing.assert_array_equal(ids, expected)
    mapped = tf.data.Dataset.from_tensor_slices(CAPTIONS).batch(4).map(preprocessor)
    np.testing.assert_array_equal(np.concatenate([b.numpy() for b in mapped]), expected)
    long = ids[4]
    assert long[0] == tokenizer.cls_id and long[-1] == tokenizer.sep_id and (long != 0).all()
    assert list(ids[5][:3]) == [tokenizer.cls_id, tokenizer.sep_id, 0]
    assert tokenizer.unk_id in ids[2]
    np.testing.assert_array_equal(to_np(preprocessor(expected)), expected)  # ids pass through
    # The pipelines take it in place of the CaptionTokenizer.
    batches = caption_dataset(CAPTIONS, preprocessor, batch_size=3)
    np.testing.assert_array_equal(np.concatenate([b.numpy() for b in batches]), expected)


def test_valpat_preprocessor_dicts_and_config_round_trip(tokenizer, raw_images):
    preprocessor = ValPatPreprocessor(PedestrianImageConverter(image_size=IMAGE_SIZE),
                                      tokenizer.layer, sequence_length=12)
    batch = preprocessor({"images": raw_images, "captions": CAPTIONS[:3], "pids": [4, 5, 6]})
    assert sorted(batch) == ["images", "pids", "token_ids"]
    np.testing.assert_array_equal(to_np(batch["token_ids"]), tokenizer(CAPTIONS[:3]).numpy())
    np.testing.assert_allclose(to_np(batch["images"]),
                               to_np(preprocessor.convert_images(raw_images)), atol=1e-7)
    np.testing.assert_array_equal(to_np(preprocessor(CAPTIONS[:2])),
                                  tokenizer(CAPTIONS[:2]).numpy())
    # get_config holds no vocabulary (a preset asset): set it as a preset load does.
    config = keras.saving.serialize_keras_object(preprocessor)
    restored = keras.saving.deserialize_keras_object(json.loads(json.dumps(config)))
    assert restored.tokenizer.vocabulary is None and restored.image_keys == ("images",)
    restored.tokenizer.set_vocabulary(tokenizer.vocabulary)
    np.testing.assert_array_equal(to_np(restored(CAPTIONS)), tokenizer(CAPTIONS).numpy())


def test_image_task_is_one_preset_and_a_keras_file(raw_images, tmp_path):
    encoder = build_image_encoder("tiny", image_size=IMAGE_SIZE)
    task = TinyImageTask(encoder, preprocessor=ImagePreprocessor.for_encoder(encoder))
    expected = task.predict(raw_images, verbose=0)
    save_task(task, tmp_path / "run")
    for name in ("task.json", "task.weights.h5", "config.json", "model.weights.h5",
                 "preprocessor.json", "image_converter.json"):
        assert (tmp_path / "run" / name).is_file(), name
    loaded = load_task(tmp_path / "run")
    assert type(loaded) is TinyImageTask and loaded.units == 4
    assert isinstance(loaded.preprocessor, ImagePreprocessor)
    assert loaded.preprocessor.image_size == IMAGE_SIZE
    assert ImagePreprocessor.from_preset(str(tmp_path / "run")).image_size == IMAGE_SIZE
    np.testing.assert_allclose(loaded.predict(raw_images, verbose=0), expected, atol=1e-5)
    task.save(str(tmp_path / "task.keras"))
    from_file = keras.saving.load_model(str(tmp_path / "task.keras"))
    np.testing.assert_allclose(from_file.predict(raw_images, verbose=0), expected, atol=1e-5)


def test_search_task_preset_restores_the_tokenizer(tokenizer, raw_images, tmp_path):
    backbone = ValPatBackbone(
        build_image_encoder("tiny", image_size=IMAGE_SIZE),
        build_text_encoder("tiny", vocabulary_size=tokenizer.vocabulary_size,
                           sequence_length=12), embedding_dim=16)
    task = TinySearchTask(backbone,
                          preprocessor=ValPatPreprocessor.for_backbone(backbone, tokenizer))
    raw = {"images": raw_images, "captions": np.array(CAPTIONS[:3])}
    expected = task.predict(raw, verbose=0)
    save_task(task, tmp_path / "run")
    assert (tmp_path / "run" / "assets" / "tokenizer" / "vocabulary.txt").is_file()
    loaded = load_task(tmp_path / "run")
    assert loaded.preprocessor.tokenizer.vocabulary == tokenizer.vocabulary
    assert loaded.preprocessor.image_size == IMAGE_SIZE
    adapter = loaded.preprocessor.caption_tokenizer()
    np.testing.assert_array_equal(adapter(CAPTIONS).numpy(), tokenizer(CAPTIONS).numpy())
    assert isinstance(ValPatPreprocessor.from_preset(str(tmp_path / "run")), ValPatPreprocessor)
    np.testing.assert_array_equal(to_np(loaded.preprocessor(CAPTIONS)),
                                  tokenizer(CAPTIONS).numpy())
    got = loaded.predict(raw, verbose=0)
    for key in ("image_embedding", "text_embedding"):
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5)
    task.save(str(tmp_path / "task.keras"))
    from_file = keras.saving.load_model(str(tmp_path / "task.keras"))
    assert from_file.preprocessor.tokenizer.vocabulary == tokenizer.vocabulary
    got = from_file.predict(raw, verbose=0)
    np.testing.assert_allclose(got["text_embedding"], expected["text_embedding"], atol=1e-5)
    # The caption tokenizer of the folder, for older callers.
    np.testing.assert_array_equal(
        CaptionTokenizer.from_preset(tmp_path / "run")(CAPTIONS).numpy(),
        tokenizer(CAPTIONS).numpy())


def test_backbone_preset_with_preprocessor_and_load_errors(tokenizer, tmp_path):
    encoder = build_image_encoder("tiny", image_size=IMAGE_SIZE)
    preprocessor = CaptionPreprocessor(CaptionWordPieceTokenizer(tokenizer.vocabulary),
                                       sequence_length=12)
    save_backbone(encoder, tmp_path / "enc", preprocessor)
    restored = load_preprocessor(tmp_path / "enc")
    assert isinstance(restored, CaptionPreprocessor) and restored.sequence_length == 12
    np.testing.assert_array_equal(to_np(restored(CAPTIONS)), tokenizer(CAPTIONS).numpy())
    with pytest.raises(FileNotFoundError, match="task.json"):
        load_task(tmp_path / "enc")
    (tmp_path / "enc" / "task.json").write_text(json.dumps(
        {"registered_name": "valpat_keras_tests>TinySearchTask", "config": {}}))
    with pytest.raises(InputError, match="backbone_cls = ImageEncoder"):
        load_task(tmp_path / "enc")
    (tmp_path / "enc" / "preprocessor.json").write_text("{not json")
    with pytest.raises(InputError, match="preprocessor.json"):
        load_preprocessor(tmp_path / "enc")
