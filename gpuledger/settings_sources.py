"""Where settings come from, for ``gpuledger.settings``: the one YAML file, the older environment names, and error messages
that name each bad key's path and its source (a variable or the file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

CONFIG_ENV = "GPULEDGER_CONFIG"  # the settings file when no --config is given
DEFAULT_FILE = Path("gpuledger.yaml")  # read when present and neither --config nor GPULEDGER_CONFIG is given
# Older environment names, still read (weaker than GPULEDGER_<SECTION>__<FIELD>): prefix -> section.
# GPULEDGER_COLLECTOR_<FIELD>: DaemonSets written for earlier releases; GPULEDGER_METER_<FIELD>: vLLM pods set up from the README.
ENV_ALIASES = {"GPULEDGER_COLLECTOR_": "collector", "GPULEDGER_METER_": "meter"}


class SettingsError(ValueError):
    """Settings that cannot be used: each problem with its key path and where the value came from."""


def settings_file(explicit: Path | None = None) -> Path | None:
    """The one YAML file: ``explicit`` (``--config``), else ``GPULEDGER_CONFIG``, else ``./gpuledger.yaml`` when present."""
    if explicit is not None:
        return explicit
    if CONFIG_ENV in os.environ:
        return Path(os.environ[CONFIG_ENV])
    return DEFAULT_FILE if DEFAULT_FILE.is_file() else None


def read_yaml(path: Path) -> dict[str, Any]:
    """The file's top-level mapping of sections; a missing file or one that is not such a mapping is a SettingsError."""
    if not path.is_file():
        raise SettingsError(f"settings file {path} does not exist or is not a file (given by --config or {CONFIG_ENV})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(
            f"{path}: expected a mapping of settings (log_level:, kafka:, worker:, gateway:, ...) at the top, found a {type(data).__name__}"
        )
    return data


class Mapping(PydanticBaseSettingsSource):
    """Values already read (the YAML file's), handed to pydantic-settings as one source."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self.data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self.data


class EnvAliases(Mapping):
    """``GPULEDGER_COLLECTOR_<FIELD>`` and ``GPULEDGER_METER_<FIELD>`` (see ``ENV_ALIASES``) as their sections' fields."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        found: dict[str, Any] = {}
        for prefix, section in ENV_ALIASES.items():
            fields = settings_cls.model_fields[section].annotation.model_fields  # type: ignore[union-attr]
            for name, value in os.environ.items():
                field = name[len(prefix) :].lower() if name.startswith(prefix) else ""
                if field in fields:
                    found.setdefault(section, {})[field] = value
        super().__init__(settings_cls, found)


def _origin(loc: tuple[str | int, ...], path: Path | None, data: dict[str, Any]) -> str:
    """Where the value at ``loc`` came from: an environment variable, the YAML file, or a default."""
    for end in range(len(loc), 0, -1):
        parts = [str(p).upper() for p in loc[:end]]
        names = [f"GPULEDGER_{'__'.join(parts)}"]
        if end == 2 and (alias := next((p for p, s in ENV_ALIASES.items() if s == loc[0]), None)):
            names.append(f"{alias}{parts[1]}")
        if env := next((n for n in names if n in os.environ), None):
            return f"environment variable {env}"
    node: Any = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return "defaults" if node is data else f"in {path}"
    return f"in {path}"


def describe(exc: ValidationError, path: Path | None, data: dict[str, Any]) -> str:
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        message = (
            "unknown key, not a setting (the README's configuration reference lists them all)"
            if error["type"] == "extra_forbidden"
            else error["msg"]
        )
        problems.append(f"{key}: {message} ({_origin(loc, path, data)})")
    return "invalid settings:\n  " + "\n  ".join(problems)
