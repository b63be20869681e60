"""`valpat reid` end to end on a generated tiny SynthPed set (one backend: unmarked, slow-ish)."""

import json

import pytest

from valpat_keras.cli.main import main

METRIC_KEYS = {"rank1", "rank5", "rank10", "mAP", "mINP"}


def test_reid_cli_supervised_and_unsupervised_on_tiny_synthped(tmp_path, capsys):
    data = f"synthped:{tmp_path / 'synthped'}"
    common = ["--random-init", "--epochs", "1", "--image-size", "32x16", "--p", "4", "--k", "4"]
    out = tmp_path / "bot"
    assert main(["reid", "--data", data, "--out", str(out), "--rerank", *common]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics) and METRIC_KEYS <= set(metrics["rerank"])
    assert all(0.0 <= metrics[k] <= 1.0 for k in METRIC_KEYS)
    assert metrics["num_valid_queries"] > 0 and metrics["unsupervised"] is False
    # The epoch is chosen on ids held out from train (--val-fraction 0.1: 2 of 8 for tiny).
    assert metrics["selection"] == "validation" and metrics["num_val_ids"] == 2
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and "val_mAP" in history[0] and "triplet_loss" in history[0]
    for name in ("ranked_results.png", "reid_model.keras", "image_encoder/config.json"):
        assert (out / name).is_file(), name
    assert "rank-1" in capsys.readouterr().out

    out = tmp_path / "usl"
    assert main(["reid", "--data", data, "--out", str(out), "--unsupervised", "--eps", "0.6",
                 "--min-samples", "2", "--k1", "6", *common]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics) and metrics["unsupervised"] is True
    history = json.loads((out / "history.json").read_text())
    assert {"num_clusters", "num_outliers", "ari", "nmi"} <= set(history[0])
    assert (out / "reid_model.keras").is_file()


def test_reid_cli_reports_a_missing_dataset(tmp_path, capsys):
    code = main(["reid", "--data", f"market1501:{tmp_path / 'nowhere'}", "--out",
                 str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("valpat reid: error:") and "nowhere" in err


@pytest.mark.parametrize("fraction", ["1", "-0.5", "ten"])
def test_reid_cli_rejects_a_validation_fraction_outside_zero_to_one(tmp_path, capsys, fraction):
    with pytest.raises(SystemExit) as exit_info:
        main(["reid", "--data", f"synthped:{tmp_path / 'synthped'}", "--out",
              str(tmp_path / "run"), "--val-fraction", fraction])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --val-fraction" in err and "[0, 1)" in err
    assert not any(tmp_path.iterdir())  # rejected at parse time, before generating data
