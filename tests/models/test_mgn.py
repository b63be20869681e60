"""MGN (`MGNReID`, valpat_keras/models/mgn.py) against fast-reid's MGN configuration.

The ResNet-50 test checks these values, each from fast-reid (JDAI-CV/fast-reid, commit
c9bc3ce, configs Base-MGN.yml -> Base-SBS.yml -> Base-bagtricks.yml):

- split point: the trunk ends after the first block of stage 3 (``layer3[0]``,
  fastreid/modeling/meta_arch/mgn.py lines 102-111: ``backbone = nn.Sequential(...,
  all_blocks.layer3[0])``; ``res_conv4 = layer3[1:]`` goes into each branch): trunk output
  ``stack2_block0_out``, 1024 channels at 1/16 of the input.
- branches: 3 (global ``neck1``, 2-part ``neck2``, 3-part ``neck3``; mgn.py lines 122-145).
- last stride per branch: global = the backbone's (Base-bagtricks.yml
  ``MODEL.BACKBONE.LAST_STRIDE: 1``, so 1 here), parts = 1 (``res_p_conv5``'s Bottleneck
  has the default ``stride=1``, mgn.py lines 114-118): all three maps 24 x 8 at 384 x 128
  (Base-SBS.yml ``INPUT.SIZE_TRAIN: [384, 128]``), 2048 channels.
- part splits: 2 and 3 stripes along the height (``torch.chunk(b2_feat, 2, dim=2)``,
  ``torch.chunk(b3_feat, 3, dim=2)``, mgn.py lines 205 and 209).
- reduction dim: 256 per head (Base-MGN.yml ``MODEL.HEADS.EMBEDDING_DIM: 256``), 8 heads
  (b1, b2, b21, b22, b3, b31, b32, b33), embedding = their concatenation in the order of
  mgn.py line 241 (b1, b2, b3, b21, b22, b31, b32, b33): 8 x 256 = 2048.
- loss terms: CE on the 8 logits, each x 0.125 (mgn.py lines 293-349), label smoothing 0.1
  (``LOSSES.CE.EPSILON: 0.1``); triplet on b1, b2, b3, cat(b21, b22), cat(b31, b32, b33),
  each x 0.2 (mgn.py lines 351-392), soft margin (Base-SBS.yml ``LOSSES.TRI.MARGIN: 0.0``),
  hardest mining (``HARD_MINING: True``). `test_mgn_loss_matches_numpy` recomputes them.
"""

from __future__ import annotations

import keras
import keras_hub
import numpy as np
import pytest

from valpat_keras.errors import InputError
from valpat_keras.models.image_encoder import ImageEncoder, build_image_encoder
from valpat_keras.models.mgn import MGN_HEAD_NAMES, stripe_bounds
from valpat_keras.tasks.reid import MGNReID

pytestmark = pytest.mark.keras

SIZE = (64, 32)


def _tiny_vit_encoder():
    vit = keras_hub.models.ViTBackbone(image_shape=(32, 16, 3), patch_size=8, num_layers=1,
                                       num_heads=1, hidden_dim=8, mlp_dim=8)
    return ImageEncoder(vit, pooling="token")


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


@pytest.fixture(scope="module")
def tiny_mgn():
    keras.utils.set_random_seed(0)
    return MGNReID(build_image_encoder("tiny", image_size=SIZE), num_classes=4,
                   embedding_dim=8)


def test_mgn_follows_fast_reid_resnet50_configuration():
    keras.utils.set_random_seed(0)
    model = MGNReID(build_image_encoder("resnet50", image_size=(384, 128)), num_classes=751)
    assert model.trunk.layers[-1].name == "stack2_block0_out"
    assert tuple(model.trunk.output.shape) == (None, 24, 8, 1024)
    assert len(model.branches) == 3
    assert [tuple(b.output.shape) for b in model.branches] == [(None, 24, 8, 2048)] * 3
    # Each branch owns the rest of stage 3: five more bottlenecks of 1024 channels.
    for branch in model.branches:
        assert {f"stack2_block{i}_out" for i in range(1, 6)} <= {x.name for x in branch.layers}
    assert stripe_bounds(24, 2) == [(0, 12), (12, 24)]
    assert stripe_bounds(24, 3) == [(0, 8), (8, 16), (16, 24)]
    assert [head.name for head in model.heads] == [f"{n}_head" for n in MGN_HEAD_NAMES]
    assert {head.embedding_dim for head in model.heads} == {256}
    assert model.head_dim == 256
    assert tuple(model.output["embeddings"].shape) == (None, 2048)
    assert tuple(model.output["logits"].shape) == (None, 8, 751)
    assert model.triplet_groups() == [(0, 1), (1, 2), (2, 3), (3, 5), (5, 8)]
    assert (model.id_loss_weight, model.triplet_loss_weight) == (0.125, 0.2)
    assert model.label_smoothing == pytest.approx(0.1) and model.triplet_margin is None


@pytest.mark.parametrize("height,parts,expected", [
    (16, 3, [(0, 6), (6, 12), (12, 16)]),   # torch.chunk: ceil(16 / 3) = 6 rows, last 4
    (7, 2, [(0, 4), (4, 7)]),
    (5, 3, [(0, 2), (2, 4), (4, 5)]),
    (4, 3, [(0, 2), (1, 3), (2, 4)]),       # chunk gives 2: adaptive-pooling bins instead
    (1, 2, [(0, 1), (0, 1)]),
])
def test_stripe_bounds_follow_torch_chunk_then_adaptive_bins(height, parts, expected):
    assert stripe_bounds(height, parts) == expected


