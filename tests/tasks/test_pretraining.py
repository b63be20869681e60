"""`pretrain` defaults that depend on the data size and the run length, and its run config."""

import warnings

import pytest

pytestmark = pytest.mark.keras


def test_queue_is_at_most_a_quarter_of_the_images_and_a_multiple_of_the_batch():
    from valpat_keras.tasks.pretraining import default_queue_size

    # SynthPed small: 1,500 images; a 4,096-key queue would hold each image 2.7 times.
    assert default_queue_size(1500, 32, 4096) == 352
    assert default_queue_size(1_280_000, 256, 65536) == 65536
    assert default_queue_size(100, 32, 4096) == 0  # under one batch: in-batch negatives


def test_momentum_follows_the_run_length():
    from valpat_keras.tasks.pretraining import default_momentum

    assert default_momentum(500) == pytest.approx(0.99)
    assert default_momentum(10_000) == pytest.approx(0.998)
    assert default_momentum(1_000_000) == pytest.approx(0.999)
    # The key encoder forgets its random start within the run.
    assert default_momentum(500) ** 500 < 0.01


class _Planned(Exception):
    """Raised by the patched planning step: the test needs the config, not a run."""


def _config_of_call(monkeypatch, tmp_path, *args, **kwargs):
    """The `PretrainConfig` a `pretrain` call resolves to (stopped before training)."""
    import numpy as np

    from valpat_keras.data.records import PretrainDataset, PretrainRecord
    from valpat_keras.tasks import pretraining

    seen = []

    def plan(dataset, config):
        seen.append(config)
        raise _Planned

    monkeypatch.setattr(pretraining, "plan_pretraining", plan)
    data = PretrainDataset(name="luperson_ta", root=str(tmp_path), attribute_names=["a"],
                           records=[PretrainRecord(str(tmp_path / "0.jpg"), ("a caption",),
                                                   np.array([1], np.int8))])
    with pytest.raises(_Planned):
        pretraining.pretrain(data, tmp_path / "run", *args, **kwargs)
    return seen[0]


def test_old_keyword_call_warns_and_gives_the_same_config(monkeypatch, tmp_path):
    from valpat_keras.tasks.pretraining import PretrainConfig

    wanted = PretrainConfig(encoder_config="resnet50", objectives=("ssl", "itc"), steps=7, batch_size=8,
                            image_size=(64, 32), loss_weights={"ssl": 1, "itc": 0.5},
                            queue_size=16, verbose=0)
    with pytest.warns(DeprecationWarning, match=r"pretrain\(config=, objectives=.*PretrainConfig"):
        old = _config_of_call(monkeypatch, tmp_path, config="resnet50",
                              objectives=["ssl", "itc"], steps=7, batch_size=8,
                              image_size=[64, 32], loss_weights={"ssl": 1, "itc": 0.5},
                              queue_size=16, verbose=0)
    assert old == wanted and old.loss_weights == {"ssl": 1.0, "itc": 0.5}
    # The config form: no warning, the same settings; a keyword overrides a field.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert _config_of_call(monkeypatch, tmp_path, wanted) == wanted
    with pytest.warns(DeprecationWarning):
        assert _config_of_call(monkeypatch, tmp_path, wanted, seed=3) == wanted.replace(seed=3)


def test_config_checks_its_settings():
    from valpat_keras.errors import InputError
    from valpat_keras.tasks.pretraining import PretrainConfig

    with pytest.raises(InputError, match="Unknown pretraining config 'huge'"):
        PretrainConfig(encoder_config="huge")
    with pytest.raises(InputError, match="epochs or steps, not both"):
        PretrainConfig(epochs=1, steps=2)
    with pytest.raises(InputError, match="multiple of the batch size"):
        PretrainConfig(batch_size=24, queue_size=100)
    with pytest.raises(InputError, match="checkpoint_every_steps must be a positive integer, "
                                         "got 0"):
        PretrainConfig(checkpoint_every_steps=0)
    assert PretrainConfig(checkpoint_every_steps=50).checkpoint_every_steps == 50
    with pytest.raises(InputError, match="unknown PretrainConfig field"):
        PretrainConfig.from_arguments({"config": "tiny", "stpes": 3})
    assert PretrainConfig(encoder_config="vit").resolved_image_size == (256, 128)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_config_file_round_trip(tmp_path, suffix):
    import yaml

    from valpat_keras.tasks.pretraining import PretrainConfig

    config = PretrainConfig(encoder_config="tiny", objectives=("ssl", "attr"), steps=600, batch_size=32,
                            image_size=(64, 32), loss_weights={"ssl": 0.1, "attr": 3.0},
                            momentum=0.99, mixed_precision="mixed_bfloat16", augment=False)
    path = tmp_path / f"recipe{suffix}"
    if suffix == ".json":
        config.save(path)
    else:
        path.write_text(yaml.safe_dump(config.to_dict()))
    loaded = PretrainConfig.from_file(path)
    assert loaded == config
    assert loaded.image_size == (64, 32) and loaded.objectives == ("ssl", "attr")
    # A hand-written recipe: only some fields, lists for the tuples.
    (tmp_path / "short.yaml").write_text("steps: 20\nimage_size: [128, 64]\nseed: 4\n")
    assert PretrainConfig.from_file(tmp_path / "short.yaml") == PretrainConfig(
        steps=20, image_size=(128, 64), seed=4)
