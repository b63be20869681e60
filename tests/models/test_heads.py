import numpy as np
import pytest

from valpat_keras.models import AttributeHead, PredictionHead, ProjectionHead

pytestmark = pytest.mark.keras


def test_projection_prediction_attribute_heads_shapes_and_config():
    x = np.random.default_rng(0).random((4, 8)).astype("float32")
    proj = ProjectionHead(hidden_dim=16, output_dim=6, num_layers=3)
    assert proj(x).shape == (4, 6)
    # Last BN has no scale/offset (MoCo v3); hidden Dense layers carry no bias before BN.
    names = sorted(w.path.split("/", 1)[-1] for w in proj.trainable_weights)
    assert "bn_2/gamma" not in names and "dense_0/bias" not in names
    pred = PredictionHead(hidden_dim=16, output_dim=6)
    assert pred(x).shape == (4, 6)
    assert any(w.path.endswith("dense_1/bias") for w in pred.weights)
    head = AttributeHead(5)
    assert head(x).shape == (4, 5)
    clone = ProjectionHead.from_config(proj.get_config())
    assert clone.get_config() == proj.get_config()
