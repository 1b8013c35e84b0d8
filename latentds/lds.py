""".lds files joined with the model registry: save a generator + latents, rebuild the generator on load.

The format package checks bytes; this module checks that the stored generator is one this build can
rebuild (a registered architecture whose parameter and buffer names and shapes match the file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from latentds.budget import check_budget, estimate_decode, largest_activation
from latentds.errors import (
    ConfigError,
    GeneratorKeysError,
    NonFiniteError,
    UnknownArchitectureError,
    UnknownModelError,
)
from latentds.format import LdsReader, spec, write_lds
from latentds.format.render import safe, shown_json
from latentds.models import (
    GeneratorContract,
    create_model,
    generator_contract,
    list_models,
)
from latentds.tensors import freeze

MAX_GENERATOR_NUMEL = 2_000_000_000  # weights + buffers a file may ask us to build (BigGAN-deep 512: ~0.1 G)

def image_spec(
    mean: Sequence[float],
    std: Sequence[float],
    shape: Sequence[int],
    output_range: Sequence[float],
) -> dict[str, Any]:
    """The manifest's `image` section: C x H x W, generator output range and the normalization to apply.

    ``shape`` and ``output_range`` come from the generator's contract (:class:`GeneratorContract`:
    ``g.contract.image_shape``, ``g.contract.output_range``); neither has a default, so no image size or range
    is assumed.
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


@dataclass(frozen=True)
class _MetaFacts:
    """What a reader needs to know of a stored architecture, learnt by building it on the meta device (no storage):
    its contract (None: not a generator), each state entry's shape and whether it is floating point, its number
    of weights and its largest activation for one image (elements; None: it cannot run on meta)."""

    contract: GeneratorContract | None
    state: dict[str, tuple[tuple[int, ...], bool]]
    weights: int
    largest: int | None


def _build_on_meta(reader: LdsReader) -> nn.Module:
    gen = reader.manifest["generator"]
    try:
        with torch.device("meta"):
            model = create_model(gen["arch"], **gen["args"])
    except UnknownModelError:
        raise UnknownArchitectureError(
            f"{reader.path}: generator architecture '{safe(gen['arch'], 60)}' is not registered in this build of latentds "
            f"(known: {', '.join(list_models())}); upgrade latentds or install the plugin that provides it"
        ) from None
    except (ConfigError, RuntimeError, TypeError, ValueError, OverflowError, MemoryError) as exc:
        raise GeneratorKeysError(f"{reader.path}: the stored generator '{safe(gen['arch'], 60)}' cannot be built from "
                                 f"its arguments ({safe(exc, 200)}); the file is corrupt or hostile") from None
    params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    if params > MAX_GENERATOR_NUMEL:
        raise GeneratorKeysError(f"{reader.path}: the stored generator would have {params:.3g} weights, more than "
                                 f"the {MAX_GENERATOR_NUMEL:.0e} this reader builds; the file is corrupt or hostile")
    return model


_FACTS: dict[tuple[str, str, tuple[str, ...]], _MetaFacts] = {}


def _meta_facts(reader: LdsReader) -> _MetaFacts:
    """The stored architecture's facts, built once per process per (architecture, arguments): opening many files
    of one generator (a DataLoader's workers, a fuzzer) builds it on meta once."""
    gen = reader.manifest["generator"]
    key = (gen["arch"], json.dumps(gen["args"], sort_keys=True), tuple(list_models()))
    if key not in _FACTS:
        model = _build_on_meta(reader)
        try:
            contract: GeneratorContract | None = generator_contract(model)
        except ConfigError:
            contract = None
        state = {k: (tuple(v.shape), v.is_floating_point()) for k, v in model.state_dict().items()}
        weights = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
        largest = None
        if contract is not None:
            largest = largest_activation(lambda: create_model(gen["arch"], **gen["args"]), contract.latent_dim)
        if len(_FACTS) >= 32:
            _FACTS.pop(next(iter(_FACTS)))
        _FACTS[key] = _MetaFacts(contract, state, weights, largest)
    return _FACTS[key]


