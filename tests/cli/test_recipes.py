"""Recipes: every shipped file is complete and valid, flags override it, and its smoke run works.

Marked ``trains_once`` (one backend, the PyTorch pass of scripts/test.sh): the recipe mechanism
is argument parsing; the smoke runs go through the same training code the backend tests cover.
"""

import json

import pytest

from valpat_keras.cli.main import build_parser, main
from valpat_keras.cli.recipe_args import apply_recipe, apply_recipe_fields
from valpat_keras.errors import InputError
from valpat_keras.recipes import SOURCE_KINDS, available_recipes, load_recipe

pytestmark = pytest.mark.trains_once

#: Each command's run-config class (imported lazily: they import Keras).
CONFIG_CLASSES = {
    "pretrain": ("valpat_keras.tasks.pretrain_config", "PretrainConfig"),
    "reid": ("valpat_keras.tasks.reid_training", "ReIDRunConfig"),
    "attributes": ("valpat_keras.tasks.attribute_training", "AttributesRunConfig"),
    "search": ("valpat_keras.tasks.search", "SearchRunConfig"),
}
#: The transfers read SynthPed in their own layout; pretraining generates SynthPed itself.
SMOKE_DATA = {"reid": ["--data", "synthped"], "attributes": ["--data", "synthped"],
              "search": ["--data", "synthped"], "pretrain": []}


def _config_class(command):
    module, name = CONFIG_CLASSES[command]
    return getattr(__import__(module, fromlist=[name]), name)


def _parse(argv):
    parser = build_parser()
    return apply_recipe(parser, argv, parser.parse_args(argv))


def test_the_shipped_recipes_cover_pretraining_and_each_transfer():
    commands = {load_recipe(name).command for name in available_recipes()}
    assert commands == set(CONFIG_CLASSES)


@pytest.mark.parametrize("name", available_recipes())
def test_recipe_values_are_fields_with_a_source(name):
    recipe = load_recipe(name)
    config_cls = _config_class(recipe.command)
    config = config_cls.from_dict(recipe.values(), source=name)
    smoke = config_cls.from_dict(recipe.values(smoke=True), source=name)
    for field, value in recipe.config.items():
        assert recipe.source_kind(field) in SOURCE_KINDS
        expected = tuple(value) if isinstance(value, list) else value
        assert getattr(config, field) == expected
    for field, value in recipe.smoke.items():
        assert getattr(smoke, field) == (tuple(value) if isinstance(value, list) else value)


def test_flags_given_override_the_recipe_and_the_rest_comes_from_it(tmp_path):
    from valpat_keras.cli.reid import run_config

    args = _parse(["reid", "--data", "synthped", "--out", str(tmp_path), "--recipe",
                   "market_bot", "--epochs", "3", "--p", "8"])
    config = apply_recipe_fields(run_config(args), args)
    recipe = load_recipe("market_bot")
    assert (config.epochs, config.p) == (3, 8)  # given on the command line
    assert config.k == recipe.config["k"] and config.image_size == (256, 128)
    assert config.learning_rate == recipe.config["learning_rate"]  # flag --lr, from the recipe
    # Fields without a flag come from the recipe too.
    assert config.pooling == "avg" and config.label_smoothing == 0.1
    assert config.encoder_config == "resnet50"


def test_config_file_and_smoke_overrides(tmp_path):
    from valpat_keras.cli.attributes import run_config_of
    from valpat_keras.tasks.attribute_training import AttributesRunConfig

    path = AttributesRunConfig(epochs=7, weight_decay=0.01).save(tmp_path / "attr.json")
    args = _parse(["attributes", "--data", "synthped", "--out", str(tmp_path / "run"),
                   "--config-file", str(path)])
    config = apply_recipe_fields(run_config_of(args), args)
    assert (config.epochs, config.weight_decay) == (7, 0.01)
    args = _parse(["attributes", "--data", "synthped", "--out", str(tmp_path / "run"),
                   "--recipe", "pa100k_attributes", "--smoke"])
    config = apply_recipe_fields(run_config_of(args), args)
    assert (config.encoder_config, config.steps_per_epoch, config.batch_size) == ("tiny", 2, 8)
    assert config.weight_decay == load_recipe("pa100k_attributes").config["weight_decay"]


