"""`valpat attributes` and `valpat search` end to end on a tiny generated SynthPed set.

Unmarked (they run once, on the default backend): each command trains a model for one
epoch, which is too slow to repeat on every backend; the task tests cover the backends.
"""

import json

import pytest

from valpat_keras.cli.main import main

TRAIN = ["--epochs", "1", "--image-size", "64x32", "--batch-size", "8"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny SynthPed set and a stand-in pretraining run (random weights, real layout)."""
    from valpat_keras.data.synthped import SynthPedConfig, write_synthped
    from valpat_keras.tasks.search import build_search_backbone

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


def test_attributes_random_init_writes_metrics_history_and_figure(workspace, capsys):
    out = workspace / "par_random"
    assert main(["attributes", "--data", f"synthped:{workspace / 'synthped'}", "--out",
                 str(out), "--random-init", *TRAIN]) == 0
    metrics = _metrics(out)
    for key in ("ma", "instance_acc", "instance_prec", "instance_recall", "instance_f1"):
        assert 0.0 <= metrics[key] <= 1.0
    assert len(metrics["label_ma"]) == 26 and metrics["init"] == "random"
    assert metrics["freeze_batch_norm"] is False  # random statistics are not worth keeping
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == 1 and "ma" in history
    assert (out / "attribute_bars.png").stat().st_size > 0
    assert (out / "attribute_recognizer.keras").is_file()
    assert "fine-tuned (random): mA" in capsys.readouterr().out


def test_attributes_from_a_run_reports_zero_shot_next_to_fine_tuned(workspace, capsys):
    out = workspace / "par_pretrained"
    assert main(["attributes", "--data", f"synthped:{workspace / 'synthped'}", "--out",
                 str(out), "--init", str(workspace / "pretrain_run"), "--zero-shot",
                 *TRAIN]) == 0
    metrics = _metrics(out)
    assert 0.0 <= metrics["zero_shot"]["ma"] <= 1.0 and 0.0 <= metrics["ma"] <= 1.0
    assert (out / "attribute_bars_zero_shot.png").is_file()
    assert "zero-shot mA" in capsys.readouterr().out
    # From a pretrained run the encoder's batch-norm statistics stay those of the run.
    import keras

    from valpat_keras.models import ImageEncoder

    assert metrics["freeze_batch_norm"] is True
    initial = ImageEncoder.from_preset(str(workspace / "pretrain_run" / "image_encoder"))
    trained = keras.saving.load_model(out / "attribute_recognizer.keras").backbone
    norms = [w for w in initial.weights if "moving" in w.path]
    assert norms
    for weight in norms:
        match = [w for w in trained.weights if w.path == weight.path]
        assert len(match) == 1
        assert (keras.ops.convert_to_numpy(match[0]) == keras.ops.convert_to_numpy(weight)).all()


def test_search_random_and_pretrained_init(workspace):
    from valpat_keras.tasks.search import PersonSearcher

    data = ["--data", f"synthped:{workspace / 'synthped'}"]
    out = workspace / "search_random"
    assert main(["search", *data, "--out", str(out), "--random-init", *TRAIN]) == 0
    metrics = _metrics(out)
    for key in ("R1", "R5", "R10", "mAP", "mINP"):
        assert 0.0 <= metrics[key] <= 1.0
    assert "R1" in metrics["i2t"]
    assert {"loss", "itc_loss", "sdm_loss", "id_loss"} <= set(
        json.loads((out / "history.json").read_text()))
    assert (out / "retrieval_examples.png").stat().st_size > 0
    hits = PersonSearcher.from_run_dir(out).search(
        "a woman with a backpack", [str(p) for p in sorted(
            (workspace / "synthped" / "CUHK-PEDES" / "imgs").rglob("*.jpg"))[:6]], k=3)
    assert len(hits) == 3

    pretrained = workspace / "search_pretrained"
    assert main(["search", *data, "--out", str(pretrained), "--init",
                 str(workspace / "pretrain_run"), "--epochs", "1", "--batch-size", "8",
                 "--loss-weights", "itc=1,sdm=1,id=0"]) == 0
    assert "id_loss" not in json.loads((pretrained / "history.json").read_text())


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
    import shutil

    from valpat_keras.data import registry

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
