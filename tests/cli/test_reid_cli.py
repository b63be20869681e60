"""`valpat reid` end to end on a generated tiny SynthPed set (one backend: unmarked, slow-ish)."""

import json

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
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nowhere" in err
