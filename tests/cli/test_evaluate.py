"""`valpat evaluate` on a tiny SynthPed Market-1501 tree.

The scores the command writes are recomputed from the encoder it was given
(tests/metric_checks.py: embeddings, one dense distance matrix, `evaluate_reid`).
"""

import json

import keras
import pytest
from metric_checks import REID_KEYS, assert_reid_metrics_equal, reid_metrics

from valpat_keras.cli.main import main
from valpat_keras.data import registry
from valpat_keras.data.synthped import SynthPedConfig, write_synthped
from valpat_keras.models import ImageEncoder, build_image_encoder

SIZE = (64, 32)


@pytest.fixture(scope="module")
def synthped_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthped")
    write_synthped(root, SynthPedConfig.preset("tiny", seed=3))
    return root


@pytest.fixture(scope="module")
def encoder_preset(tmp_path_factory):
    """A random encoder saved as a preset folder (an ``--init`` the command accepts)."""
    keras.utils.set_random_seed(5)
    preset = tmp_path_factory.mktemp("encoder") / "image_encoder"
    build_image_encoder("tiny", image_size=SIZE).save_to_preset(str(preset))
    return preset


def test_evaluate_writes_the_scores_of_the_given_encoder(synthped_root, encoder_preset,
                                                         tmp_path, capsys):
    out = tmp_path / "eval"
    status = main(["evaluate", "--data", f"market1501:{synthped_root}", "--out", str(out),
                   "--init", str(encoder_preset), "--image-size", "64x32", "--batch-size", "16",
                   "--rerank"])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    expected = reid_metrics(ImageEncoder.from_preset(str(encoder_preset)),
                            registry.load("market1501", synthped_root), SIZE, rerank=True)
    assert_reid_metrics_equal(metrics, expected)
    assert_reid_metrics_equal(metrics["rerank"], expected["rerank"])
    # Re-ranking changes the ranking of a random encoder: the two entries are not one copy.
    assert [metrics[k] for k in REID_KEYS] != [metrics["rerank"][k] for k in REID_KEYS]
    assert (out / "ranked_results.png").stat().st_size > 0
    assert (out / "cmc.png").stat().st_size > 0
    table = capsys.readouterr().out
    assert f"{100 * metrics['mAP']:.1f}" in table and "re-ranked" in table


def test_evaluate_random_encoder_reports_its_own_cmc(synthped_root, tmp_path, capsys):
    out = tmp_path / "eval"
    status = main(["evaluate", "--data", f"market1501:{synthped_root}", "--out", str(out),
                   "--image-size", "64x32", "--batch-size", "16"])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # The headline ranks are points of the saved CMC curve, which never decreases.
    cmc = metrics["cmc"]
    assert [metrics["rank1"], metrics["rank5"], metrics["rank10"]] == [cmc[0], cmc[4], cmc[9]]
    assert cmc == sorted(cmc) and "rerank" not in metrics
    queries = registry.load("market1501", synthped_root).query
    assert metrics["num_valid_queries"] == len(queries)
    assert metrics["init"] == "random"
    assert "mAP" in capsys.readouterr().out


def test_evaluate_rejects_non_reid_data(synthped_root, tmp_path, capsys):
    status = main(["evaluate", "--data", f"pa100k:{synthped_root}", "--out", str(tmp_path)])
    assert status == 2
    assert "attributes dataset" in capsys.readouterr().err


def test_evaluate_names_missing_encoder(synthped_root, tmp_path, capsys):
    status = main(["evaluate", "--data", f"market1501:{synthped_root}", "--out", str(tmp_path),
                   "--init", str(tmp_path / "no_such_run")])
    assert status == 2
    assert "no_such_run" in capsys.readouterr().err
