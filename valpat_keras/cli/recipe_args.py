"""``--recipe NAME`` / ``--config-file FILE``: run settings from a file, flags override.

A recipe's (or config file's) values become the defaults of the command's flags, and the
arguments are parsed again, so precedence is: a flag given on the command line, then the
recipe, then the built-in default. Config fields without a flag are applied to the run config
after the flags (`apply_recipe_fields`). This module imports no Keras.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from valpat_keras.errors import InputError
from valpat_keras.recipes import Recipe, available_recipes, load_recipe

__all__ = ["FIELD_FLAGS", "add_recipe_arguments", "apply_recipe", "apply_recipe_fields"]

#: Per command: run-config field -> argparse dest, where the flag's name differs from the
#: field's (a field whose name is a dest needs no entry).
FIELD_FLAGS: dict[str, dict[str, str]] = {
    "pretrain": {"encoder_config": "config", "augment": "views",
                 "checkpoint_every_steps": "checkpoint_every"},
    "reid": {"encoder_config": "config", "learning_rate": "lr",
             "validation_fraction": "val_fraction", "eval_batch_size": "batch_size",
             "hard_memory_update": "hard_memory",
             "checkpoint_every_steps": "checkpoint_every"},
    "attributes": {"encoder_config": "config", "learning_rate": "lr",
                   "freeze_batch_norm": "freeze_bn",
                   "checkpoint_every_steps": "checkpoint_every"},
    "search": {"encoder_config": "config", "learning_rate": "lr",
               "checkpoint_every_steps": "checkpoint_every"},
}


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--recipe``, ``--config-file`` and ``--smoke`` to a command's parser."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--recipe", metavar="NAME_OR_FILE", default=None,
                        help="take the settings of a named recipe (" +
                             ", ".join(available_recipes()) + ") or a recipe file; "
                             "flags given here override it")
    source.add_argument("--config-file", metavar="FILE", default=None,
                        help="take the settings of a file of run-config fields (JSON or "
                             "YAML, as RunConfig.save writes); flags given here override it")
    parser.add_argument("--smoke", action="store_true",
                        help="with --recipe: apply the recipe's smoke overrides (a tiny run "
                             "of the same code path, to check a set-up in a minute)")


def _config_file_values(path: str) -> tuple[dict[str, Any], str | None]:
    """The fields of a plain config file, or of a recipe file (and its command)."""
    file = Path(path)
    try:
        values = yaml.safe_load(file.read_text(encoding="utf-8"))  # JSON is YAML
    except OSError as err:
        raise InputError(f"--config-file {path}: cannot read it ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise InputError(f"--config-file {path}: not valid JSON or YAML ({err})") from None
    if not isinstance(values, Mapping):
        raise InputError(f"--config-file {path}: expected a mapping of run-config fields")
    if "command" in values and "config" in values:
        recipe = load_recipe(file)
        return recipe.values(), recipe.command
    return dict(values), None


def _recipe_values(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The values to apply and where they come from (for messages)."""
    if args.recipe is not None:
        recipe: Recipe = load_recipe(args.recipe)
        command, values, origin = recipe.command, recipe.values(args.smoke), str(recipe.path)
    else:
        if args.smoke:
            raise InputError("--smoke applies a recipe's smoke overrides: give --recipe too")
        values, command = _config_file_values(args.config_file)
        origin = args.config_file
    if command is not None and command != args.command:
        raise InputError(f"{origin}: this recipe configures `valpat {command}`, not "
                         f"`valpat {args.command}`")
    return values, origin


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._subparsers._group_actions:  # argparse keeps no public handle
        if command in getattr(action, "choices", {}):
            return action.choices[command]
    raise KeyError(command)


def apply_recipe(parser: argparse.ArgumentParser, argv: list[str],
                 args: argparse.Namespace) -> argparse.Namespace:
    """Parses ``argv`` again with a recipe's values as the command's defaults.

    Args:
        parser: The root `valpat` parser.
        argv: The command line.
        args: Its first parse.

    Returns:
        ``args`` unchanged when no ``--recipe`` / ``--config-file`` was given; else the new
        parse, with ``recipe_fields`` (values without a flag) and ``recipe_source`` set.

    Raises:
        InputError: An unknown recipe, a malformed file, or a recipe of another command.
    """
    args.recipe_fields, args.recipe_source = {}, None
    if getattr(args, "recipe", None) is None and getattr(args, "config_file", None) is None:
        return args
    values, origin = _recipe_values(args)
    renamed = FIELD_FLAGS.get(args.command, {})
    dests = set(vars(args))
    defaults, rest = {}, {}
    for field, value in values.items():
        dest = renamed.get(field, field)
        value = tuple(value) if isinstance(value, list) and field == "image_size" else value
        if dest in dests:
            defaults[dest] = value
        else:
            rest[field] = value
    _subparser(parser, args.command).set_defaults(**defaults)
    args = parser.parse_args(argv)
    args.recipe_fields, args.recipe_source = rest, origin
    return args


def apply_recipe_fields(config, args: argparse.Namespace):
    """The run config with a recipe's fields that have no flag applied (checked by name).

    Raises:
        InputError: A field the command's run config does not have (naming the file).
    """
    rest = getattr(args, "recipe_fields", None)
    if not rest:
        return config
    return type(config).from_dict({**dataclasses.asdict(config), **rest},
                                  source=args.recipe_source or "recipe")
