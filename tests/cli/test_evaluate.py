"""`valpat evaluate` on a tiny SynthPed Market-1501 tree."""

import json

import pytest

from valpat_keras.cli.main import main
from valpat_keras.data.synthped import SynthPedConfig, write_synthped


@pytest.fixture(scope="module")
def synthped_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthped")
    write_synthped(root, SynthPedConfig.preset("tiny", seed=3))
    return root


def test_evaluate_random_encoder_writes_metrics(synthped_root, tmp_path, capsys):
    out = tmp_path / "eval"
    status = main(["evaluate", "--data", f"market1501:{synthped_root}", "--out", str(out),
                   "--image-size", "64x32", "--batch-size", "16", "--rerank"])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("rank1", "rank5", "rank10", "mAP", "mINP"):
        assert 0.0 <= metrics[key] <= 1.0
        assert 0.0 <= metrics["rerank"][key] <= 1.0
    assert metrics["rank1"] <= metrics["rank5"] <= metrics["rank10"]
    assert (out / "ranked_results.png").stat().st_size > 0
    assert (out / "cmc.png").stat().st_size > 0
    table = capsys.readouterr().out
    assert "mAP" in table and "re-ranked" in table


def test_evaluate_rejects_non_reid_data(synthped_root, tmp_path, capsys):
    status = main(["evaluate", "--data", f"pa100k:{synthped_root}", "--out", str(tmp_path)])
    assert status == 2
    assert "attributes dataset" in capsys.readouterr().err


def test_evaluate_names_missing_encoder(synthped_root, tmp_path, capsys):
    status = main(["evaluate", "--data", f"market1501:{synthped_root}", "--out", str(tmp_path),
                   "--init", str(tmp_path / "no_such_run")])
    assert status == 2
    assert "no_such_run" in capsys.readouterr().err
