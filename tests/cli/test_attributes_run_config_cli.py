"""`valpat attributes` flags -> `AttributesRunConfig`, and the one library call it makes."""

import pytest

from valpat_keras.cli import attributes as attributes_cli
from valpat_keras.cli.main import build_parser, main
from valpat_keras.data.synthped import SynthPedConfig, write_synthped
from valpat_keras.tasks import attributes
from valpat_keras.tasks.attributes import AttributesRunConfig

BASE = ["attributes", "--data", "synthped", "--out", "runs/par"]


def _config(*flags):
    return attributes_cli.run_config_of(build_parser().parse_args([*BASE, *flags]))


def test_default_flags_give_the_default_run_config():
    assert _config() == AttributesRunConfig()


def test_every_flag_lands_in_its_field():
    config = _config("--init", "runs/pretrain", "--config", "resnet18", "--epochs", "3",
                     "--batch-size", "8", "--image-size", "64x32", "--lr", "0.001",
                     "--head-lr-multiplier", "0", "--label-smoothing", "0.1", "--seed", "5",
                     "--no-freeze-bn", "--loss-weighting", "deepmar", "--head-init", "prior",
                     "--steps-per-epoch", "2", "--zero-shot")
    assert config == AttributesRunConfig(
        init="runs/pretrain", encoder_config="resnet18", epochs=3, batch_size=8,
        image_size=(64, 32), learning_rate=0.001, head_lr_multiplier=0.0,
        label_smoothing=0.1, seed=5, freeze_batch_norm=False, loss_weighting="deepmar",
        head_init="prior", steps_per_epoch=2, zero_shot=True)
    assert _config("--init-preset", "resnet_50_imagenet").init == "resnet_50_imagenet"


def test_the_command_makes_one_call_with_the_config(tmp_path, monkeypatch, capsys):
    write_synthped(tmp_path / "synthped", SynthPedConfig.preset("tiny"))
    calls = []

    def train(dataset, out_dir, config, **legacy):
        calls.append((dataset.name, out_dir, config, legacy))
        return {"ma": 0.5, "instance_acc": 0.25, "instance_prec": 0.5,
                "instance_recall": 0.125, "instance_f1": 0.2, "zero_shot": {"ma": 0.75}}

    monkeypatch.setattr(attributes, "train_attributes", train)
    out = str(tmp_path / "par")
    assert main(["attributes", "--data", f"synthped:{tmp_path / 'synthped'}", "--out", out,
                 "--init", "runs/pretrain", "--epochs", "2", "--zero-shot"]) == 0
    assert calls == [("pa100k", out, AttributesRunConfig(init="runs/pretrain", epochs=2,
                                                          zero_shot=True), {})]
    printed = capsys.readouterr().out
    assert ("fine-tuned (runs/pretrain): mA 50.00  acc 25.00  prec 50.00  recall 12.50  "
            "F1 20.00") in printed
    assert "zero-shot mA 75.00" in printed
    assert f"wrote {out}/metrics.json, history.json, attribute_bars.png" in printed


@pytest.mark.parametrize("flags", [["--zero-shot"], ["--random-init", "--zero-shot"]])
def test_zero_shot_without_a_run_is_refused_before_loading_data(flags, capsys):
    assert main([*BASE, *flags]) == 2
    assert "--zero-shot needs --init RUN_DIR" in capsys.readouterr().err
