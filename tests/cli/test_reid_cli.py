"""`valpat reid` end to end on a generated tiny SynthPed set (one backend: ``trains_once``).

The test scores each run writes are recomputed from the model it saved
(tests/metric_checks.py).
"""

import json

import keras
import numpy as np
import pytest
from metric_checks import assert_reid_metrics_equal, reid_metrics

from valpat_keras.cli.main import main
from valpat_keras.data import registry
from valpat_keras.models import ImageEncoder

pytestmark = pytest.mark.trains_once

METRIC_KEYS = {"rank1", "rank5", "rank10", "mAP", "mINP"}
SIZE = (32, 16)


def _check_saved_model_scores(out, dataset, rerank=False):
    """metrics.json holds the scores of reid_model.keras; image_encoder/ is its encoder."""
    metrics = json.loads((out / "metrics.json").read_text())
    model = keras.saving.load_model(out / "reid_model.keras")
    expected = reid_metrics(model.embedding_model, dataset, SIZE, rerank=rerank)
    assert_reid_metrics_equal(metrics, expected)
    if rerank:
        assert_reid_metrics_equal(metrics["rerank"], expected["rerank"])
    encoder = ImageEncoder.from_preset(str(out / "image_encoder"))
    images = np.random.default_rng(0).random((2, *SIZE, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(encoder(images)),
                               keras.ops.convert_to_numpy(model.backbone(images)), atol=1e-5)
    return metrics


def test_reid_cli_supervised_and_unsupervised_on_tiny_synthped(tmp_path, capsys):
    data = f"synthped:{tmp_path / 'synthped'}"
    common = ["--random-init", "--epochs", "1", "--image-size", "32x16", "--p", "4", "--k", "4"]
    out = tmp_path / "bot"
    assert main(["reid", "--data", data, "--out", str(out), "--rerank", *common]) == 0
    dataset = registry.load("market1501", tmp_path / "synthped")
    metrics = _check_saved_model_scores(out, dataset, rerank=True)
    assert METRIC_KEYS <= set(metrics["rerank"]) and metrics["unsupervised"] is False
    # The epoch is chosen on ids held out from train (--val-fraction 0.1: 2 of 8 for tiny).
    assert metrics["selection"] == "validation" and metrics["num_val_ids"] == 2
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and "val_mAP" in history[0] and "triplet_loss" in history[0]
    assert metrics["best_val_mAP"] == pytest.approx(history[0]["val_mAP"])
    assert (out / "ranked_results.png").is_file()
    assert f"rank-1 {100 * metrics['rank1']:.2f}" in capsys.readouterr().out

    out = tmp_path / "usl"
    assert main(["reid", "--data", data, "--out", str(out), "--unsupervised", "--eps", "0.6",
                 "--min-samples", "2", "--k1", "6", *common]) == 0
    metrics = _check_saved_model_scores(out, dataset)
    assert metrics["unsupervised"] is True
    history = json.loads((out / "history.json").read_text())
    assert {"num_clusters", "num_outliers", "ari", "nmi"} <= set(history[0])


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
