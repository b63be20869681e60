import keras
import numpy as np
import pytest
from keras.ops import convert_to_numpy as to_np

from valpat_keras.models import (
    IMAGE_ENCODER_CONFIGS,
    IMAGENET_MEAN,
    ImageEncoder,
    build_image_encoder,
)

pytestmark = pytest.mark.keras


def test_tiny_encoder_features_and_preset_round_trip(tmp_path):
    encoder = build_image_encoder("tiny", image_size=(64, 32))
    images = np.random.default_rng(0).random((2, 64, 32, 3)).astype("float32")
    features = to_np(encoder(images))
    assert encoder.feature_dim == 256 and features.shape == (2, 256)
    # last_stride=1: 64x32 -> stem /4 -> stages 1, 2, 1 -> 8x4 feature map.
    assert tuple(encoder.backbone.output.shape[1:3]) == (8, 4)
    encoder.save_to_preset(str(tmp_path / "enc"))
    restored = ImageEncoder.from_preset(str(tmp_path / "enc"))
    np.testing.assert_allclose(to_np(restored(images)), features, atol=1e-5)
    encoder.save(str(tmp_path / "enc.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "enc.keras"))
    assert isinstance(loaded, ImageEncoder) and loaded.pooling == "gem"
    np.testing.assert_allclose(to_np(loaded(images)), features, atol=1e-5)


def test_normalisation_inside_and_vit_pooling():
    encoder = build_image_encoder("tiny", image_size=(32, 32), pooling="avg")
    mean_image = np.broadcast_to(np.array(IMAGENET_MEAN, "float32"), (1, 32, 32, 3))
    normalised = to_np(encoder.normalization(mean_image))
    np.testing.assert_allclose(normalised, 0.0, atol=1e-5)
    vit = build_image_encoder("vit_tiny", image_size=(32, 16))
    assert vit.pooling == "token" and vit.feature_dim == 192
    with pytest.raises(ValueError, match="Unknown image encoder config"):
        build_image_encoder("resnet9")


def test_resnet_configs_are_the_published_stacks():
    resnet50 = IMAGE_ENCODER_CONFIGS["resnet50"]
    assert resnet50 == {
        "family": "resnet", "input_conv_filters": [64], "input_conv_kernel_sizes": [7],
        "stackwise_num_filters": [64, 128, 256, 512], "stackwise_num_blocks": [3, 4, 6, 3],
        "stackwise_num_strides": [1, 2, 2, 2], "block_type": "bottleneck_block",
        "use_pre_activation": False}
    assert IMAGE_ENCODER_CONFIGS["resnet18"]["stackwise_num_blocks"] == [2, 2, 2, 2]
    assert IMAGE_ENCODER_CONFIGS["resnet18"]["block_type"] == "basic_block"
    assert IMAGE_ENCODER_CONFIGS["tiny"]["stackwise_num_strides"] == [1, 2, 2]
    assert IMAGE_ENCODER_CONFIGS["tiny"]["stackwise_num_filters"] == [64, 128, 256]
