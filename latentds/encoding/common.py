"""Small helpers shared by the encode stages: config dataclasses from dicts, config diffs, seeded models."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import torch
from torch import nn

from latentds.errors import ConfigError
from latentds.models import create_model


def config_diff(saved: dict[str, Any], current: dict[str, Any], ignore: Sequence[str] = ()) -> list[str]:
    """Names of the fields whose values differ between two config dicts (JSON-normalized), minus ``ignore``."""
    a, b = json.loads(json.dumps(saved)), json.loads(json.dumps(current))
    return sorted(k for k in set(a) | set(b) if k not in ignore and a.get(k, "<missing>") != b.get(k, "<missing>"))


def describe_diff(saved: dict[str, Any], current: dict[str, Any], names: list[str], sep: str = ", ") -> str:
    """`name: old -> new` for each differing field, for error messages."""
    return sep.join(f"{n}: {saved.get(n, '<missing>')!r} -> {current.get(n, '<missing>')!r}" for n in names)


def check_int(cfg: Any, name: str, minimum: int) -> None:
    """Raise ConfigError unless ``cfg.name`` is an int (not a bool) >= minimum."""
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{type(cfg).__name__}.{name} must be an integer >= {minimum}, got {value!r}")


def from_dict(cls: Any, d: dict[str, Any], what: str) -> Any:
    """Build dataclass ``cls`` from ``d``; unknown fields raise ConfigError naming the valid ones."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"{what}: unknown field(s) {unknown}; valid fields: {', '.join(sorted(names))}")
    return cls(**d)


def seeded_model(seed: int, arch: str, **kwargs: Any) -> nn.Module:
    """create_model with initialization drawn from ``seed``; the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(arch, **kwargs)
