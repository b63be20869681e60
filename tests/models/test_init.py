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
