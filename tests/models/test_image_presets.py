"""Image towers from keras-hub presets (a tiny random ResNet saved to a folder) and the pixel
normalisation choices (ImageNet, LUPerson, the preset's converter)."""

import keras
import keras_hub
import numpy as np
import pytest
from tiny_presets import save_tiny_resnet_preset, save_tiny_vit_preset

from valpat_keras.errors import InputError
from valpat_keras.models import IMAGENET_MEAN, IMAGENET_STD, build_image_encoder
from valpat_keras.models.image_encoder import LUP_MEAN, LUP_STD
from valpat_keras.models.init import (
    converter_statistics,
    image_encoder_from_preset,
    load_image_encoder,
)
from valpat_keras.tasks.pretrain_config import DEFAULT_PRETRAIN_LAST_STRIDE, PretrainConfig

pytestmark = pytest.mark.keras


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _statistics(encoder):
    layer = encoder.normalization
    return np.ravel(_numpy(layer.mean)), np.sqrt(np.ravel(_numpy(layer.variance)))


def test_image_encoder_starts_from_the_preset_weights(tmp_path):
    folder = save_tiny_resnet_preset(tmp_path / "resnet")
    saved = keras_hub.models.Backbone.from_preset(str(folder))
    encoder = image_encoder_from_preset(folder, image_size=(64, 32), last_stride=1)
    assert encoder.image_shape == (64, 32, 3)
    assert encoder.backbone.get_config()["stackwise_num_strides"] == [1, 1]
    for got, want in zip(encoder.backbone.get_weights(), saved.get_weights()):
        np.testing.assert_array_equal(got, want)
    mean, std = _statistics(encoder)  # the converter's ImageNet scale / offset
    np.testing.assert_allclose(mean, IMAGENET_MEAN, atol=1e-6)
    np.testing.assert_allclose(std, IMAGENET_STD, atol=1e-6)
    images = np.random.default_rng(0).random((2, 64, 32, 3)).astype("float32")
    normalised = (images - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    feature_map = _numpy(encoder.backbone(normalised.astype("float32")))
    expected = np.mean(np.maximum(feature_map, 1e-6) ** 3, axis=(1, 2)) ** (1 / 3)  # GeM p=3
    np.testing.assert_allclose(_numpy(encoder(images)), expected, rtol=1e-4, atol=1e-5)
    # A transfer's --init takes the same folder (the preset's own last stride kept).
    transfer = load_image_encoder(str(folder), image_size=(64, 32))
    assert transfer.backbone.get_config()["stackwise_num_strides"] == [1, 2]
    for got, want in zip(transfer.backbone.get_weights(), saved.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_pixel_normalisation_choices(tmp_path):
    folder = save_tiny_resnet_preset(tmp_path / "resnet", image_converter=False)
    lup = image_encoder_from_preset(folder, image_size=(32, 16), pixel_normalization="lup")
    np.testing.assert_allclose(_statistics(lup)[0], LUP_MEAN, atol=1e-6)
    np.testing.assert_allclose(_statistics(lup)[1], LUP_STD, atol=1e-6)
    # LUPerson's fast-reid configs: PIXEL_MEAN [89.896, 79.200, 80.073] on 0..255 pixels.
    np.testing.assert_allclose(np.array(LUP_MEAN) * 255, [89.896, 79.200, 80.073])
    with pytest.raises(InputError, match="no image converter"):
        image_encoder_from_preset(folder, image_size=(32, 16), pixel_normalization="preset")
    with pytest.raises(InputError, match="no image preset found"):
        image_encoder_from_preset(tmp_path / "missing")
    vit = keras_hub.layers.ViTImageConverter(image_size=(32, 32), scale=1 / 127.5, offset=-1.0)
    np.testing.assert_allclose(converter_statistics(vit), [[0.5] * 3, [0.5] * 3], atol=1e-6)
    random = build_image_encoder("tiny", image_size=(32, 16), pixel_normalization="lup")
    np.testing.assert_allclose(_statistics(random)[0], LUP_MEAN, atol=1e-6)
    default = build_image_encoder("tiny", image_size=(32, 16))
    np.testing.assert_allclose(_statistics(default)[0], IMAGENET_MEAN, atol=1e-6)


def test_pretrain_config_preset_fields_and_cache_key():
    default = PretrainConfig()
    assert not {"text_preset", "image_preset", "pixel_normalization"} & set(
        default.cache_fields())  # the cached runs of earlier versions keep their keys
    assert default.resolved_pixel_normalization == "imagenet"
    config = PretrainConfig(image_preset="resnet_50_imagenet", text_preset="bert_tiny_en")
    assert config.resolved_pixel_normalization == "preset"
    assert config.cache_fields()["image_preset"] == "resnet_50_imagenet"
    assert PretrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(InputError, match="image_preset"):
        PretrainConfig(pixel_normalization="preset")
    with pytest.raises(InputError, match="pixel_normalization"):
        PretrainConfig(pixel_normalization="cifar")


def test_a_square_vit_preset_loads_at_a_person_aspect_ratio(tmp_path):
    folder = save_tiny_vit_preset(tmp_path / "vit", image_size=32)
    encoder = image_encoder_from_preset(folder, image_size=(48, 24))
    assert encoder.image_shape == (48, 24, 3) and encoder.pooling == "token"
    mean, std = _statistics(encoder)  # the ViT converter's [-1, 1] scaling
    np.testing.assert_allclose(mean, [0.5] * 3, atol=1e-6)
    np.testing.assert_allclose(std, [0.5] * 3, atol=1e-6)
    images = np.random.default_rng(0).random((2, 48, 24, 3)).astype("float32")
    assert _numpy(encoder(images)).shape == (2, 16)


def test_pretrain_config_last_stride_default_validation_and_cache_key():
    default = PretrainConfig()
    assert default.resolved_last_stride == DEFAULT_PRETRAIN_LAST_STRIDE
    # Every run cached before the field existed pretrained at stride 1: that keeps its key.
    assert "last_stride" not in default.cache_fields()
    assert PretrainConfig(last_stride=DEFAULT_PRETRAIN_LAST_STRIDE).cache_fields() == (
        default.cache_fields())
    assert "last_stride" not in PretrainConfig(last_stride=1).cache_fields()
    assert PretrainConfig(last_stride=2).cache_fields()["last_stride"] == 2
    assert PretrainConfig.from_dict(PretrainConfig(last_stride=2).to_dict()).last_stride == 2
    with pytest.raises(InputError, match="last_stride must be 1 or 2"):
        PretrainConfig(last_stride=4)
