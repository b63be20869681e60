import numpy as np
import pytest
from keras.ops import convert_to_numpy as to_np

from valpat_keras.models import ValPatBackbone, build_image_encoder, build_text_encoder

pytestmark = pytest.mark.keras


def _backbone():
    return ValPatBackbone(build_image_encoder("tiny", image_size=(64, 32)),
                          build_text_encoder("tiny", vocabulary_size=40, sequence_length=8),
                          embedding_dim=32)


def test_backbone_embeddings_normalised_and_preset_round_trip(tmp_path):
    backbone = _backbone()
    inputs = {"images": np.random.default_rng(0).random((2, 64, 32, 3)).astype("float32"),
              "token_ids": np.array([[2, 5, 6, 3, 0, 0, 0, 0]] * 2, "int32")}
    out = backbone(inputs)
    for key in ("image_embedding", "text_embedding"):
        emb = to_np(out[key])
        assert emb.shape == (2, 32)
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(float(backbone.logit_scale), 1 / 0.07, rtol=1e-5)
    assert any("log_scale" in w.path for w in backbone.trainable_weights)
    paths = [w.path for w in backbone.weights]
    assert len(paths) == len(set(paths))
    backbone.logit_scale_layer.log_scale.assign(9.0)
    np.testing.assert_allclose(float(backbone.logit_scale), 100.0, rtol=1e-5)  # clipped
    backbone.logit_scale_layer.log_scale.assign(3.0)
    backbone.save_to_preset(str(tmp_path / "bb"))
    restored = ValPatBackbone.from_preset(str(tmp_path / "bb"))
    np.testing.assert_allclose(float(restored.logit_scale), np.exp(3.0), rtol=1e-5)
    np.testing.assert_allclose(to_np(restored.get_image_embeddings(inputs["images"])),
                               to_np(out["image_embedding"]), atol=1e-5)
