"""split_reid_validation: held-out train identities as a Market-1501-style query / gallery."""

from collections import Counter, defaultdict

import numpy as np
import pytest

from valpat_keras.data.records import ReIDDataset, ReIDRecord
from valpat_keras.data.splits import contiguous_pids, split_reid_validation

SINGLE_CAMERA_PIDS = {1, 4, 7}


@pytest.fixture
def train_records():
    """30 ids with gaps in their numbers, 1-4 cameras x 1-3 images; three seen by one camera."""
    rng = np.random.default_rng(0)
    records = []
    for pid in [3 * i + 2 for i in range(27)] + sorted(SINGLE_CAMERA_PIDS):
        num_cameras = 1 if pid in SINGLE_CAMERA_PIDS else int(rng.integers(2, 5))
        for cam in rng.choice(6, size=num_cameras, replace=False):
            for j in range(int(rng.integers(1, 4))):
                records.append(ReIDRecord(f"/data/{pid:04d}_c{cam}_{j}.jpg", pid, int(cam)))
    return records


def _by_path(records):
    return {r.path: r for r in records}


def test_identities_are_disjoint_and_every_image_is_used_once(train_records):
    train, query, gallery = split_reid_validation(train_records, fraction=0.2, seed=0)
    original = _by_path(train_records)
    val_ids = {r.pid for r in query} | {r.pid for r in gallery}
    train_ids = {original[r.path].pid for r in train}
    assert len(val_ids) == 6  # 20 % of 30 identities
    assert not val_ids & train_ids and len(train_ids) == 24
    paths = [r.path for r in (*train, *query, *gallery)]
    assert sorted(paths) == sorted(original) and len(set(paths)) == len(paths)
    # Validation records keep their pids and cameras, and only multi-camera ids are held out.
    assert all(original[r.path] == r for r in (*query, *gallery))
    assert not val_ids & SINGLE_CAMERA_PIDS


def test_query_and_gallery_are_camera_aware(train_records):
    _, query, gallery = split_reid_validation(train_records, fraction=0.3, seed=1)
    images = Counter((r.pid, r.camid) for r in train_records)
    query_cameras = defaultdict(list)
    for r in query:
        query_cameras[r.pid].append(r.camid)
    for pid, cams in query_cameras.items():
        all_cams = sorted({c for p, c in images if p == pid})
        # One query per camera but one: the camera with the most images, all in the gallery.
        largest = max(all_cams, key=lambda c: images[(pid, c)])
        assert sorted(cams) == [c for c in all_cams if c != largest]
        assert {r.camid for r in gallery if r.pid == pid} >= {largest}
    # Market-1501 skips same-camera gallery matches: every query still has a match.
    dataset = ReIDDataset("val", "", [], query, gallery)
    assert dataset.check_queries() == 0
    assert {r.pid for r in query} == {r.pid for r in gallery}


def test_training_ids_are_relabelled_contiguously_in_order(train_records):
    train, _, _ = split_reid_validation(train_records, fraction=0.1, seed=0)
    original = _by_path(train_records)
    pids = sorted({r.pid for r in train})
    assert pids == list(range(len(pids)))
    # The relabelling keeps the order of the original ids, and the paths and cameras.
    pairs = sorted({(original[r.path].pid, r.pid) for r in train})
    assert [new for _, new in pairs] == pids
    assert all(r.camid == original[r.path].camid for r in train)
    relabelled = contiguous_pids(train_records)
    assert sorted({r.pid for r in relabelled}) == list(range(30))
    assert contiguous_pids(train) == train


def test_seed_repeats_the_split_and_another_seed_changes_it(train_records):
    first = split_reid_validation(train_records, fraction=0.2, seed=3)
    assert split_reid_validation(train_records, fraction=0.2, seed=3) == first
    held_out = {seed: frozenset(r.pid for r in split_reid_validation(
        train_records, fraction=0.2, seed=seed)[1]) for seed in range(4)}
    assert len(set(held_out.values())) > 1


def test_a_zero_fraction_holds_out_nothing(train_records):
    train, query, gallery = split_reid_validation(train_records, fraction=0.0)
    assert query == [] and gallery == []
    assert [r.path for r in train] == [r.path for r in train_records]
    assert sorted({r.pid for r in train}) == list(range(30))


def test_small_fractions_still_hold_out_two_identities(train_records):
    _, query, gallery = split_reid_validation(train_records, fraction=0.01)
    assert len({r.pid for r in query}) == len({r.pid for r in gallery}) == 2


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_fractions_outside_zero_to_one_are_rejected(train_records, fraction):
    with pytest.raises(ValueError, match=r"validation fraction must be in \[0, 1\)"):
        split_reid_validation(train_records, fraction=fraction)


def test_too_few_identities_are_reported(train_records):
    two_ids = [r for r in train_records if r.pid in (2, 5)]
    with pytest.raises(ValueError, match="holds out 2 of the 2 .* leaves none to train on"):
        split_reid_validation(two_ids, fraction=0.1)
    one_multi_camera = [r for r in train_records if r.pid in (2, *SINGLE_CAMERA_PIDS)]
    with pytest.raises(ValueError, match="at least 2 training identities seen by two cameras"):
        split_reid_validation(one_multi_camera, fraction=0.5)
    # A fraction above the multi-camera share takes every multi-camera identity, no more.
    three_multi_camera = [r for r in train_records if r.pid in (2, 5, 8, *SINGLE_CAMERA_PIDS)]
    train, query, _ = split_reid_validation(three_multi_camera, fraction=0.9)
    assert {r.pid for r in query} == {2, 5, 8} and len({r.pid for r in train}) == 3
