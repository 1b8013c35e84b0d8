"""Where a config comes from: presets (JSON files), config files (JSON or TOML), ``section.field=value``
overrides, layered onto the dataclasses of :mod:`latentds.encoding.config`. No torch is imported (``latentds
--help`` and reading a preset stay fast).

    cfg = load_preset("smoke")
    cfg = apply_overrides(cfg, ["condense.lr=0.01", "gan.width=32", "ipc=10"])
    cfg, preset = build_config("cpu", "run.toml", ["gan.width=32"], ipc=10)

Presets live in ``latentds/presets/<name>.json``: an optional ``description`` and any subset of the fields
(sections as nested objects); fields left out keep their dataclass default (the paper's values).
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Union

from latentds.encoding.config import SECTION_TYPES, SECTIONS, EncodeConfig
from latentds.errors import ConfigError

__all__ = [
    "PRESET_DIR",
    "apply_overrides",
    "build_config",
    "config_from_dict",
    "default_preset",
    "list_presets",
    "load_preset",
    "read_config_file",
]

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"


def list_presets() -> list[str]:
    """Names of the shipped presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def default_preset(device: str) -> str:
    """The preset a run without ``--preset`` gets: ``paper`` on a GPU, ``cpu`` elsewhere (the paper's 250,000 GAN
    iterations would take weeks on a CPU)."""
    return "paper" if str(device).startswith("cuda") else "cpu"


# --- building from dicts, with type checks ---------------------------------------------------------------
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _describe_fields() -> str:
    top = [n for n in _field_names(EncodeConfig) if n not in SECTIONS]
    parts = [", ".join(top)]
    for name, cls in SECTION_TYPES.items():
        parts.append(f"{name}.{{{', '.join(_field_names(cls))}}}")
    return "; ".join(parts)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a type hint (int, float, bool, str, X | None, tuple[float, ...]); return it."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: expected {_hint_name(hint)}, got {value!r}")
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list like [0.0, 0.999], got {value!r}")
        if args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        item_types = [args[0]] * len(value) if args and args[-1] is Ellipsis else list(args) or [Any] * len(value)
        return tuple(_coerce(v, t, where) for v, t in zip(value, item_types))
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value  # an unannotated shape: the section's own checks apply


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _section_from_dict(name: str, data: Any, base: Any) -> Any:
    cls = SECTION_TYPES[name]
    if not isinstance(data, dict):
        raise ConfigError(f"config section {name!r} must be an object of fields, got {data!r}")
    names = _field_names(cls)
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(f'{name}.{u}' for u in unknown)}; valid {name} fields: {', '.join(names)}")
    hints = _hints(cls)
    values = asdict(base)
    for key, value in data.items():
        values[key] = _coerce(value, hints[key], f"{name}.{key}")
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config section {name!r}: {exc}") from exc


def config_from_dict(data: dict[str, Any], base: EncodeConfig | None = None) -> EncodeConfig:
    """An EncodeConfig from a (possibly partial) nested dict on top of ``base`` (default: the paper's)."""
    base = base or EncodeConfig()
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a JSON object, got {type(data).__name__}")
    valid = _field_names(EncodeConfig)
    unknown = sorted(set(data) - set(valid) - {"description"})
    if unknown:
        raise ConfigError(f"unknown config field(s) {unknown}; valid fields: {_describe_fields()}")
    hints = _hints(EncodeConfig)
    kwargs: dict[str, Any] = {}
    for name in valid:
        if name in SECTIONS:
            kwargs[name] = _section_from_dict(name, data.get(name, {}), getattr(base, name))
        elif name in data:
            kwargs[name] = _coerce(data[name], hints[name], name)
        else:
            kwargs[name] = getattr(base, name)
    cfg = EncodeConfig(**kwargs)
    cfg.check()
    return cfg


