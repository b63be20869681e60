"""`valpat reid` flags map onto a `ReIDRunConfig` (no training, no data)."""

from valpat_keras.cli.main import build_parser
from valpat_keras.cli.reid import run_config
from valpat_keras.tasks.reid_training import ReIDRunConfig


def test_reid_flags_become_the_run_config():
    args = build_parser().parse_args([
        "reid", "--data", "market1501:/data", "--out", "runs/x", "--init", "runs/pretrain",
        "--config", "resnet50", "--unsupervised", "--epochs", "3", "--p", "8", "--k", "2",
        "--image-size", "64x32", "--seed", "5", "--rerank", "--lr", "0.001",
        "--lr-schedule", "cosine", "--warmup-epochs", "1", "--freeze-backbone-epochs", "2",
        "--val-fraction", "0.2", "--eval-every", "2", "--batch-size", "16", "--eps", "0.5",
        "--min-samples", "3", "--k1", "10", "--hard-memory", "--steps-per-epoch", "7"])
    assert run_config(args) == ReIDRunConfig(
        init="runs/pretrain", encoder_config="resnet50", unsupervised=True, epochs=3, p=8,
        k=2, image_size=(64, 32), seed=5, rerank=True, learning_rate=0.001,
        lr_schedule="cosine", warmup_epochs=1, freeze_backbone_epochs=2,
        validation_fraction=0.2, eval_every=2, eval_batch_size=16, eps=0.5, min_samples=3,
        k1=10, hard_memory_update=True, steps_per_epoch=7)


def test_reid_defaults_keep_the_config_defaults_but_the_command_ones():
    args = build_parser().parse_args(["reid", "--data", "synthped", "--out", "runs/x"])
    config = run_config(args)
    # The command's own defaults: 60 epochs, batch 32 for the evaluation passes.
    assert config == ReIDRunConfig(epochs=60, eval_batch_size=32)
