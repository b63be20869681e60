"""Named recipes: the paper-scale settings of each command, as files shipped in the package.

A recipe is a YAML file beside this module (``valpat_keras/recipes/NAME.yaml``)::

    command: reid                      # the valpat command it configures
    description: BoT on Market-1501 from a VAL-PAT ResNet-50.
    data: market1501:/data/market1501  # what --data it expects (an example)
    config:                            # fields of the command's run config
      encoder_config: resnet50
      epochs: 120
    source:                            # where each value comes from: every config key
      encoder_config: "paper: ResNet-50 image encoder"
      epochs: "reference: fast-reid configs/Base-bagtricks.yml (120 epochs)"
    smoke:                             # overrides for a minute-long run of the same path
      encoder_config: tiny
      epochs: 1

Every ``source`` entry starts with ``paper:`` (stated by Bao et al. 2023), ``reference:``
(from the cited implementation the paper builds on) or ``ours:`` (our choice, the paper gives
no value), so a reader can tell which numbers are the paper's. `valpat <command> --recipe NAME`
applies a recipe; flags given on the command line override it (`valpat_keras.cli.recipe_args`).
`valpat_keras.tasks.run_config.RunConfig.from_dict` checks the field names when the command
builds its config.

This module imports no Keras.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from valpat_keras.errors import InputError

__all__ = ["RECIPE_DIR", "SOURCE_KINDS", "Recipe", "available_recipes", "load_recipe",
           "recipe_markdown"]

#: The folder of the shipped recipe files.
RECIPE_DIR = Path(__file__).resolve().parent
#: The allowed prefixes of a ``source`` entry.
SOURCE_KINDS = ("paper", "reference", "ours")
#: The commands a recipe can configure.
RECIPE_COMMANDS = ("pretrain", "reid", "attributes", "search")
_KEYS = {"command", "description", "data", "config", "source", "smoke"}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One recipe file, checked.

    Attributes:
        name: The file's stem (``market_bot``) or the path given.
        command: The valpat command it configures.
        description: One line on what it reproduces.
        data: An example ``--data`` value (the dataset it is written for).
        config: Run-config fields.
        source: Field -> ``"paper: ..."`` / ``"reference: ..."`` / ``"ours: ..."``.
        smoke: Overrides for the smoke run (a tiny run of the same code path).
        path: The file.
    """

    name: str
    command: str
    description: str
    data: str
    config: Mapping[str, Any]
    source: Mapping[str, str]
    smoke: Mapping[str, Any]
    path: Path

    def values(self, smoke: bool = False) -> dict[str, Any]:
        """The config fields, with the smoke overrides applied when ``smoke``."""
        return {**self.config, **(self.smoke if smoke else {})}

    def source_kind(self, field: str) -> str:
        """``paper``, ``reference`` or ``ours`` for a config field."""
        return self.source[field].split(":", 1)[0].strip()


def available_recipes() -> list[str]:
    """The names of the shipped recipes, sorted."""
    return sorted(path.stem for path in RECIPE_DIR.glob("*.yaml"))


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"{path}: cannot read the recipe ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(values, Mapping):
        raise InputError(f"{path}: expected a mapping with command/config/source keys, got "
                         f"{type(values).__name__}")
    return dict(values)


def _check(path: Path, values: Mapping[str, Any]) -> None:
    """Raises an `InputError` naming the file and key for a malformed recipe."""
    unknown = sorted(set(values) - _KEYS)
    if unknown:
        raise InputError(f"{path}: unknown recipe key(s) {unknown}; expected some of "
                         f"{sorted(_KEYS)}")
    if values.get("command") not in RECIPE_COMMANDS:
        raise InputError(f"{path}: 'command' must be one of {list(RECIPE_COMMANDS)}, got "
                         f"{values.get('command')!r}")
    for key in ("config", "source", "smoke"):
        if not isinstance(values.get(key, {}), Mapping):
            raise InputError(f"{path}: '{key}' must be a mapping")
    config, source = values.get("config", {}), values.get("source", {})
    missing = sorted(set(config) - set(source))
    if missing:
        raise InputError(f"{path}: 'source' does not say where {missing} come from (each "
                         f"config key needs 'paper: ...', 'reference: ...' or 'ours: ...')")
    for field, text in source.items():
        kind = str(text).split(":", 1)[0].strip()
        if field not in config or kind not in SOURCE_KINDS or ":" not in str(text):
            raise InputError(f"{path}: source.{field} must name a config key and start with "
                             f"one of {[k + ':' for k in SOURCE_KINDS]}, got {text!r}")


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Reads a shipped recipe by name, or any recipe file by path.

    Args:
        name_or_path: A name of `available_recipes` or the path of a ``.yaml`` recipe.

    Raises:
        InputError: An unknown name (listing the shipped ones) or a malformed file (naming
            the key).
    """
    path = Path(name_or_path)
    if not path.is_file():
        if str(name_or_path) not in available_recipes():
            raise InputError(f"--recipe {name_or_path!r}: no such recipe file or name; shipped "
                             f"recipes: {', '.join(available_recipes())}")
        path = RECIPE_DIR / f"{name_or_path}.yaml"
    values = _read_mapping(path)
    _check(path, values)
    return Recipe(name=path.stem, command=values["command"],
                  description=str(values.get("description", "")),
                  data=str(values.get("data", "")), config=dict(values.get("config", {})),
                  source=dict(values.get("source", {})), smoke=dict(values.get("smoke", {})),
                  path=path)


def _cell(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip().replace("|", "\\|")


def recipe_markdown(recipe: Recipe) -> str:
    """A recipe as a Markdown section: its values, their sources and the smoke overrides."""
    lines = [f"### `{recipe.name}`", "", recipe.description, "",
             f"`valpat {recipe.command} --recipe {recipe.name} --data {recipe.data} ...`", "",
             "| field | value | from | why |", "|---|---|---|---|"]
    for field, value in recipe.config.items():
        kind, why = (part.strip() for part in recipe.source[field].split(":", 1))
        lines.append(f"| `{field}` | `{_cell(value)}` | {kind} | {why.replace('|', '/')} |")
    smoke = ", ".join(f"`{k}={_cell(v)}`" for k, v in recipe.smoke.items())
    lines += ["", f"Smoke run (`--smoke`): {smoke or 'no overrides'}.", ""]
    return "\n".join(lines)
