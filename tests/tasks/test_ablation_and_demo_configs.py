"""The ablation's frozen re-ID column against a NumPy recomputation, and the run configs the
demo's stages hand to the library (no training)."""

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.keras

# Mean colours of the crops: two identities seen by two cameras, one distractor-like colour.
QUERY = [((0.9, 0.1, 0.1), 1, 0), ((0.1, 0.2, 0.9), 2, 0)]
GALLERY = [((0.8, 0.2, 0.1), 1, 1), ((0.2, 0.2, 0.8), 2, 1), ((0.5, 0.1, 0.5), 1, 1),
           ((0.7, 0.3, 0.3), 2, 1), ((0.9, 0.1, 0.1), 1, 0)]


def _records(tmp_path, items, prefix):
    from valpat_keras.data.records import ReIDRecord

    records = []
    for i, (colour, pid, camid) in enumerate(items):
        path = tmp_path / f"{prefix}{i}.png"
        pixels = np.broadcast_to(np.asarray(colour) * 255, (16, 8, 3)).round().astype("uint8")
        Image.fromarray(pixels).save(path)
        records.append(ReIDRecord(str(path), pid, camid))
    return records


def _average_precision(distances, q_pid, q_cam, g_pids, g_cams):
    order = np.argsort(distances, kind="stable")
    keep = ~((g_pids[order] == q_pid) & (g_cams[order] == q_cam))
    matches = (g_pids[order] == q_pid)[keep]
    hits = np.flatnonzero(matches)
    return float(np.mean([(k + 1) / (rank + 1) for k, rank in enumerate(hits)])), bool(matches[0])


def test_frozen_reid_is_the_cosine_map_of_the_mean_colours(tmp_path):
    import keras

    from valpat_keras.data.records import ReIDDataset
    from valpat_keras.tasks.ablation import frozen_reid

    dataset = ReIDDataset(name="market1501", root=str(tmp_path), train=[],
                          query=_records(tmp_path, QUERY, "q"),
                          gallery=_records(tmp_path, GALLERY, "g"))
    encoder = keras.Sequential([keras.Input((16, 8, 3)), keras.layers.GlobalAveragePooling2D()])
    got = frozen_reid(encoder, dataset, (16, 8), batch_size=4)

    def unit(items):
        x = np.asarray([np.round(np.asarray(c) * 255) / 255 for c, _, _ in items])
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    q, g = unit(QUERY), unit(GALLERY)
    g_pids = np.array([p for _, p, _ in GALLERY])
    g_cams = np.array([c for _, _, c in GALLERY])
    scores = [_average_precision(1 - g @ qi, pid, cam, g_pids, g_cams)
              for qi, (_, pid, cam) in zip(q, QUERY)]
    assert got["mAP"] == pytest.approx(np.mean([ap for ap, _ in scores]), abs=1e-5)
    assert got["rank1"] == pytest.approx(np.mean([top for _, top in scores]))
    assert 0 < got["mAP"] < 1  # the second query's match is not ranked first


def test_demo_hands_its_budget_to_the_run_configs():
    from valpat_keras.demo.budget import DemoBudget
    from valpat_keras.demo.stages import _run_config
    from valpat_keras.tasks.attributes import AttributesRunConfig
    from valpat_keras.tasks.reid_training import ReIDRunConfig
    from valpat_keras.tasks.search import SearchRunConfig

    budget = DemoBudget.quick()
    reid = _run_config("reid_supervised", "runs/pre", budget, seed=3, verbose=0)
    assert reid == ReIDRunConfig(init="runs/pre", encoder_config="tiny", seed=3, verbose=0,
                                 epochs=1, p=4, k=2, image_size=(64, 32), steps_per_epoch=2)
    unsup = _run_config("reid_unsupervised", "random", budget, seed=0, verbose=1)
    assert unsup.unsupervised and unsup.eps == "auto" and unsup.steps_per_epoch == 2
    attributes = _run_config("attributes", "random", budget, seed=0, verbose=0)
    assert attributes == AttributesRunConfig(init="random", encoder_config="tiny", seed=0,
                                             verbose=0, epochs=1, batch_size=8,
                                             image_size=(64, 32), steps_per_epoch=2)
    search = _run_config("text_search", "runs/pre", budget, seed=0, verbose=0)
    assert isinstance(search, SearchRunConfig) and search.image_size is None
    assert _run_config("text_search", "random", budget, 0, 0).image_size == (64, 32)
    with pytest.raises(ValueError, match="unknown demo task"):
        _run_config("segmentation", "random", budget, 0, 0)


def test_demo_pretraining_config_matches_the_loss_weight_benchmark_candidate():
    from valpat_keras.demo.budget import CHOSEN_LOSS_WEIGHTS, DemoBudget

    budget = DemoBudget.full()
    demo = budget.pretrain_config(("ssl", "itc", "attr"), seed=0,
                                  loss_weights=dict(CHOSEN_LOSS_WEIGHTS))
    candidate = budget.pretrain_config(("ssl", "itc", "attr"), seed=0,
                                       loss_weights={"ssl": 0.1, "itc": 1, "attr": 3})
    assert demo.cache_fields() == candidate.cache_fields()
    assert demo.steps == 600 and demo.image_size == (64, 32) and demo.batch_size == 32
