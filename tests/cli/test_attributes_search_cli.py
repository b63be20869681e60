"""`valpat attributes` and `valpat search` end to end on a tiny generated SynthPed set.

Marked ``trains_once`` (they run once, in the PyTorch pass of scripts/test.sh): each command
trains a model for one epoch, which is too slow to repeat on every backend; the task tests
cover the backends. The test scores each run writes are recomputed from the model it saved
(tests/metric_checks.py).
"""

import json
import shutil

import keras
import numpy as np
import pytest
from metric_checks import (
    ATTRIBUTE_KEYS,
    SEARCH_KEYS,
    assert_metrics_equal,
    attribute_metrics,
    caption_image_cosines,
    search_metrics,
)

from valpat_keras.cli.main import main
from valpat_keras.data import registry
from valpat_keras.data.synthped import SynthPedConfig, write_synthped
from valpat_keras.models import ImageEncoder, load_backbone
from valpat_keras.tasks.search import PersonSearcher, build_search_backbone
from valpat_keras.tasks.zero_shot import evaluate_zero_shot

pytestmark = pytest.mark.trains_once

TRAIN = ["--epochs", "1", "--image-size", "64x32", "--batch-size", "8"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny SynthPed set and a stand-in pretraining run (random weights, real layout)."""
    root = tmp_path_factory.mktemp("attr_search")
    write_synthped(root / "synthped", SynthPedConfig.preset("tiny"))
    backbone, tokenizer = build_search_backbone(
        ["a man in a red shirt", "a woman with a backpack"], image_size=(64, 32),
        embedding_dim=32, vocabulary_size=300, sequence_length=24)
    run = root / "pretrain_run"
    backbone.save_to_preset(str(run / "backbone"))
    tokenizer.save_to_preset(str(run / "backbone" / "tokenizer"))
    backbone.image_encoder.save_to_preset(str(run / "image_encoder"))
    return root


def _metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def _check_attribute_scores(out, dataset):
    """metrics.json holds the test scores of the saved attribute_recognizer.keras."""
    metrics = _metrics(out)
    model = keras.saving.load_model(out / "attribute_recognizer.keras")
    expected = attribute_metrics(model, dataset)
    assert_metrics_equal(metrics, expected, ATTRIBUTE_KEYS)
    assert list(metrics["label_ma"]) == list(dataset.attribute_names)
    assert list(metrics["label_ma"].values()) == pytest.approx(list(expected["label_ma"]),
                                                               abs=1e-6)
    return metrics, model


def test_attributes_random_init_writes_metrics_history_and_figure(workspace, capsys):
    out = workspace / "par_random"
    assert main(["attributes", "--data", f"synthped:{workspace / 'synthped'}", "--out",
                 str(out), "--random-init", *TRAIN]) == 0
    dataset = registry.load("pa100k", workspace / "synthped")
    metrics, _ = _check_attribute_scores(out, dataset)
    assert len(metrics["label_ma"]) == 26 and metrics["init"] == "random"
    assert metrics["num_train"] == len(dataset.train)
    assert metrics["num_test"] == len(dataset.test)
    assert metrics["freeze_batch_norm"] is False  # random statistics are not worth keeping
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == 1 and "ma" in history
    assert (out / "attribute_bars.png").stat().st_size > 0
    assert f"fine-tuned (random): mA {100 * metrics['ma']:.2f}" in capsys.readouterr().out


def test_attributes_from_a_run_reports_zero_shot_next_to_fine_tuned(workspace, capsys):
    out = workspace / "par_pretrained"
    run = workspace / "pretrain_run"
    assert main(["attributes", "--data", f"synthped:{workspace / 'synthped'}", "--out",
                 str(out), "--init", str(run), "--zero-shot", *TRAIN]) == 0
    dataset = registry.load("pa100k", workspace / "synthped")
    metrics, model = _check_attribute_scores(out, dataset)
    # Zero-shot is the run's frozen image-text space on the same test split.
    zero_shot = evaluate_zero_shot(dataset, run, batch_size=8)
    assert_metrics_equal(metrics["zero_shot"], zero_shot, ATTRIBUTE_KEYS)
    assert metrics["zero_shot"]["ma"] != pytest.approx(metrics["ma"], abs=1e-9)
    assert (out / "attribute_bars_zero_shot.png").is_file()
    assert "zero-shot mA" in capsys.readouterr().out
    # From a pretrained run the encoder's batch-norm statistics stay those of the run.
    assert metrics["freeze_batch_norm"] is True
    initial = ImageEncoder.from_preset(str(run / "image_encoder"))
    norms = [w for w in initial.weights if "moving" in w.path]
    assert norms
    for weight in norms:
        match = [w for w in model.backbone.weights if w.path == weight.path]
        assert len(match) == 1
        assert (keras.ops.convert_to_numpy(match[0]) == keras.ops.convert_to_numpy(weight)).all()


def _check_search_scores(out, records):
    """metrics.json holds the scores of the saved backbone/ (with its tokenizer)."""
    metrics = _metrics(out)
    backbone, tokenizer = load_backbone(out)
    expected = search_metrics(backbone, tokenizer, records)
    assert_metrics_equal(metrics, expected, SEARCH_KEYS)
    assert_metrics_equal(metrics["i2t"], expected["i2t"], SEARCH_KEYS)
    assert metrics["num_test_captions"] == sum(len(r.captions) for r in records)
    return backbone, tokenizer


def test_search_random_and_pretrained_init(workspace):
    data = ["--data", f"synthped:{workspace / 'synthped'}"]
    records = registry.load("cuhk_pedes", workspace / "synthped").test
    out = workspace / "search_random"
    assert main(["search", *data, "--out", str(out), "--random-init", *TRAIN]) == 0
    backbone, tokenizer = _check_search_scores(out, records)
    assert {"loss", "itc_loss", "sdm_loss", "id_loss"} <= set(
        json.loads((out / "history.json").read_text()))
    assert (out / "retrieval_examples.png").stat().st_size > 0
    # The searcher of the run folder ranks by the cosine of the saved towers.
    paths = [r.path for r in records[:6]]
    query = "a woman with a backpack"
    hits = PersonSearcher.from_run_dir(out).search(query, paths, k=3)
    scores = caption_image_cosines(backbone, tokenizer, [query], paths)[0]
    assert [h.index for h in hits] == list(np.argsort(-scores, kind="stable")[:3])
    assert [h.score for h in hits] == pytest.approx(list(np.sort(scores)[::-1][:3]), abs=1e-5)

    pretrained = workspace / "search_pretrained"
    assert main(["search", *data, "--out", str(pretrained), "--init",
                 str(workspace / "pretrain_run"), "--epochs", "1", "--batch-size", "8",
                 "--loss-weights", "itc=1,sdm=1,id=0"]) == 0
    assert "id_loss" not in json.loads((pretrained / "history.json").read_text())
    _check_search_scores(pretrained, records)


def test_bad_input_is_one_line_not_a_traceback(workspace, capsys):
    assert main(["attributes", "--data", f"pa100k:{workspace / 'nowhere'}", "--out",
                 str(workspace / "bad")]) == 2
    assert "valpat attributes: error:" in capsys.readouterr().err
    assert main(["attributes", "--data", "synthped", "--out", str(workspace / "bad"),
                 "--zero-shot"]) == 2
    assert "--zero-shot needs --init" in capsys.readouterr().err
    assert main(["search", "--data", f"synthped:{workspace / 'synthped'}", "--out",
                 str(workspace / "bad"), "--init", str(workspace / "pretrain_run"),
                 "--image-size", "128x64"]) == 2
    assert "takes images of (64, 32)" in capsys.readouterr().err


def test_attributes_on_user_data_reports_an_unreadable_image_and_trains_without_it(
        workspace, tmp_path):
    root = tmp_path / "PA-100K"
    shutil.copytree(workspace / "synthped" / "PA-100K", root)
    train = registry.load("pa100k", root).train
    broken = train[0].path
    with open(broken, "wb") as f:
        f.write(b"not a jpeg")
    out = tmp_path / "par"
    with pytest.warns(UserWarning, match=rf"skipped 1 unreadable.*{broken.split('/')[-1]}"):
        assert main(["attributes", "--data", f"pa100k:{root}", "--out", str(out),
                     "--random-init", "--steps-per-epoch", "1", *TRAIN]) == 0
    assert _metrics(out)["num_train"] == len(train) - 1
