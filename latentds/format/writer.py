"""Write a .lds file: tensors + manifest in a safetensors container, atomically."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from latentds.errors import LatentdsError
from latentds.format import spec
from latentds.format.manifest import validate_manifest
from latentds.format.staging import atomic_write

_FLOAT_DTYPES = {torch.float32, torch.float16, torch.bfloat16}


def _as_bytes(t: torch.Tensor) -> memoryview:
    """Little-endian C-order bytes of a tensor, without a copy when already contiguous on the CPU."""
    t = t.detach().to("cpu").contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return memoryview(t.reshape(-1).numpy()).cast("B")  # 1-D: memoryview cannot cast zero-size N-D views


def quantize(latents: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """(N, D) floats -> int8 codes (N, D) and one scale per dimension: column j is about codes[:, j] * scale[j].

    The scale is the column's largest magnitude over 127 (at least 2**-24, so never 0), held in float32: the
    manifest's JSON numbers store it exactly, and quantizing decoded latents again gives the same codes.
    """
    z = latents.detach().float()
    peak = z.abs().amax(dim=0) if z.shape[0] else torch.zeros(z.shape[1])
    scale = (peak / 127).clamp(min=2.0**-24)  # (D,) float32
    codes = torch.round(z / scale).clamp(-127, 127).to(torch.int8)
    return codes, [float(v) for v in scale]


def _label_dtype(num_classes: int) -> torch.dtype:
    if num_classes <= 256:
        return torch.uint8
    if num_classes <= 2**15:
        return torch.int16
    return torch.int32


def write_lds(
    path: str | os.PathLike,
    *,
    latents: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    generator_arch: str,
    generator_args: Mapping[str, Any],
    generator_state: Mapping[str, torch.Tensor],
    image: Mapping[str, Any],
    provenance: Mapping[str, Any] | None = None,
    latent_dtype: torch.dtype | None = None,
    generator_dtype: torch.dtype | None = None,
    chunk_rows: int = spec.DEFAULT_CHUNK_ROWS,
    generator_info: Mapping[str, Any] | None = None,
) -> Path:
    """Write a .lds file (see spec/FORMAT.md) and return its path.

    latents: (N, D) float; labels: (N,) integers in [0, len(classes)); image: channels, height, width, mean,
    std and optionally generator_range (default [-1, 1]). ``latent_dtype`` (float32/float16/bfloat16) casts
    the latents, ``torch.int8`` stores them as int8 codes with one scale per dimension in the manifest
    (``quantize``: encoding "int8", format 1.1); ``generator_dtype`` casts the generator's floating-point tensors.
    """
    if sys.byteorder != "little":  # pragma: no cover - every supported torch platform is little-endian
        raise RuntimeError("latentds writes little-endian files and needs a little-endian host")
    where = str(path)
    latents, encoding = _stored_latents(latents, latent_dtype, where)
    labels = _stored_labels(labels, latents.shape[0], len(classes), where)
    tensors: dict[str, torch.Tensor] = {spec.LATENTS: latents, spec.LABELS: labels}
    for key in sorted(generator_state):
        value = generator_state[key].detach()
        if generator_dtype is not None and value.dtype in _FLOAT_DTYPES | {torch.float64}:
            value = value.to(generator_dtype)
        tensors[spec.GENERATOR_PREFIX + key] = value
    buffers = {name: _as_bytes(t) for name, t in tensors.items()}
    manifest: dict[str, Any] = {
        "format": spec.FORMAT_NAME,
        "format_version": spec.FORMAT_VERSION_INT8 if encoding["encoding"] == spec.INT8 else spec.FORMAT_VERSION,
        "num_samples": int(latents.shape[0]),
        "latent_dim": int(latents.shape[1]),
        "num_classes": len(classes),
        "classes": list(classes),
        "latents": encoding,
        "image": {"generator_range": [-1.0, 1.0], **dict(image)},
        "generator": {
            "arch": generator_arch,
            "args": dict(generator_args),
            "conditioning": "class_index",
            "truncation": None,
            "stored_numel": sum(t.numel() for name, t in tensors.items()
                                if name.startswith(spec.GENERATOR_PREFIX) and t.is_floating_point()),
            **dict(generator_info or {}),
        },
        "provenance": _provenance(provenance),
        "integrity": _integrity(tensors, buffers, chunk_rows),
    }
    validate_manifest(manifest, where)
    text = json.dumps(manifest, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode("utf-8")) > spec.MAX_MANIFEST_BYTES:
        raise LatentdsError(f"{where}: the manifest would exceed {spec.MAX_MANIFEST_BYTES} bytes")
    return atomic_write(path, _header(text, tensors, buffers, where))


def _stored_latents(latents: torch.Tensor, dtype: torch.dtype | None, where: str) -> tuple[torch.Tensor, dict[str, Any]]:
    """The latents as stored (cast, or quantized to int8) and the manifest's ``latents`` section."""
    if latents.dim() != 2:
        raise LatentdsError(f"{where}: latents must be 2-D (N, D), got shape {list(latents.shape)}")
    int8 = dtype == torch.int8
    if dtype is not None and not int8:
        latents = latents.to(dtype)
    if latents.dtype not in _FLOAT_DTYPES:
        raise LatentdsError(f"{where}: latents must be float32, float16 or bfloat16 (stored as those or as int8), "
                            f"got {latents.dtype}")
    if not torch.isfinite(latents.float()).all():
        raise LatentdsError(f"{where}: latents contain NaN or infinite values")
    if not int8:
        return latents, {"encoding": "raw"}
    codes, scale = quantize(latents)
    return codes, {"encoding": spec.INT8, "scale": scale}


