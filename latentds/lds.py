""".lds files joined with the model registry: save a generator + latents, rebuild the generator on load.

The format package checks bytes; this module checks that the stored generator is one this build can
rebuild (a registered architecture whose parameter and buffer names and shapes match the file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentds.common import freeze
from latentds.errors import (
    ConfigError,
    GeneratorKeysError,
    UnknownArchitectureError,
    UnknownModelError,
)
from latentds.format import LdsReader, spec, write_lds
from latentds.models import (
    GeneratorContract,
    create_model,
    generator_contract,
    list_models,
)

MAX_GENERATOR_NUMEL = 2_000_000_000  # weights + buffers a file may ask us to build (BigGAN-deep 512: ~0.1 G)

def image_spec(
    mean: Sequence[float],
    std: Sequence[float],
    shape: Sequence[int] = (3, 32, 32),
    output_range: Sequence[float] = (-1.0, 1.0),
) -> dict[str, Any]:
    """The manifest's `image` section: C x H x W, generator output range and the normalization to apply.

    ``shape`` and ``output_range`` come from the generator's contract (:class:`GeneratorContract`).
    """
    c, h, w = (int(v) for v in shape)
    lo, hi = (float(v) for v in output_range)
    return {
        "channels": c,
        "height": h,
        "width": w,
        "generator_range": [lo, hi],
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
    }


def save_lds(
    path: str | os.PathLike,
    generator: nn.Module,
    latents: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    image: Mapping[str, Any],
    provenance: Mapping[str, Any] | None = None,
    latent_dtype: torch.dtype | None = None,
    generator_dtype: torch.dtype | None = None,
) -> Path:
    """Write a generator built by :func:`create_model` together with its latents and labels."""
    arch, args = getattr(generator, "arch_name", None), getattr(generator, "arch_args", None)
    if arch is None or args is None:
        raise TypeError("the generator must come from latentds.models.create_model (it has no arch_name/arch_args)")
    problems = _file_mismatches(generator_contract(generator), len(classes), int(latents.shape[-1]), image)
    if problems:
        raise ConfigError(f"cannot write {path}: the generator {arch!r} does not fit the data: {'; '.join(problems)}")
    state = {k: v.detach().cpu() for k, v in generator.state_dict().items()}
    return write_lds(
        path,
        latents=latents.detach().cpu(),
        labels=labels.detach().cpu(),
        classes=list(classes),
        generator_arch=arch,
        generator_args=args,
        generator_state=state,
        image=image,
        provenance=provenance,
        latent_dtype=latent_dtype,
        generator_dtype=generator_dtype,
        generator_info={"param_count": sum(p.numel() for p in generator.parameters())},
    )


def _file_mismatches(
    contract: GeneratorContract, num_classes: int, latent_dim: int, image: Mapping[str, Any]
) -> list[str]:
    """How a generator's contract disagrees with a file's classes, latents and image section (empty: it fits)."""
    shape = (image.get("channels"), image.get("height"), image.get("width"))
    return contract.mismatches("the file", num_classes=num_classes, latent_dim=latent_dim, image_shape=shape,
                               output_range=image.get("generator_range", ()))


def _build_on_meta(reader: LdsReader) -> nn.Module:
    gen = reader.manifest["generator"]
    try:
        with torch.device("meta"):
            model = create_model(gen["arch"], **gen["args"])
    except UnknownModelError:
        raise UnknownArchitectureError(
            f"{reader.path}: generator architecture {gen['arch']!r} is not registered in this build of latentds "
            f"(known: {', '.join(list_models())}); upgrade latentds or install the plugin that provides it"
        ) from None
    except (ConfigError, RuntimeError, TypeError, ValueError, OverflowError, MemoryError) as exc:
        raise GeneratorKeysError(f"{reader.path}: the stored generator {gen['arch']!r} cannot be built from its "
                                 f"arguments ({str(exc)[:200]}); the file is corrupt or hostile") from None
    params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    if params > MAX_GENERATOR_NUMEL:
        raise GeneratorKeysError(f"{reader.path}: the stored generator would have {params:.3g} weights, more than "
                                 f"the {MAX_GENERATOR_NUMEL:.0e} this reader builds; the file is corrupt or hostile")
    return model


def check_generator(reader: LdsReader, model: nn.Module | None = None) -> None:
    """Raise unless the stored generator tensors match the named architecture exactly (no allocation).

    ``model``: the architecture already built on the meta device, if the caller has it.
    """
    model = _build_on_meta(reader) if model is None else model
    try:
        contract = generator_contract(model)
    except ConfigError:
        raise GeneratorKeysError(
            f"{reader.path}: the stored generator {reader.manifest['generator']['arch']!r} is not a generator "
            "(its architecture declares no GeneratorContract)"
        ) from None
    m = reader.manifest
    problems = _file_mismatches(contract, len(m["classes"]), int(m["latent_dim"]), m["image"])
    if problems:
        raise GeneratorKeysError(
            f"{reader.path}: the stored generator {m['generator']['arch']!r} {json.dumps(m['generator']['args'])} "
            f"cannot decode this file: {'; '.join(problems)}"
        )
    state = model.state_dict()
    expected = {k: tuple(v.shape) for k, v in state.items()}
    p = spec.GENERATOR_PREFIX
    stored = {name[len(p) :]: info.shape for name, info in reader.tensors.items() if name.startswith(p)}
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    wrong = sorted(k for k in set(expected) & set(stored) if expected[k] != stored[k])
    dtypes = {name[len(p) :]: info.dtype for name, info in reader.tensors.items() if name.startswith(p)}
    floating = ("F64", "F32", "F16", "BF16")
    wrong += sorted(  # weights stored as integers or bools (or integer buffers as floats) would not load
        f"{k} (dtype {dtypes[k]})" for k in set(expected) & set(dtypes)
        if (dtypes[k] in floating) != state[k].is_floating_point()
    )
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
                parts.append(f"{label}: {shown}")
        raise GeneratorKeysError(
            f"{reader.path}: stored generator tensors do not match architecture "
            f"{reader.manifest['generator']['arch']!r} with args {reader.manifest['generator']['args']}: "
            + "; ".join(parts)
        )


def open_lds(path: str | os.PathLike, *, verify: bool = False) -> LdsReader:
    """Open and validate a .lds file, including its generator's architecture and tensor names."""
    reader = LdsReader(path, verify=verify)
    try:
        check_generator(reader)
    except BaseException:
        reader.close()
        raise
    return reader


def load_generator(
    reader: LdsReader, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> nn.Module:
    """Rebuild the stored generator in eval mode with frozen weights (batch-norm uses stored statistics)."""
    model = _build_on_meta(reader)
    check_generator(reader, model)
    state = reader.generator_state()
    # Keep floating tensors in the model's dtype unless asked otherwise (files may store fp16 weights).
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, assign=True)
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    return freeze(model)
