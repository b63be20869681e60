"""Reference vectors (copied from the published evaluation code's outputs) and helpers."""

import json
from pathlib import Path

import numpy as np
import pytest

REFERENCE = Path(__file__).parent / "reference"


@pytest.fixture(scope="session")
def expected():
    return json.loads((REFERENCE / "expected_101.json").read_text())


@pytest.fixture(scope="session")
def reid_ref():
    return dict(np.load(REFERENCE / "reid_101.npz"))


@pytest.fixture(scope="session")
def t2i_ref():
    return dict(np.load(REFERENCE / "t2i_101.npz"))


@pytest.fixture(scope="session")
def par_ref():
    return dict(np.load(REFERENCE / "par_101.npz"))


@pytest.fixture(scope="session")
def market_loop():
    """The per-query loop reference as a fixture."""
    return loop_market1501


def loop_market1501(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, filter_cam=True):
    """torchreid ``eval_market1501`` with fast-reid's mINP, one query at a time."""
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, None]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    for q in range(distmat.shape[0]):
        order = indices[q]
        remove = (g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q])
        keep = ~remove if filter_cam else np.ones_like(remove)
        raw = matches[q][keep]
        if not np.any(raw):
            continue
        cmc = raw.cumsum()
        pos_idx = np.where(raw == 1)[0]
        all_inp.append(cmc[pos_idx.max()] / (pos_idx.max() + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        tmp = raw.cumsum() / (np.arange(len(raw)) + 1.0)
        all_ap.append((tmp * raw).sum() / raw.sum())
    if not all_cmc:
        raise AssertionError("all query identities do not appear in gallery")
    return (np.asarray(all_cmc, dtype=np.float64).mean(0), float(np.mean(all_ap)),
            float(np.mean(all_inp)), len(all_cmc))
