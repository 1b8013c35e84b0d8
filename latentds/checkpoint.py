"""Pickle-free model checkpoints: a safetensors file whose metadata names the architecture and its arguments.

    save_model("g.safetensors", generator, extra={"config": json.dumps(cfg)})
    model = load_model("g.safetensors")         # rebuilt with create_model(arch, **args), eval mode

Metadata keys: ``latentds.arch`` (registered name), ``latentds.arch_args`` (JSON object), and any
``extra`` string entries the caller adds (training config, metrics).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from latentds.errors import (
    ConfigError,
    LdsNotFoundError,
    ManifestError,
    UnknownModelError,
)
from latentds.models import create_model, list_models

__all__ = ["META_ARCH", "META_ARGS", "load_model", "read_model_metadata", "save_model"]

META_ARCH = "latentds.arch"
META_ARGS = "latentds.arch_args"


def save_model(path: str | os.PathLike, model: nn.Module, extra: Mapping[str, str] | None = None) -> Path:
    """Save a registry-built model (weights as safetensors, architecture in metadata), atomically."""
    from latentds.format.writer import (
        atomic_write,  # the format layer owns atomic writes
    )

    arch, args = getattr(model, "arch_name", None), getattr(model, "arch_args", None)
    if arch is None or args is None:
        raise TypeError("save_model needs a model built by latentds.models.create_model")
    metadata = {META_ARCH: arch, META_ARGS: json.dumps(args, sort_keys=True), **dict(extra or {})}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, [save(state, metadata=metadata)])  # bytes in memory: no second staging file


def read_model_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a checkpoint written by save_model (cheap: header only)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise LdsNotFoundError(f"{path}: no such file")
    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise ManifestError(f"{path}: not a readable safetensors file ({exc})") from None


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by save_model, in eval mode. A ``.lds`` file yields its generator."""
    path = Path(path)
    if path.name.endswith((".lds", ".lds.zst")):
        from latentds.lds import load_generator, open_lds

        with open_lds(path) as reader:
            return load_generator(reader, device)
    meta = read_model_metadata(path)
    if META_ARCH not in meta or META_ARGS not in meta:
        raise ManifestError(
            f"{path}: a safetensors file without '{META_ARCH}'/'{META_ARGS}' metadata; "
            "save it with latentds.models.save_model (a bare state dict does not say which architecture it is)"
        )
    try:
        with torch.device("meta"):
            model = create_model(meta[META_ARCH], **json.loads(meta[META_ARGS]))
    except UnknownModelError:
        raise ConfigError(
            f"{path}: architecture {meta[META_ARCH]!r} is not registered (known: {', '.join(list_models())})"
        ) from None
    state = load_file(str(path))
    expected = set(model.state_dict())
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ManifestError(f"{path}: weights do not match {meta[META_ARCH]!r}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict(state, assign=True)
    return model.to(device).eval()
