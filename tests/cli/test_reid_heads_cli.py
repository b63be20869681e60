"""`valpat reid --head mgn` and `--head agw` train and report on a tiny Market-layout tree.

SynthPed written in the Market-1501 layout (as tests/cli/test_reid_cli.py uses), 32 x 16
images, the tiny ResNet, one epoch of two P x K steps. The scores in metrics.json are
recomputed from the saved reid_model.keras (tests/metric_checks.py); marked ``keras``, so
it runs on the three backends.
"""

import json

import keras
import numpy as np
import pytest
from metric_checks import assert_reid_metrics_equal, reid_metrics

from valpat_keras.cli.main import build_parser, main
from valpat_keras.cli.reid import run_config
from valpat_keras.data import registry
from valpat_keras.tasks.reid import AGWReID, MGNReID

pytestmark = pytest.mark.keras

SIZE = (32, 16)
COMMON = ["--random-init", "--epochs", "1", "--steps-per-epoch", "2", "--image-size", "32x16",
          "--p", "4", "--k", "2", "--val-fraction", "0"]


@pytest.fixture(scope="module")
def synthped(tmp_path_factory):
    """The generated tree (generated once, by the first run) and its loaded dataset."""
    return tmp_path_factory.mktemp("heads") / "synthped"


def _run(head: str, root, out, extra=()) -> dict:
    assert main(["reid", "--data", f"synthped:{root}", "--out", str(out), "--head", head,
                 *COMMON, *extra]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    model = keras.saving.load_model(out / "reid_model.keras")
    dataset = registry.load("market1501", root)
    assert_reid_metrics_equal(metrics, reid_metrics(model.embedding_model, dataset, SIZE))
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and {"id_loss", "triplet_loss"} <= set(history[0])
    assert np.isfinite(history[0]["loss"])
    assert metrics["head"] == head and metrics["unsupervised"] is False
    return metrics, model


def test_reid_cli_trains_and_reports_mgn(synthped, tmp_path, capsys):
    metrics, model = _run("mgn", synthped, tmp_path / "mgn",
                          ["--mgn-embedding-dim", "8", "--head-triplet-weight", "0.5"])
    assert isinstance(model, MGNReID) and model.triplet_loss_weight == 0.5
    assert model.id_loss_weight == 0.125  # fast-reid's weight when none is given
    images = np.random.default_rng(0).random((2, *SIZE, 3)).astype("float32")
    assert model.embed(images).shape == (2, 8 * 8)  # the 8 heads concatenated
    assert f"supervised MGN (random) test: rank-1 {100 * metrics['rank1']:.2f}" in (
        capsys.readouterr().out)


def test_reid_cli_trains_and_reports_agw(synthped, tmp_path):
    _, model = _run("agw", synthped, tmp_path / "agw")
    assert isinstance(model, AGWReID) and model.triplet_margin is None
    assert len(model.non_local) == 2


def test_reid_cli_rejects_a_head_with_unsupervised(synthped, tmp_path, capsys):
    code = main(["reid", "--data", f"synthped:{synthped}", "--out", str(tmp_path / "x"),
                 "--head", "mgn", "--unsupervised", *COMMON])
    assert code == 2
    assert "supervised head" in capsys.readouterr().err


def test_reid_head_flags_become_the_run_config():
    args = build_parser().parse_args([
        "reid", "--data", "synthped", "--out", "runs/x", "--head", "mgn", "--head-id-weight",
        "0.3", "--head-triplet-weight", "0.4", "--mgn-embedding-dim", "64"])
    config = run_config(args)
    assert (config.head, config.head_id_loss_weight, config.head_triplet_loss_weight,
            config.mgn_embedding_dim) == ("mgn", 0.3, 0.4, 64)
    defaults = run_config(build_parser().parse_args(["reid", "--data", "synthped", "--out",
                                                     "runs/x"]))
    assert (defaults.head, defaults.head_id_loss_weight, defaults.mgn_embedding_dim) == (
        "bot", None, 256)