def check_generator(reader: LdsReader) -> None:
    """Raise unless the stored generator tensors match the named architecture exactly (no allocation)."""
    facts = _meta_facts(reader)
    if facts.contract is None:
        raise GeneratorKeysError(
            f"{reader.path}: the stored generator '{safe(reader.manifest['generator']['arch'], 60)}' is not a generator "
            "(its architecture declares no GeneratorContract)"
        )
    m = reader.manifest
    problems = _file_mismatches(facts.contract, len(m["classes"]), int(m["latent_dim"]), m["image"])
    if problems:
        raise GeneratorKeysError(
            f"{reader.path}: the stored generator '{safe(m['generator']['arch'], 60)}' {shown_json(m['generator']['args'])} "
            f"cannot decode this file: {'; '.join(problems)}"
        )
    expected = {k: shape for k, (shape, _) in facts.state.items()}
    p = spec.GENERATOR_PREFIX
    stored = {name[len(p) :]: info.shape for name, info in reader.tensors.items() if name.startswith(p)}
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    wrong = sorted(k for k in set(expected) & set(stored) if expected[k] != stored[k])
    dtypes = {name[len(p) :]: info.dtype for name, info in reader.tensors.items() if name.startswith(p)}
    floating = ("F64", "F32", "F16", "BF16")
    wrong += sorted(  # weights stored as integers or bools (or integer buffers as floats) would not load
        f"{k} (dtype {dtypes[k]})" for k in set(expected) & set(dtypes)
        if (dtypes[k] in floating) != facts.state[k][1]
    )
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                shown = ", ".join(safe(k, 80) for k in keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
                parts.append(f"{label}: {shown}")
        raise GeneratorKeysError(
            f"{reader.path}: stored generator tensors do not match architecture "
            f"'{safe(reader.manifest['generator']['arch'], 60)}' with args {shown_json(reader.manifest['generator']['args'])}: "
            + "; ".join(parts)
        )


def decode_estimate_check(reader: LdsReader, batch: int = 1, device: str | torch.device = "cpu") -> None:
    """Refuse (ResourceLimitError) a file whose generator, loaded and decoding ``batch`` images per pass, would
    need more memory than the budget (:mod:`latentds.budget`); nothing is allocated to find out."""
    facts = _meta_facts(reader)
    shape = facts.contract.image_shape if facts.contract is not None else (1, 1, 1)
    est = estimate_decode(facts.weights, facts.largest, shape, batch)
    check_budget(f"{reader.path}: decoding with the stored generator '{safe(reader.manifest['generator']['arch'], 60)}'",
                 est.total, est.describe(), device)


def open_lds(path: str | os.PathLike, *, verify: bool = False, budget: bool = True) -> LdsReader:
    """Open and validate a .lds file, including its generator's architecture and tensor names.

    ``budget``: also refuse a file whose generator would not fit the memory budget when decoding one image at a
    time (:func:`decode_estimate_check`); ``info`` and ``verify``, which decode nothing, pass False.
    """
    reader = LdsReader(path, verify=verify)
    try:
        check_generator(reader)
        if budget:
            decode_estimate_check(reader, 1, "cpu")
    except BaseException:
        reader.close()
        raise
    return reader


def load_generator(
    reader: LdsReader, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, batch: int | None = None
) -> nn.Module:
    """Rebuild the stored generator in eval mode with frozen weights (batch-norm uses stored statistics).

    Before anything is allocated, the memory of loading it and decoding ``batch`` images per pass (default: the
    execution plan's decode chunk on ``device``) is checked against the budget. The returned generator refuses,
    with NonFiniteError, an output that is not finite or that the file's normalization would overflow.
    """
    check_generator(reader)
    if batch is None:
        from latentds.plan import get_plan

        batch = get_plan(device).decode_chunk
    decode_estimate_check(reader, batch, device)
    model = _build_on_meta(reader)
    state = reader.generator_state()
    # Keep floating tensors in the model's dtype unless asked otherwise (files may store fp16 weights).
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, assign=True)
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    model.register_forward_hook(_FiniteOutput(reader))
    return freeze(model)


class _FiniteOutput:
    """A forward hook: the generator's output must be finite, and stay finite through the file's normalization
    ((x - lo) / (hi - lo) then (x - mean) / std), or decoding stops with NonFiniteError naming the file."""

    def __init__(self, reader: LdsReader):
        image = reader.manifest["image"]
        lo, hi = (float(v) for v in image["generator_range"])
        stds = [float(v) for v in image["std"]]
        means = [float(v) for v in image["mean"]]
        self.where = str(reader.path)
        self.scale = 1.0 / (hi - lo) / min(stds)  # the largest factor an output value is multiplied by
        self.shift = (abs(lo) / (hi - lo) + max(abs(m) for m in means)) / min(stds)

    def __call__(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        peak = float(output.detach().abs().amax()) if output.numel() else 0.0
        if not peak * self.scale + self.shift < torch.finfo(torch.float32).max:  # also False for NaN and inf
            raise NonFiniteError(f"{self.where}: the generator's output holds NaN or infinite values (or values the "
                                 f"normalization would overflow, |x| up to {peak:.3g}); the file cannot be decoded "
                                 "(its weights are corrupt or hostile)")