@pytest.mark.parametrize("argv, message", [
    (["--recipe", "no_such_recipe"], "shipped recipes: "),
    (["--recipe", "pa100k_attributes"], "configures `valpat attributes`, not `valpat reid`"),
    (["--config-file", "{cfg}"], "unknown ReIDRunConfig field(s) ['epochz']"),
    (["--config-file", "{cfg}", "--smoke"], "--smoke applies a recipe's smoke overrides"),
])
def test_bad_recipes_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("epochz: 3\n")
    argv = [a.replace("{cfg}", str(cfg)) for a in argv]
    assert main(["reid", "--data", "synthped", "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_recipe_without_sources_is_refused(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("command: reid\nconfig:\n  epochs: 5\n  p: 8\nsource:\n"
                    "  epochs: 'ours: five'\n")
    with pytest.raises(InputError, match=r"does not say where \['p'\] come from"):
        load_recipe(path)
    path.write_text("command: reid\nconfig:\n  epochs: 5\nsource:\n  epochs: 'mine: five'\n")
    with pytest.raises(InputError, match="must name a config key and start with"):
        load_recipe(path)


def _smoke_groups() -> dict[str, list[str]]:
    """Recipes whose smoke runs are the same run (same command and smoke values), by the first.

    BoT on Market-1501 and on DukeMTMC-reID differ in their full-size data only, so their
    smoke runs on SynthPed are one run; it is run once and the others are checked equal to it.
    """
    groups: dict[str, list[str]] = {}
    for name in available_recipes():
        recipe = load_recipe(name)
        key = json.dumps([recipe.command, recipe.values(smoke=True)], sort_keys=True)
        groups.setdefault(key, []).append(name)
    return {names[0]: names for names in groups.values()}


def test_recipes_sharing_a_smoke_run_have_equal_smoke_configs():
    for first, names in _smoke_groups().items():
        recipe = load_recipe(first)
        config_cls = _config_class(recipe.command)
        expected = config_cls.from_dict(recipe.values(smoke=True), source=first)
        for name in names[1:]:
            other = load_recipe(name)
            assert other.command == recipe.command
            assert config_cls.from_dict(other.values(smoke=True), source=name) == expected


@pytest.mark.parametrize("name", sorted(_smoke_groups()))
def test_recipe_smoke_run(name, tmp_path):
    recipe = load_recipe(name)
    out = tmp_path / "run"
    argv = [recipe.command, *SMOKE_DATA[recipe.command], "--out", str(out), "--recipe", name,
            "--smoke", "--seed", "0"]
    if recipe.command == "pretrain":
        argv += ["--synthped-preset", "tiny", "--quiet"]
    assert main(argv) == 0
    smoke = _config_class(recipe.command).from_dict(recipe.values(smoke=True), source=name)
    if recipe.command == "pretrain":
        # The run's config.json records the settings it ran with: the smoke overrides.
        ran = json.loads((out / "config.json").read_text())
        assert ran["steps"] == smoke.steps and ran["batch_size"] == smoke.batch_size
        assert len(json.loads((out / "history.json").read_text())["loss"]) == 1
    else:
        assert (out / "metrics.json").is_file()
        history = json.loads((out / "history.json").read_text())
        # One entry per epoch of the smoke run (a list of epochs, or Keras' metric -> values).
        epochs = len(history["loss"]) if isinstance(history, dict) else len(history)
        assert epochs == smoke.epochs


def test_the_recipes_page_is_generated_from_the_files():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "recipes_reference.py"
    spec = importlib.util.spec_from_file_location("recipes_reference", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.PAGE.read_text() == module.render(), (
        "tutorials/generated/recipes.md is stale: run `python scripts/recipes_reference.py`")
    assert module.render().count("\n### `") == len(available_recipes())
