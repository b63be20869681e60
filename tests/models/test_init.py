import numpy as np
import pytest
from keras.ops import convert_to_numpy as to_np

from valpat_keras.data.tokenizer import CaptionTokenizer
from valpat_keras.models import (
    ValPatBackbone,
    build_image_encoder,
    build_text_encoder,
    load_backbone,
    load_image_encoder,
)
from valpat_keras.models.init import TRANSFER_LAST_STRIDE
from valpat_keras.models.loading import save_backbone
from valpat_keras.models.preprocessors import PedestrianImageConverter, ValPatPreprocessor

pytestmark = pytest.mark.keras


def test_load_image_encoder_random_run_dir_and_resize(tmp_path):
    encoder = build_image_encoder("tiny", image_size=(64, 32))
    encoder.save_to_preset(str(tmp_path / "run" / "image_encoder"))
    images = np.random.default_rng(0).random((1, 64, 32, 3)).astype("float32")
    same = load_image_encoder(str(tmp_path / "run"), image_size=(64, 32))
    np.testing.assert_allclose(to_np(same(images)), to_np(encoder(images)), atol=1e-5)
    bigger = load_image_encoder(str(tmp_path / "run"), image_size=(96, 48), pooling="avg")
    assert bigger.image_shape == (96, 48, 3) and bigger.pooling == "avg"
    assert load_image_encoder("random", image_size=(32, 32)).feature_dim == 256


def test_load_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="image_encoder/config.json"):
        load_image_encoder(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="backbone"):
        load_backbone(tmp_path)
    with pytest.raises(ValueError, match="keras-hub preset 'no_such_preset_xyz'"):
        load_image_encoder("no_such_preset_xyz")


def test_load_backbone_reads_old_and_new_run_folders(tmp_path):
    captions = ["a woman in a red coat", "a man with a black backpack"]
    tokenizer = CaptionTokenizer.from_captions(captions, vocabulary_size=100, sequence_length=8)
    backbone = ValPatBackbone(
        build_image_encoder("tiny", image_size=(32, 16)),
        build_text_encoder("tiny", vocabulary_size=tokenizer.vocabulary_size, sequence_length=8),
        embedding_dim=16)
    # Earlier versions: the tokenizer as its own folder inside the backbone preset.
    backbone.save_to_preset(str(tmp_path / "old" / "backbone"))
    tokenizer.save_to_preset(tmp_path / "old" / "backbone" / "tokenizer")
    # Now: the preprocessor saved in the backbone preset itself.
    save_backbone(backbone, tmp_path / "new" / "backbone", ValPatPreprocessor(
        PedestrianImageConverter((32, 16)), tokenizer.layer, sequence_length=8))
    ids = tokenizer(captions)
    expected = to_np(backbone.get_text_embeddings(ids))
    for run in ("old", "new", "new/backbone"):
        loaded, loaded_tokenizer = load_backbone(tmp_path / run)
        np.testing.assert_array_equal(loaded_tokenizer(captions).numpy(), ids.numpy())
        np.testing.assert_allclose(to_np(loaded.get_text_embeddings(ids)), expected, atol=1e-5)


def _last_stride(encoder) -> int:
    return encoder.backbone.get_config()["stackwise_num_strides"][-1]


def test_a_stride_2_encoder_is_rebuilt_at_the_transfer_stride_with_the_same_weights(tmp_path):
    encoder = build_image_encoder("tiny", image_size=(64, 32), last_stride=2)
    encoder.save_to_preset(str(tmp_path / "run" / "image_encoder"))
    images = np.random.default_rng(0).random((1, 64, 32, 3)).astype("float32")
    kept = load_image_encoder(str(tmp_path / "run"), image_size=(64, 32))
    assert _last_stride(kept) == 2  # None keeps the saved stride (serving)
    moved = load_image_encoder(str(tmp_path / "run"), image_size=(64, 32),
                               last_stride=TRANSFER_LAST_STRIDE)
    assert _last_stride(moved) == TRANSFER_LAST_STRIDE == 1
    for saved, loaded in zip(encoder.get_weights(), moved.get_weights(), strict=True):
        np.testing.assert_array_equal(loaded, saved)
    # The final feature map doubles in both directions.
    height, width = kept.backbone(images).shape[1:3]
    assert tuple(moved.backbone(images).shape[1:3]) == (2 * height, 2 * width)


def test_load_backbone_restrides_the_image_tower_only(tmp_path):
    captions = ["a woman in a red coat", "a man with a black backpack"]
    tokenizer = CaptionTokenizer.from_captions(captions, vocabulary_size=100, sequence_length=8)
    backbone = ValPatBackbone(
        build_image_encoder("tiny", image_size=(64, 32), last_stride=2),
        build_text_encoder("tiny", vocabulary_size=tokenizer.vocabulary_size, sequence_length=8),
        embedding_dim=16)
    save_backbone(backbone, tmp_path / "run" / "backbone", ValPatPreprocessor(
        PedestrianImageConverter((64, 32)), tokenizer.layer, sequence_length=8))
    as_saved, _ = load_backbone(tmp_path / "run")
    assert _last_stride(as_saved.image_encoder) == 2
    loaded, _ = load_backbone(tmp_path / "run", last_stride=1)
    assert _last_stride(loaded.image_encoder) == 1
    assert loaded.embedding_dim == 16
    for saved, restrided in zip(backbone.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(restrided, saved)
    ids = tokenizer(captions)
    np.testing.assert_allclose(to_np(loaded.get_text_embeddings(ids)),
                               to_np(backbone.get_text_embeddings(ids)), atol=1e-5)
