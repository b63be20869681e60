import json

import keras
import numpy as np
import pytest

from valpat_keras.cli.main import build_parser, main
from valpat_keras.cli.pretrain import config_from_args
from valpat_keras.models import load_backbone, load_image_encoder

pytestmark = pytest.mark.keras


def test_valpat_pretrain_writes_run_dir_that_transfer_loaders_read(tmp_path, capsys):
    out = tmp_path / "run"
    status = main(["pretrain", "--out", str(out), "--synthped-preset", "tiny",
                   "--batch-size", "8", "--image-size", "64x32", "--steps", "3",
                   "--queue-size", "16", "--loss-weights", "ssl=1,itc=0.5,attr=1", "--quiet"])
    assert status == 0, capsys.readouterr().out
    for name in ("config.json", "history.json", "loss_curves.png", "pretrainer.keras",
                 "image_encoder/config.json", "backbone/config.json", "backbone/tokenizer"):
        assert (out / name).exists(), name
    history = json.loads((out / "history.json").read_text())
    # 20 SynthPed-tiny images -> 2 batches of 8 per epoch; 3 steps -> 2 logged epochs.
    assert len(history["loss"]) == 2
    assert {"ssl_loss", "ssl_acc", "itc_loss", "itc_acc", "attr_loss", "attr_ma"} <= set(history)
    # The logged loss is the --loss-weights sum of the logged objectives, epoch by epoch
    # (equal batches, no regulariser losses).
    for epoch, loss in enumerate(history["loss"]):
        weighted = (history["ssl_loss"][epoch] + 0.5 * history["itc_loss"][epoch]
                    + history["attr_loss"][epoch])
        assert loss == pytest.approx(weighted, rel=1e-5), epoch
    config = json.loads((out / "config.json").read_text())
    assert config["steps"] == 3 and config["loss_weights"] == {"ssl": 1, "itc": 0.5, "attr": 1}
    pretrainer = keras.saving.load_model(str(out / "pretrainer.keras"))
    assert int(pretrainer.optimizer.iterations.numpy()) == 3  # exactly --steps
    assert int(pretrainer.ema_step.numpy()) == 3 and pretrainer.loss_weights["itc"] == 0.5
    encoder = load_image_encoder(str(out), image_size=(64, 32))
    backbone, tokenizer = load_backbone(out)
    images = np.random.default_rng(0).random((2, 64, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(encoder(images)),
        keras.ops.convert_to_numpy(pretrainer.backbone.image_encoder(images)), atol=1e-5)
    ids = tokenizer(["a person in a red coat"])
    assert backbone.get_text_embeddings(ids).shape == (1, backbone.embedding_dim)


def test_valpat_pretrain_rejects_bad_arguments(tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path), "--batch-size", "24",
                 "--queue-size", "100"]) == 2
    assert "multiple of the batch size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pretrain", "--out", str(tmp_path), "--loss-weights", "foo=1"])
    with pytest.raises(SystemExit):
        main(["pretrain", "--out", str(tmp_path), "--objectives", "ssl,mlm"])
    with pytest.raises(SystemExit):
        main(["pretrain", "--out", str(tmp_path), "--last-stride", "3"])
    assert "invalid choice: 3" in capsys.readouterr().err


def test_last_stride_flag_reaches_the_config():
    parser = build_parser()
    assert config_from_args(parser.parse_args(
        ["pretrain", "--out", "x", "--last-stride", "2"])).resolved_last_stride == 2
    assert config_from_args(parser.parse_args(["pretrain", "--out", "x"])).last_stride is None
