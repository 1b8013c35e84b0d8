"""The manifest: the JSON document stored in a .lds file's metadata (spec/manifest.schema.json)."""

from __future__ import annotations

import math
from typing import Any

from latentds.errors import ManifestError
from latentds.format import spec

_NUMBER = (int, float)


def _get(obj: dict, key: str, kind: type | tuple[type, ...], where: str, path: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise ManifestError(f"{where}: the manifest lacks '{path}{key}'")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ManifestError(f"{where}: manifest field '{path}{key}' must be {names}, found {value!r:.80}")
    return value


def _numbers(values: Any, n: int, field: str, where: str, positive: bool = False) -> None:
    ok = (
        isinstance(values, list)
        and len(values) == n
        and all(isinstance(v, _NUMBER) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    )
    if ok and positive:
        ok = all(v > 0 for v in values)
    if not ok:
        kind = "positive finite numbers" if positive else "finite numbers"
        raise ManifestError(f"{where}: manifest field '{field}' must be a list of {n} {kind}, found {values!r:.80}")


def validate_manifest(m: dict[str, Any], where: str) -> None:
    """Check the fields a reader relies on. Unknown extra fields are allowed (forward compatibility)."""
    n = _get(m, "num_samples", int, where, "")
    d = _get(m, "latent_dim", int, where, "")
    if n < 0 or d <= 0:
        raise ManifestError(f"{where}: num_samples must be >= 0 and latent_dim > 0, found {n} and {d}")
    classes = _get(m, "classes", list, where, "")
    if not classes or not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
        raise ManifestError(f"{where}: 'classes' must be a non-empty list of distinct strings")
    if m.get("num_classes", len(classes)) != len(classes):
        raise ManifestError(f"{where}: num_classes={m.get('num_classes')} but {len(classes)} class names are listed")

    latents = _get(m, "latents", dict, where, "")
    encoding = _get(latents, "encoding", str, where, "latents.")
    if encoding not in spec.LATENT_ENCODINGS:
        raise ManifestError(
            f"{where}: latent encoding {encoding!r} is not supported by this build "
            f"(supported: {', '.join(spec.LATENT_ENCODINGS)}); upgrade latentds"
        )

    image = _get(m, "image", dict, where, "")
    channels = _get(image, "channels", int, where, "image.")
    for key in ("height", "width"):
        if _get(image, key, int, where, "image.") <= 0:
            raise ManifestError(f"{where}: image.{key} must be positive")
    _numbers(_get(image, "generator_range", list, where, "image."), 2, "image.generator_range", where)
    _numbers(_get(image, "mean", list, where, "image."), channels, "image.mean", where)
    _numbers(_get(image, "std", list, where, "image."), channels, "image.std", where, positive=True)

    gen = _get(m, "generator", dict, where, "")
    _get(gen, "arch", str, where, "generator.")
    _get(gen, "args", dict, where, "generator.")

    _get(m, "provenance", dict, where, "")
    integrity = _get(m, "integrity", dict, where, "")
    if _get(integrity, "algorithm", str, where, "integrity.") != "sha256":
        raise ManifestError(f"{where}: integrity.algorithm must be 'sha256'")
    tensors = _get(integrity, "tensors", dict, where, "integrity.")
    for name, entry in tensors.items():
        for key, kind in (("dtype", str), ("shape", list), ("sha256", str)):
            _get(entry, key, kind, where, f"integrity.tensors.{name}.")
    chunk_rows = _get(integrity, "latents_chunk_rows", int, where, "integrity.")
    chunks = _get(integrity, "latents_chunks", list, where, "integrity.")
    if chunk_rows <= 0 or len(chunks) != -(-n // chunk_rows):
        raise ManifestError(
            f"{where}: integrity lists {len(chunks)} latent chunks of {chunk_rows} rows for {n} samples"
        )
