"""PKSampler invariants: P distinct identities x K images, cameras mixed, deterministic."""

import numpy as np
import pytest

from valpat_keras.data.sampler import PKSampler


def _toy_set(seed=0):
    """30 identities with 1..12 images over up to 3 cameras."""
    rng = np.random.default_rng(seed)
    pids, camids = [], []
    for pid in range(30):
        count = int(rng.integers(1, 13))
        pids += [pid] * count
        camids += list(rng.integers(0, 3, count))
    return np.asarray(pids), np.asarray(camids)


def test_batches_hold_p_identities_with_k_images_each():
    pids, camids = _toy_set()
    sampler = PKSampler(pids, camids, p=6, k=4, seed=1)
    batches = sampler.epoch_indices(0)
    assert batches.shape == (sampler.num_batches, 24)
    for batch in batches:
        groups = batch.reshape(6, 4)
        group_pids = pids[groups]
        assert (group_pids == group_pids[:, :1]).all()  # each group is one identity
        assert len(set(group_pids[:, 0])) == 6  # P distinct identities
        for group in groups:
            if (pids == pids[group[0]]).sum() >= 4:
                assert len(set(group)) == 4  # no replacement unless the identity is small


def test_deterministic_per_seed_and_epoch():
    pids, camids = _toy_set()
    a = PKSampler(pids, camids, p=5, k=3, seed=7)
    b = PKSampler(pids, camids, p=5, k=3, seed=7)
    np.testing.assert_array_equal(a.epoch_indices(3), b.epoch_indices(3))
    assert not np.array_equal(a.epoch_indices(0), a.epoch_indices(1))
    assert not np.array_equal(a.epoch_indices(0),
                              PKSampler(pids, camids, p=5, k=3, seed=8).epoch_indices(0))


def test_identities_appear_about_equally_often():
    pids, camids = _toy_set()
    sampler = PKSampler(pids, camids, p=4, k=2, seed=0)
    counts = np.zeros(30, dtype=int)
    for batch in sampler.epoch_indices(0):
        for pid in set(pids[batch]):
            counts[pid] += 1
    assert counts.max() - counts.min() <= 1
    assert counts.sum() == sampler.num_batches * 4


def test_groups_draw_from_several_cameras_round_robin():
    # Identity 0 has 4 images in each of 3 cameras: every K=3 group must span all 3.
    pids = np.repeat(np.arange(4), 12)
    camids = np.tile(np.repeat(np.arange(3), 4), 4)
    sampler = PKSampler(pids, camids, p=2, k=3, seed=0)
    for epoch in range(3):
        for group in sampler.epoch_indices(epoch).reshape(-1, 3):
            assert len(set(camids[group])) == 3


def test_rejects_too_few_identities():
    with pytest.raises(ValueError, match="distinct identities"):
        PKSampler([0, 0, 1, 1], p=3, k=2)