def _stored_labels(labels: torch.Tensor, n: int, k: int, where: str) -> torch.Tensor:
    """(n,) labels in [0, k), in the smallest dtype that holds them."""
    if labels.shape != (n,):
        raise LatentdsError(f"{where}: labels must have shape [{n}] to match the latents, got {list(labels.shape)}")
    labels = labels.to(torch.int64)
    if n and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise LatentdsError(f"{where}: labels must lie in [0, {k}), found [{int(labels.min())}, {int(labels.max())}]")
    return labels.to(_label_dtype(k))


def _integrity(tensors: Mapping[str, torch.Tensor], buffers: Mapping[str, memoryview], chunk_rows: int) -> dict[str, Any]:
    """sha256 of every tensor's bytes and of each ``chunk_rows`` rows of latents."""
    latents = tensors[spec.LATENTS]
    n, row_bytes = latents.shape[0], latents.shape[1] * latents.element_size()
    data = buffers[spec.LATENTS]
    return {
        "algorithm": "sha256",
        "tensors": {
            name: {"dtype": spec.TORCH_TO_ST[t.dtype], "shape": list(t.shape), "sha256": hashlib.sha256(buffers[name]).hexdigest()}
            for name, t in tensors.items()
        },
        "latents_chunk_rows": chunk_rows,
        "latents_chunks": [hashlib.sha256(data[lo * row_bytes: min(lo + chunk_rows, n) * row_bytes]).hexdigest()
                           for lo in range(0, n, chunk_rows)],
    }


def _provenance(provenance: Mapping[str, Any] | None) -> dict[str, Any]:
    prov = dict(provenance or {})
    prov.setdefault("tool", f"latentds {_tool_version()}")
    prov.setdefault("torch", torch.__version__)
    prov.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    return prov


def _header(manifest_text: str, tensors: Mapping[str, torch.Tensor], buffers: Mapping[str, memoryview],
            where: str) -> list[Any]:
    """The file's pieces in order: header length, header JSON (padded to 8 bytes), the tensors' bytes."""
    header: dict[str, Any] = {
        "__metadata__": {
            spec.META_MANIFEST: manifest_text,
            spec.META_MANIFEST_SHA256: hashlib.sha256(manifest_text.encode("utf-8")).hexdigest(),
        }
    }
    offset = 0
    for name, t in tensors.items():
        size = len(buffers[name])
        header[name] = {"dtype": spec.TORCH_TO_ST[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % spec.HEADER_ALIGNMENT)
    if len(raw) > spec.MAX_HEADER_BYTES:
        raise LatentdsError(f"{where}: the header would exceed {spec.MAX_HEADER_BYTES} bytes")
    return [struct.pack("<Q", len(raw)), raw, *buffers.values()]


def _tool_version() -> str:
    from latentds.version import __version__

    return __version__
