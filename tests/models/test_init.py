import numpy as np
import pytest
from keras.ops import convert_to_numpy as to_np

pytestmark = pytest.mark.keras


def test_load_image_encoder_random_run_dir_and_resize(tmp_path):
    from valpat_keras.models import build_image_encoder, load_image_encoder

    encoder = build_image_encoder("tiny", image_size=(64, 32))
    encoder.save_to_preset(str(tmp_path / "run" / "image_encoder"))
    images = np.random.default_rng(0).random((1, 64, 32, 3)).astype("float32")
    same = load_image_encoder(str(tmp_path / "run"), image_size=(64, 32))
    np.testing.assert_allclose(to_np(same(images)), to_np(encoder(images)), atol=1e-5)
    bigger = load_image_encoder(str(tmp_path / "run"), image_size=(96, 48), pooling="avg")
    assert bigger.image_shape == (96, 48, 3) and bigger.pooling == "avg"
    assert load_image_encoder("random", image_size=(32, 32)).feature_dim == 256


def test_load_errors_name_the_folder(tmp_path):
    from valpat_keras.models import load_backbone, load_image_encoder

    with pytest.raises(FileNotFoundError, match="image_encoder/config.json"):
        load_image_encoder(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="backbone"):
        load_backbone(tmp_path)
    with pytest.raises(ValueError, match="keras-hub preset 'no_such_preset_xyz'"):
        load_image_encoder("no_such_preset_xyz")