def test_part_branches_start_from_the_encoder_weights_at_stride_one(tiny_mgn):
    # The encoder has last stride 1: the copies compute the global branch's map exactly.
    images = np.random.default_rng(0).random((2, *SIZE, 3)).astype("float32")
    global_map, part2, part3 = (_np(m) for m in tiny_mgn.branch_maps(images))
    np.testing.assert_allclose(part2, global_map, atol=1e-5)
    np.testing.assert_allclose(part3, global_map, atol=1e-5)
    # Separate weights: moving one branch leaves the others.
    weight = tiny_mgn.branches[1].trainable_weights[0]
    assert all(weight is not w for b in (0, 2) for w in tiny_mgn.branches[b].trainable_weights)


def test_part_branches_keep_stride_one_under_a_stride_two_encoder():
    encoder = build_image_encoder("tiny", image_size=SIZE, last_stride=2)
    model = MGNReID(encoder, num_classes=3, embedding_dim=4)
    shapes = [tuple(b.output.shape)[1:3] for b in model.branches]
    assert shapes == [(4, 2), (8, 4), (8, 4)]   # the MGN paper's global branch at stride 2


def _gem(x, p):
    return (np.maximum(x, 1e-6) ** p).mean(axis=(1, 2)) ** (1 / p)


def test_stripe_embeddings_pool_their_rows(tiny_mgn):
    images = np.random.default_rng(1).random((2, *SIZE, 3)).astype("float32")
    _, part2, part3 = (_np(m) for m in tiny_mgn.branch_maps(images))
    embeddings = _np(tiny_mgn.embedding_model(images))
    dim = tiny_mgn.head_dim
    stripes = [(3, part2, stripe_bounds(part2.shape[1], 2)),
               (5, part3, stripe_bounds(part3.shape[1], 3))]
    for first, part_map, bounds in stripes:
        for offset, (start, stop) in enumerate(bounds):
            index = first + offset
            pool = tiny_mgn.part_poolings[index - 1]
            pooled = _gem(part_map[:, start:stop], float(_np(pool.exponent)))
            expected, _ = tiny_mgn.heads[index](pooled, training=False)
            np.testing.assert_allclose(embeddings[:, index * dim:(index + 1) * dim],
                                       _np(expected), rtol=1e-4, atol=1e-5)


def _numpy_ce(labels, logits, epsilon):
    z = logits - logits.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    targets = np.full(logits.shape, epsilon / logits.shape[1])
    targets[np.arange(len(labels)), labels] += 1 - epsilon
    return -(targets * log_probs).sum(axis=1).mean()


def _numpy_soft_hard_triplet(features, labels):
    dist = np.sqrt(np.maximum(((features[:, None] - features[None]) ** 2).sum(-1), 1e-12))
    same = labels[:, None] == labels[None]
    d_ap = np.where(same, dist, -np.inf).max(axis=1)
    d_an = np.where(same, np.inf, dist).min(axis=1)
    return np.log1p(np.exp(d_ap - d_an)).mean()


def test_mgn_loss_matches_numpy(tiny_mgn):
    images = np.random.default_rng(2).random((8, *SIZE, 3)).astype("float32")
    labels = np.repeat(np.arange(4), 2)
    outputs = tiny_mgn(images, training=False)
    logits, embeddings = _np(outputs["logits"]).astype(np.float64), _np(outputs["embeddings"])
    embeddings = embeddings.astype(np.float64)
    dim = tiny_mgn.head_dim
    expected = 0.125 * sum(_numpy_ce(labels, logits[:, i], 0.1) for i in range(8))
    groups = [(0, 1), (1, 2), (2, 3), (3, 5), (5, 8)]
    expected += 0.2 * sum(_numpy_soft_hard_triplet(embeddings[:, a * dim:b * dim], labels)
                          for a, b in groups)
    got = _np(tiny_mgn.compute_loss(images, labels, outputs, training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_mgn_trains_its_heads_with_the_branches_gated():
    keras.utils.set_random_seed(0)
    model = MGNReID(build_image_encoder("tiny", image_size=(32, 16)), num_classes=2,
                    embedding_dim=4)
    images = np.random.default_rng(3).random((4, 32, 16, 3)).astype("float32")
    labels = np.array([0, 0, 1, 1])
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    branch_weight = model.branches[1].trainable_weights[0]
    head_weight = model.heads[4].classifier.kernel
    before, head_before = _np(branch_weight).copy(), _np(head_weight).copy()
    model.set_backbone_frozen(True)
    history = model.fit(images, labels, batch_size=4, epochs=1, verbose=0).history
    assert {"id_loss", "triplet_loss"} <= set(history) and np.isfinite(history["loss"][0])
    np.testing.assert_array_equal(_np(branch_weight), before)
    assert not np.allclose(_np(head_weight), head_before)


def test_mgn_needs_a_resnet_encoder():
    with pytest.raises(InputError, match="ResNet"):
        MGNReID(_tiny_vit_encoder(), num_classes=2)
