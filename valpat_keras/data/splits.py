"""Validation splits carved from training data, so model selection never sees the test split.

Re-ID benchmarks ship train / query / gallery only; picking the best epoch by its test mAP
is selection on test data. `split_reid_validation` holds out a few training identities and
lays them out as a Market-1501-style query / gallery pair for that selection instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from valpat_keras.data.records import ReIDRecord, pids_of
from valpat_keras.errors import InputError


def split_reid_validation(
    train_records: Sequence[ReIDRecord], fraction: float = 0.1, seed: int = 0,
) -> tuple[list[ReIDRecord], list[ReIDRecord], list[ReIDRecord]]:
    """Holds out training identities as a validation query / gallery split.

    About ``fraction`` of the training identities (at least 2 when ``fraction > 0``) are
    drawn, with ``seed``, among those seen by two cameras or more, so that cross-camera
    matching exists. Their images are split as in Market-1501: one query image (drawn) per
    camera, the rest to the gallery, except that the identity's camera with the most images
    goes to the gallery whole. Market-1501's protocol ignores gallery matches of the same
    identity under the query's camera, so this guarantees every validation query a match.
    The other identities stay for training, relabelled ``0..N-1`` in the order of their
    original pids; validation records keep their original pids (they are never compared
    with training ones).

    Args:
        train_records: The training `ReIDRecord` s (e.g. ``dataset.train``).
        fraction: Share of the identities to hold out, in ``[0, 1)``; 0 holds out none.
        seed: Seeds the choice of identities and of the query images.

    Returns:
        ``(train, val_query, val_gallery)``: record lists in the input order; both
        validation lists are empty when ``fraction`` is 0.

    Raises:
        InputError: (a ``ValueError``) ``fraction`` is outside ``[0, 1)``, fewer than 2 identities are seen by
            two cameras, or the validation identities would leave none to train on.

    Example:

    ```python
    data = datasets.load("market1501", "/data")
    train, val_query, val_gallery = split_reid_validation(data.train, fraction=0.1)
    ```
    """
    fraction = float(fraction)
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"the validation fraction must be in [0, 1), got {fraction}")
    records = list(train_records)
    if fraction == 0.0:
        return contiguous_pids(records), [], []

    cameras: dict[int, set[int]] = defaultdict(set)
    for record in records:
        cameras[record.pid].add(record.camid)
    num_ids = len(cameras)
    eligible = sorted(pid for pid, cams in cameras.items() if len(cams) >= 2)
    if len(eligible) < 2:
        raise InputError(f"a validation fraction of {fraction} needs at least 2 training "
                         f"identities seen by two cameras or more, found {len(eligible)}; "
                         "use a validation fraction of 0")
    num_val = min(max(2, round(fraction * num_ids)), len(eligible))
    if num_val >= num_ids:
        raise InputError(f"a validation fraction of {fraction} holds out {num_val} of the "
                         f"{num_ids} training identities and leaves none to train on; "
                         "lower the validation fraction")

    rng = np.random.default_rng(seed)
    val_ids = {int(pid) for pid in rng.choice(eligible, size=num_val, replace=False)}
    by_id_camera: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        if record.pid in val_ids:
            by_id_camera[(record.pid, record.camid)].append(i)
    query_indices = set()
    for pid in sorted(val_ids):
        cams = sorted(cameras[pid])
        gallery_camera = max(cams, key=lambda cam: len(by_id_camera[(pid, cam)]))
        for cam in cams:
            if cam != gallery_camera:
                query_indices.add(int(rng.choice(by_id_camera[(pid, cam)])))

    train = contiguous_pids([r for r in records if r.pid not in val_ids])
    val_query = [r for i, r in enumerate(records) if i in query_indices]
    val_gallery = [r for i, r in enumerate(records)
                   if r.pid in val_ids and i not in query_indices]
    return train, val_query, val_gallery


def contiguous_pids(records: Sequence[ReIDRecord]) -> list[ReIDRecord]:
    """The records with pids relabelled ``0..N-1`` in the order of their original pids.

    A classifier over N training identities needs them as its rows; records already so
    numbered come back as they are.

    Args:
        records: `ReIDRecord` s of any id set.
    """
    records = list(records)
    pids = np.unique(pids_of(records)).tolist()
    if pids == list(range(len(pids))):
        return records
    index = {pid: i for i, pid in enumerate(pids)}
    return [ReIDRecord(r.path, index[r.pid], r.camid) for r in records]
