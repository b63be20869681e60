import numpy as np
import pytest
from keras.ops import convert_to_numpy as to_np

from valpat_keras.models import build_text_encoder

pytestmark = pytest.mark.keras


def test_text_encoder_ignores_padding():
    encoder = build_text_encoder("tiny", vocabulary_size=50, sequence_length=8, pooling="mean")
    ids = np.array([[2, 7, 9, 3, 0, 0, 0, 0]], "int32")
    short = to_np(encoder(ids[:, :4]))
    padded = to_np(encoder(ids))
    assert padded.shape == (1, encoder.feature_dim) == (1, 128)
    np.testing.assert_allclose(padded, short, atol=1e-4)
    config = encoder.get_config()
    assert config["vocabulary_size"] == 50 and config["num_layers"] == 2
