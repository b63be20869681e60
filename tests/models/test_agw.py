"""AGW (`AGWReID`, `NonLocalBlock`) against its reference (mangye16/ReID-Survey, fast-reid).

Values checked and where they come from:

- non-local positions in a ResNet-50: after blocks 2, 3 of stage 2 and 3, 4, 5 of stage 3
  (ReID-Survey modeling/backbones/resnet_nl.py ``non_layers=[0, 2, 3, 0]``,
  ``NL_idx = sorted([layers[i] - (j + 1) ...])``; fast-reid backbones/resnet.py
  ``nl_layers_per_stage['50x']``).
- the non-local forward (modeling/layer/non_local.py): ``f = theta^T phi / N``,
  ``z = BN(W(f g)) + x``, recomputed in NumPy; W's BN starts at zero (identity block).
- pooling: GeM with a fixed exponent (fast-reid configs/Base-AGW.yml
  ``POOL_LAYER: GeneralizedMeanPooling``); loss: CE (eps 0.1) + WRT, soft margin
  (Base-AGW.yml ``TRI.MARGIN: 0.0, HARD_MINING: False``), recomputed in NumPy.
"""

from __future__ import annotations

import keras
import keras_hub
import numpy as np
import pytest

from valpat_keras.errors import InputError
from valpat_keras.models.image_encoder import ImageEncoder, build_image_encoder
from valpat_keras.models.non_local import NonLocalBlock, non_local_positions
from valpat_keras.tasks.reid import AGWReID

pytestmark = pytest.mark.keras

SIZE = (32, 16)


def _tiny_vit_encoder():
    vit = keras_hub.models.ViTBackbone(image_shape=(32, 16, 3), patch_size=8, num_layers=1,
                                       num_heads=1, hidden_dim=8, mlp_dim=8)
    return ImageEncoder(vit, pooling="token")


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def test_non_local_positions_follow_agw_resnet50():
    assert non_local_positions([3, 4, 6, 3]) == [(1, 2), (1, 3), (2, 3), (2, 4), (2, 5)]
    # Smaller configurations: counts clipped to the blocks, extra stages ignored.
    assert non_local_positions([1, 1, 1]) == [(1, 0), (2, 0)]


def test_non_local_block_matches_numpy_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 4, 6)).astype("float32")
    block = NonLocalBlock(inter_channels=2)
    block(x, training=False)
    for variable in block.weights:  # random weights everywhere, the BN scale included
        variable.assign(rng.normal(size=variable.shape).astype("float32") * 0.5)
    block.batch_norm.moving_variance.assign(np.abs(_np(block.batch_norm.moving_variance)) + 1)
    weights = {name: [_np(w) for w in getattr(block, name).weights]
               for name in ("theta", "phi", "g", "projection")}

    def project(name, inputs):
        kernel, bias = weights[name]
        return inputs @ kernel + bias

    flat = x.reshape(2, 12, 6)
    f = project("theta", flat) @ project("phi", flat).transpose(0, 2, 1) / 12
    y = project("projection", f @ project("g", flat))
    bn = block.batch_norm
    gamma, beta, mean, var = (_np(v) for v in (bn.gamma, bn.beta, bn.moving_mean,
                                               bn.moving_variance))
    expected = x + ((y - mean) / np.sqrt(var + 1e-5) * gamma + beta).reshape(x.shape)
    np.testing.assert_allclose(_np(block(x, training=False)), expected, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def agw():
    keras.utils.set_random_seed(0)
    return AGWReID(build_image_encoder("tiny", image_size=SIZE), num_classes=4)


def test_agw_starts_as_the_encoder_with_a_fixed_gem(agw):
    # Identity non-local blocks: the pooled feature is the encoder's own output.
    images = np.random.default_rng(1).random((2, *SIZE, 3)).astype("float32")
    np.testing.assert_allclose(_np(agw.pooled_features(images)), _np(agw.backbone(images)),
                               rtol=1e-5, atol=1e-6)
    # tiny: one block per stage, so the second block follows the very last residual block.
    assert len(agw.non_local) == 2 and len(agw.segments) == 2
    assert not agw.backbone.pooling_layer.exponent.trainable


def _numpy_wrt(features, labels):
    dist = np.sqrt(np.maximum(((features[:, None] - features[None]) ** 2).sum(-1), 1e-12))
    same = labels[:, None] == labels[None]
    losses = []
    for i in range(len(labels)):
        pos, neg = dist[i][same[i]], dist[i][~same[i]]
        w_pos, w_neg = np.exp(pos - pos.max()), np.exp(neg.min() - neg)
        d_ap, d_an = (w_pos * pos).sum() / w_pos.sum(), (w_neg * neg).sum() / w_neg.sum()
        losses.append(np.log1p(np.exp(d_ap - d_an)))
    return np.mean(losses)


def test_agw_loss_is_ce_plus_weighted_regularized_triplet(agw):
    images = np.random.default_rng(2).random((8, *SIZE, 3)).astype("float32")
    labels = np.repeat(np.arange(4), 2)
    outputs = agw(images, training=False)
    logits = _np(outputs["logits"]).astype(np.float64)
    z = logits - logits.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    targets = np.full(logits.shape, 0.1 / 4)
    targets[np.arange(8), labels] += 0.9
    expected = -(targets * log_probs).sum(axis=1).mean()
    expected += _numpy_wrt(_np(outputs["features"]).astype(np.float64), labels)
    got = _np(agw.compute_loss(images, labels, outputs, training=False))
    np.testing.assert_allclose(got, expected, rtol=5e-5)


def test_agw_needs_a_gem_resnet_encoder():
    with pytest.raises(InputError, match="GeM"):
        AGWReID(build_image_encoder("tiny", image_size=SIZE, pooling="avg"), num_classes=2)
    with pytest.raises(InputError, match="ResNet"):
        AGWReID(_tiny_vit_encoder(), num_classes=2)
