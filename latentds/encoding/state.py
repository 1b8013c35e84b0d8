"""Pickle-free training checkpoints: tensors in a safetensors file, everything else as JSON in its metadata.

A training loop gathers its state into one flat ``{name: tensor}`` dict plus one JSON-serializable ``meta``
dict and writes both atomically; on restart it reads them back and restores each piece::

    tensors = {**module_tensors(model, "model."), "rng": rng_state(gen)}
    opt_tensors, opt_meta = optimizer_to_tensors(opt, prefix="opt.")
    save_state(path, {**tensors, **opt_tensors}, {"epoch": epoch, "opt": opt_meta, "config": asdict(cfg)})

    tensors, meta = load_state(path)
    load_module_tensors(model, tensors, "model.")
    optimizer_from_tensors(opt, tensors, meta["opt"], prefix="opt.")
    set_rng_state(gen, tensors["rng"])

No pickle and no ``torch.save``: loading a checkpoint never runs code from the file. Restoring the model,
the optimizer (``torch.optim`` state, e.g. Adam's moments and step counts) and the random generators makes a
resumed run continue bit-identically to an uninterrupted one on the same device and software.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from latentds.errors import LatentdsError

__all__ = [
    "CheckpointError",
    "TrainingInterrupted",
    "load_module_tensors",
    "load_state",
    "module_tensors",
    "optimizer_from_tensors",
    "optimizer_to_tensors",
    "rng_state",
    "save_state",
    "set_rng_state",
]

META_KEY = "latentds.state"  # the JSON meta, as one safetensors metadata string
FORMAT_KEY = "latentds.state_format"
FORMAT = "1"


class CheckpointError(LatentdsError):
    """A training checkpoint is unreadable, or does not fit the run that tries to resume from it."""


class TrainingInterrupted(Exception):
    """Raised by training loops when asked to stop early (``stop_after``); the last checkpoint stays on disk."""


# --- the file -------------------------------------------------------------------------------------------
def save_state(path: str | os.PathLike, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Path:
    """Write ``tensors`` (any device; saved as CPU copies) and JSON ``meta`` to ``path`` atomically."""
    from latentds.format.writer import (
        atomic_write,  # the format layer owns atomic writes
    )

    try:
        meta_json = json.dumps(meta, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"checkpoint meta must be JSON-serializable: {exc}") from exc
    # Copies: safetensors refuses tensors that share storage (views, tied weights).
    cpu = {name: t.detach().to("cpu", copy=True).contiguous() for name, t in tensors.items()}
    data = st_save(cpu, metadata={META_KEY: meta_json, FORMAT_KEY: FORMAT})
    return atomic_write(path, [data])


def load_state(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_state`: (tensors on the CPU, meta)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc})") from exc
    what = "delete it to start the run over"
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc}); {what}") from None
    metadata = header.get("__metadata__") or {}
    if metadata.get(FORMAT_KEY) != FORMAT or META_KEY not in metadata:
        raise CheckpointError(
            f"{path}: not a latentds training checkpoint (metadata {FORMAT_KEY}={metadata.get(FORMAT_KEY)!r}, "
            f"expected {FORMAT!r}); {what}"
        )
    try:
        meta = json.loads(metadata[META_KEY])
    except ValueError as exc:
        raise CheckpointError(f"{path}: checkpoint meta is not valid JSON ({exc}); {what}") from None
    return tensors, meta


# --- modules --------------------------------------------------------------------------------------------
def module_tensors(module: nn.Module, prefix: str) -> dict[str, Tensor]:
    """``module.state_dict()`` with every key prefixed (parameters and buffers, e.g. spectral-norm vectors)."""
    return {prefix + k: v for k, v in module.state_dict().items()}


def load_module_tensors(module: nn.Module, tensors: Mapping[str, Tensor], prefix: str) -> None:
    """Load the entries of ``tensors`` under ``prefix`` into ``module`` (strict: keys must match exactly)."""
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    expected = set(module.state_dict())
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise CheckpointError(
            f"checkpoint entries under {prefix!r} do not match the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}; the checkpoint belongs to a different architecture"
        )
    module.load_state_dict(state)


# --- optimizers -----------------------------------------------------------------------------------------
def optimizer_to_tensors(opt: torch.optim.Optimizer, prefix: str = "opt.") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Flatten ``opt.state_dict()``: per-parameter tensors as ``<prefix><param_idx>.<key>``, the rest as meta.

    Scalars (plain numbers, None, bools) of the per-parameter state and the ``param_groups`` (learning rates,
    betas, ...) go into the returned meta, which must be stored with the tensors.
    """
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = _json_value(value, f"optimizer state {idx}.{key}")
    groups = []
    for i, group in enumerate(sd["param_groups"]):
        out: dict[str, Any] = {}
        for key, value in group.items():
            if isinstance(value, Tensor):  # e.g. a tensor learning rate
                tensors[f"{prefix}group{i}.{key}"] = value
                out[key] = {"__tensor__": f"{prefix}group{i}.{key}"}
            else:
                out[key] = _json_value(value, f"optimizer param_group {i}.{key}")
        groups.append(out)
    return tensors, {"type": type(opt).__name__, "scalars": scalars, "param_groups": groups}


def optimizer_from_tensors(
    opt: torch.optim.Optimizer, tensors: Mapping[str, Tensor], meta: Mapping[str, Any], prefix: str = "opt."
) -> None:
    """Restore an optimizer saved by :func:`optimizer_to_tensors` (same type, same parameters in order)."""
    if meta.get("type") != type(opt).__name__:
        raise CheckpointError(
            f"checkpoint holds a {meta.get('type')} optimizer state, cannot load it into {type(opt).__name__}"
        )
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith(prefix) or name[len(prefix) :].startswith("group"):
            continue
        idx, _, key = name[len(prefix) :].partition(".")
        state.setdefault(int(idx), {})[key] = value
    for idx, entry in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(entry)
    groups = []
    for group in meta["param_groups"]:
        restored: dict[str, Any] = {}
        for key, value in group.items():
            if isinstance(value, dict) and "__tensor__" in value:
                value = tensors[value["__tensor__"]]
            elif isinstance(value, list) and key != "params":
                value = tuple(value)  # JSON turned tuples (betas) into lists
            restored[key] = value
        groups.append(restored)
    if len(groups) != len(opt.param_groups) or any(
        len(g["params"]) != len(mine["params"]) for g, mine in zip(groups, opt.param_groups)
    ):
        raise CheckpointError("checkpoint optimizer state does not match the optimizer's parameter groups")
    opt.load_state_dict({"state": dict(sorted(state.items())), "param_groups": groups})


def _json_value(value: Any, what: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v, what) for v in value]
    raise TypeError(f"{what}: cannot checkpoint a value of type {type(value).__name__}")


# --- random generators ----------------------------------------------------------------------------------
def rng_state(generator: torch.Generator) -> Tensor:
    """The state of ``generator`` (CPU or CUDA) as a uint8 CPU tensor."""
    return generator.get_state().to("cpu")


def set_rng_state(generator: torch.Generator, state: Tensor) -> None:
    """Restore a state returned by :func:`rng_state` (into a generator of the same device type)."""
    generator.set_state(state.to("cpu", torch.uint8))