# --- presets and overrides -------------------------------------------------------------------------------
def load_preset(name: str) -> EncodeConfig:
    """The preset ``name`` (``latentds/presets/<name>.json``) on top of the paper's defaults."""
    path = PRESET_DIR / f"{name}.json"
    if not isinstance(name, str) or not name or "/" in name or not path.is_file():  # a config file's "preset": 5
        raise ConfigError(f"unknown preset {name!r}; available presets: {', '.join(list_presets())}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    return config_from_dict(data)


def _parse_value(text: str) -> Any:
    """JSON if it parses (numbers, true/false, null, lists), else the raw string; 'none' means null."""
    if text.strip().lower() in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_overrides(cfg: EncodeConfig, overrides: list[str] | tuple[str, ...]) -> EncodeConfig:
    """A new config with ``key=value`` overrides applied (``ipc=10``, ``condense.lr=0.01``, ``gan.betas=[0,0.9]``).

    Values parse as JSON where they can (so ``gan.diffaug=translation`` stays a string). Unknown keys or
    values of the wrong type raise ConfigError naming the valid fields.
    """
    data = asdict(cfg)
    hints = _hints(EncodeConfig)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value (e.g. condense.lr=0.01)")
        section, dot, name = key.partition(".")
        value = _parse_value(text)
        if dot:
            if section not in SECTIONS:
                raise ConfigError(f"unknown config section {section!r} in {item!r}; sections: {', '.join(SECTIONS)}")
            cls = SECTION_TYPES[section]
            if name not in _field_names(cls):
                raise ConfigError(
                    f"unknown field {key!r} in {item!r}; valid {section} fields: {', '.join(_field_names(cls))}"
                )
            if _hints(cls)[name] is str and not isinstance(value, str):
                value = text  # e.g. gan.arch=123 is still a name
            data[section][name] = value
        else:
            if key in SECTIONS or key not in hints:
                raise ConfigError(f"unknown config field {key!r} in {item!r}; valid fields: {_describe_fields()}")
            if hints[key] is str and not isinstance(value, str):
                value = text
            data[key] = value
    return config_from_dict(data)


# --- one config from every place it can come from ----------------------------------------------------------
def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A config file: JSON or TOML (by suffix), holding any subset of the fields and optionally ``preset``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:  # JSONDecodeError and TOMLDecodeError
        raise ConfigError(f"{path}: not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'} ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file holds an object of fields, found {type(data).__name__}")
    return data


def build_config(
    preset: str | None = None,
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    **fields: Any,
) -> tuple[EncodeConfig, str]:
    """The config a run uses and the preset it started from, each source on top of the one before:

    the preset (default: ``config``'s ``"preset"``, else by device: "paper" on a GPU, "cpu" otherwise), then
    ``config`` (a JSON/TOML file or a dict, nested by section), then ``overrides`` (``"gan.width=32"``
    strings or a ``{"gan.width": 32}`` mapping), then ``fields`` (``ipc=10``, ``gan={"iterations": 100}``).
    """
    data = dict(read_config_file(config) if isinstance(config, (str, os.PathLike)) else (config or {}))
    from_file = data.pop("preset", None)
    items = list(overrides.items()) if isinstance(overrides, Mapping) else None
    texts = [f"{k}={json.dumps(v)}" for k, v in items] if items is not None else list(overrides or [])
    if preset is None:
        preset = from_file
    if preset is None:
        from latentds.devices import (
            resolve_device,  # torch: only when no preset names the device's defaults
        )

        named = [t.partition("=")[2] for t in texts if t.partition("=")[0].strip() == "device"]
        device = fields.get("device") or (_parse_value(named[-1]) if named else None) or data.get("device") or "auto"
        preset = default_preset(str(resolve_device(device)))
    cfg = config_from_dict(data, base=load_preset(preset)) if data else load_preset(preset)
    for name, value in fields.items():
        if name in SECTIONS and isinstance(value, Mapping):
            texts += [f"{name}.{k}={json.dumps(v)}" for k, v in value.items()]
        else:
            texts.append(f"{name}={json.dumps(value)}")
    return (apply_overrides(cfg, texts) if texts else cfg), preset
