"""`ReIDRunConfig` and the deprecated keyword calls of `train_reid` (no training here)."""

import dataclasses
import warnings

import pytest

from valpat_keras.data.records import ReIDDataset, ReIDRecord
from valpat_keras.errors import InputError
from valpat_keras.tasks import reid_training
from valpat_keras.tasks.reid_training import ReIDRunConfig, ReIDTrainingConfig, train_reid


class _Resolved(Exception):
    def __init__(self, config):
        super().__init__("resolved")
        self.config = config


@pytest.fixture
def resolved_config(monkeypatch):
    """Calls `train_reid` up to its first step and returns the config it resolved."""

    def stop(dataset, config):
        raise _Resolved(config)

    monkeypatch.setattr(reid_training, "_split_training_ids", stop)

    def resolve(*args, **kwargs) -> ReIDRunConfig:
        with pytest.raises(_Resolved) as info:
            train_reid(_DATASET, "unused", *args, **kwargs)
        return info.value.config

    return resolve


_RECORDS = [ReIDRecord(f"{pid}_{i}.jpg", pid, i % 2) for pid in range(4) for i in range(4)]
_DATASET = ReIDDataset("toy", "", _RECORDS[:8], _RECORDS[8:10], _RECORDS[10:])


def test_the_old_name_is_the_run_config():
    assert ReIDTrainingConfig is ReIDRunConfig
    config = ReIDRunConfig()
    # The defaults of the old train_reid keywords and of the old hyper-parameter config.
    assert (config.init, config.encoder_config, config.unsupervised, config.epochs, config.p,
            config.k, config.image_size, config.seed, config.rerank) == (
        "random", "tiny", False, 10, 16, 4, (256, 128), 0, False)
    assert config.learning_rate == 3.5e-4 and config.validation_fraction == 0.1


def test_an_old_keyword_call_warns_and_equals_the_config_call(resolved_config):
    with pytest.warns(DeprecationWarning, match=r"train_reid\(init=, epochs=.*config=.*"
                                                r"ReIDRunConfig"):
        old = resolved_config(init="runs/pretrain", config="resnet50", epochs=1,
                              unsupervised=True, p=4, k=2, image_size=[64, 32], seed=3,
                              rerank=True)
    new_call = ReIDRunConfig(init="runs/pretrain", encoder_config="resnet50", epochs=1,
                             unsupervised=True, p=4, k=2, image_size=(64, 32), seed=3,
                             rerank=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = resolved_config(new_call)
    assert old == new == new_call
    assert old.image_size == (64, 32)  # a list becomes the tuple field


def test_old_options_and_keywords_merge_with_a_warning(resolved_config):
    options = ReIDTrainingConfig(steps_per_epoch=2, eps="auto", verbose=0)
    with pytest.warns(DeprecationWarning, match="options"):
        only_options = resolved_config(options=options)
    assert only_options == options
    with pytest.warns(DeprecationWarning, match=r"train_reid\(epochs=, p="):
        merged = resolved_config(epochs=2, p=8, options=options)
    assert merged == dataclasses.replace(options, epochs=2, p=8)
    assert merged.eps == "auto" and merged.steps_per_epoch == 2


def test_a_string_config_is_the_old_encoder_configuration(resolved_config):
    with pytest.warns(DeprecationWarning, match=r"train_reid\(config="):
        config = resolved_config("resnet18")
    assert config == ReIDRunConfig(encoder_config="resnet18")


def test_bad_calls_are_refused(resolved_config):
    with pytest.raises(TypeError, match="learning_rate"):
        train_reid(_DATASET, "unused", learning_rate=0.1)
    with pytest.raises(TypeError, match="not both"):
        train_reid(_DATASET, "unused", ReIDRunConfig(), options=ReIDRunConfig())
    with pytest.raises(TypeError, match="expected a ReIDRunConfig"):
        train_reid(_DATASET, "unused", {"epochs": 2})


def test_a_recipe_file_round_trips(tmp_path):
    recipe = tmp_path / "bot.yaml"
    recipe.write_text("epochs: 120\nimage_size: [256, 128]\neps: auto\ntriplet_margin: null\n")
    config = ReIDRunConfig.from_file(recipe)
    assert config == ReIDRunConfig(epochs=120, eps="auto", triplet_margin=None)
    assert ReIDRunConfig.from_file(config.save(tmp_path / "run.json")) == config
    with pytest.raises(InputError, match="unknown ReIDRunConfig field"):
        ReIDRunConfig.from_dict({"epoch": 3})


def test_an_old_positional_init_and_a_config_name_are_told_apart(resolved_config):
    # Old signature: train_reid(dataset, out_dir, init="random", config="tiny", ...).
    with pytest.warns(DeprecationWarning):
        positional = resolved_config("runs/pretrain", epochs=1)
    assert positional.init == "runs/pretrain" and positional.encoder_config == "tiny"
    with pytest.warns(DeprecationWarning):
        random = resolved_config("random")
    assert random.init == "random"
    with pytest.warns(DeprecationWarning):
        named = resolved_config("resnet50", init="runs/pretrain")
    assert (named.init, named.encoder_config) == ("runs/pretrain", "resnet50")
    with pytest.warns(DeprecationWarning):
        keyword = resolved_config(config="resnet18")
    assert (keyword.init, keyword.encoder_config) == ("random", "resnet18")
