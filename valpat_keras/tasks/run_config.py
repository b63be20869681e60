"""Run configs: one dataclass per command, loadable from a JSON or YAML recipe file.

Every run function takes its data, its output folder and one `RunConfig` subclass
(`PretrainConfig`, `ReIDRunConfig`, ...). A recipe is the same fields in a file::

    # recipes/market_bot.yaml
    epochs: 120
    image_size: [256, 128]

    config = ReIDRunConfig.from_file("recipes/market_bot.yaml")
    train_reid(dataset, "runs/bot", config)

Old keyword calls (``train_reid(dataset, out, epochs=2)``) still work for one release:
`resolve_run_config` turns the keywords into a config and warns.
"""

from __future__ import annotations

import dataclasses
import json
import typing
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from valpat_keras.errors import InputError

if TYPE_CHECKING:
    from typing import Self  # Python >= 3.11; annotations are strings here

C = TypeVar("C", bound="RunConfig")


@dataclasses.dataclass
class RunConfig:
    """Base of the run configs: dict and file round-trips with checked field names."""

    @classmethod
    def field_names(cls) -> list[str]:
        """The config's fields, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "config") -> Self:
        """Builds a config from a mapping; lists become tuples where the field is a tuple.

        Args:
            values: Field values; missing fields keep their defaults.
            source: Where the values come from, for the error message (a file name).

        Raises:
            InputError: For a key that is not a field (naming it and the valid ones).
        """
        names = cls.field_names()
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise InputError(f"{source}: unknown {cls.__name__} field(s) {unknown}; expected "
                             f"some of {names}")
        hints = typing.get_type_hints(cls)
        converted = {}
        for key, value in values.items():
            hint = str(hints.get(key, ""))
            if isinstance(value, list) and "tuple" in hint:
                value = tuple(value)
            converted[key] = value
        return cls(**converted)

    @classmethod
    def from_file(cls, path: str | Path) -> Self:
        """Reads a config from a ``.json``, ``.yaml`` or ``.yml`` file.

        Raises:
            InputError: If the file is missing, does not parse, is not a mapping or names an
                unknown field.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise InputError(f"{path}: cannot read the run config ({err.strerror})") from None
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                values = yaml.safe_load(text)
            else:
                values = json.loads(text)
        except (json.JSONDecodeError, yaml.YAMLError) as err:
            raise InputError(f"{path}: not a valid {path.suffix or 'JSON'} run config "
                             f"({err})") from None
        if not isinstance(values, Mapping):
            raise InputError(f"{path}: expected a mapping of {cls.__name__} fields, got "
                             f"{type(values).__name__}")
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-ready values (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    def save(self, path: str | Path) -> Path:
        """Writes the config as JSON (readable by `from_file`)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (unknown names raise `InputError`)."""
        return type(self).from_dict({**dataclasses.asdict(self), **changes})


def resolve_run_config(config_cls: type[C], config: C | None, legacy: Mapping[str, Any],
                       caller: str, renamed: Mapping[str, str] | None = None) -> C:
    """The run config of a call, accepting the old keyword arguments for one release.

    Args:
        config_cls: The run function's config class.
        config: The config passed (or ``None`` for the defaults).
        legacy: Keyword arguments of the old signature; they override ``config``'s fields
            and trigger a `DeprecationWarning`.
        caller: The run function's name, for the warning.
        renamed: Old keyword -> field name, where a keyword was renamed.

    Returns:
        The config to run with.
    """
    config = config if config is not None else config_cls()
    if not isinstance(config, config_cls):
        raise TypeError(f"{caller}: expected a {config_cls.__name__}, got "
                        f"{type(config).__name__}")
    if not legacy:
        return config
    renamed = dict(renamed or {})
    changes = {renamed.get(key, key): value for key, value in legacy.items()}
    warnings.warn(f"{caller}({', '.join(f'{k}=' for k in legacy)}...) is deprecated and will "
                  f"be removed in the next release; pass {config_cls.__name__}(...) instead",
                  DeprecationWarning, stacklevel=3)
    return config.replace(**changes)


def legacy_string_keyword(value: str, legacy: Mapping[str, Any],
                          encoder_configs: Iterable[str]) -> str:
    """The old keyword a string passed where a transfer run now takes its run config meant.

    The old transfer signatures were ``train_x(dataset, out_dir, init="random",
    config="tiny", ...)``: a string there is either ``config=`` (an encoder configuration
    name) or the third positional argument, ``init`` (``"random"``, a run folder, a preset).

    Args:
        value: The string passed as ``config``.
        legacy: The other old keyword arguments.
        encoder_configs: The encoder configuration names.

    Returns:
        ``"config"`` or ``"init"``.
    """
    is_config = "init" in legacy or (value in set(encoder_configs)
                                     and not Path(value).exists())
    return "config" if is_config else "init"
