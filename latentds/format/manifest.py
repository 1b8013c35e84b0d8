"""The manifest: the JSON document stored in a .lds file's metadata (spec/manifest.schema.json)."""

from __future__ import annotations

import math
from typing import Any

from latentds.errors import ManifestError
from latentds.format import spec
from latentds.format.render import safe
from latentds.format.schema import check_schema

_NUMBER = (int, float)
MAX_DIM = 2**31  # any count or size in the manifest; a hostile 2**63 or 1e30 stops here, not in numpy
MAX_IMAGE_SIDE = 1 << 16  # decoding allocates C x H x W per image: bound it before anything is built
MAX_CHANNELS = 64
#: Normalization and output range stay within these magnitudes (std at least 1/SANE_SCALE): decoding divides by
#: std and by the range's width, and a std of 1e-300 or a mean of 1e300 would turn every pixel into inf or NaN.
SANE_SCALE = 1e4


def _short(value: object) -> str:
    """A value for an error message, cut short and escaped (a hostile integer may have thousands of digits)."""
    return safe(value, 40)


def _get(obj: dict, key: str, kind: type | tuple[type, ...], where: str, path: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise ManifestError(f"{where}: the manifest lacks '{safe(path + key, 80)}'")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ManifestError(f"{where}: manifest field '{safe(path + key, 80)}' must be {names}, found {safe(value, 80)}")
    return value


def _finite(v: float) -> bool:
    """A finite number that fits a float (a 400-digit integer does not; math.isfinite would raise)."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _numbers(values: Any, n: int, field: str, where: str, positive: bool = False) -> None:
    """A list of ``n`` finite numbers of magnitude at most SANE_SCALE (``positive``: at least 1/SANE_SCALE)."""
    ok = (
        isinstance(values, list)
        and len(values) == n
        and all(isinstance(v, _NUMBER) and not isinstance(v, bool) and _finite(v) and abs(v) <= SANE_SCALE
                for v in values)
    )
    if ok and positive:
        ok = all(v >= 1 / SANE_SCALE for v in values)
    if not ok:
        kind = f"numbers in [{1 / SANE_SCALE:g}, {SANE_SCALE:g}]" if positive else f"numbers in [-{SANE_SCALE:g}, {SANE_SCALE:g}]"
        raise ManifestError(f"{where}: manifest field '{field}' must be a list of {n} {kind}, found {safe(values, 80)}; "
                            "the file is corrupt or hostile (such values decode every pixel to infinity or NaN)")


def validate_manifest(m: dict[str, Any], where: str) -> None:
    """Check the fields a reader relies on. Unknown extra fields are allowed (forward compatibility)."""
    n = _get(m, "num_samples", int, where, "")
    d = _get(m, "latent_dim", int, where, "")
    if not (0 <= n < MAX_DIM and 0 < d < MAX_DIM):
        raise ManifestError(f"{where}: num_samples must be in [0, 2**31) and latent_dim in (0, 2**31), "
                            f"found {_short(n)} and {_short(d)}")
    if not isinstance(m.get("format_version"), str):
        raise ManifestError(f"{where}: format_version must be a string such as \"1.0\"")
    classes = _get(m, "classes", list, where, "")
    if not classes or not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
        raise ManifestError(f"{where}: 'classes' must be a non-empty list of distinct strings")
    if any(not c.isprintable() or len(c.encode("utf-8", "surrogatepass")) > 200 for c in classes):
        raise ManifestError(f"{where}: class names must be printable text of at most 200 bytes (no control "
                            "characters), as they become folder names and terminal output")
    try:
        for c in classes:
            c.encode("utf-8")
    except UnicodeEncodeError:
        raise ManifestError(f"{where}: class names must be valid Unicode text (an unpaired surrogate)") from None
    if m.get("num_classes", len(classes)) != len(classes):
        raise ManifestError(f"{where}: num_classes={safe(m.get('num_classes'))} but {len(classes)} class names are listed")

    latents = _get(m, "latents", dict, where, "")
    encoding = _get(latents, "encoding", str, where, "latents.")
    if encoding not in spec.LATENT_ENCODINGS:
        raise ManifestError(
            f"{where}: latent encoding '{safe(encoding, 40)}' is not supported by this build "
            f"(supported: {', '.join(spec.LATENT_ENCODINGS)}); upgrade latentds"
        )
    if encoding == spec.INT8:  # one scale per dimension: finite, positive, bounded (checked at open)
        scale = latents.get("scale")
        if not isinstance(scale, list) or len(scale) != d or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and 0 < v <= spec.MAX_LATENT_SCALE for v in scale):
            shown = f"{len(scale)} values" if isinstance(scale, list) else safe(scale, 40)
            raise ManifestError(f"{where}: int8 latents need latents.scale, a list of latent_dim={d} finite numbers in "
                                f"(0, {spec.MAX_LATENT_SCALE:g}], found {shown}; the file is corrupt or was not "
                                "written by latentds")

    image = _get(m, "image", dict, where, "")
    channels = _get(image, "channels", int, where, "image.")
    if not 0 < channels <= MAX_CHANNELS:
        raise ManifestError(f"{where}: image.channels must be in 1..{MAX_CHANNELS}, found {_short(channels)}")
    for key in ("height", "width"):
        if not 0 < _get(image, key, int, where, "image.") <= MAX_IMAGE_SIDE:
            raise ManifestError(f"{where}: image.{key} must be in 1..{MAX_IMAGE_SIDE}")
    _numbers(_get(image, "generator_range", list, where, "image."), 2, "image.generator_range", where)
    lo, hi = image["generator_range"]
    if not hi - lo >= 1 / SANE_SCALE:
        raise ManifestError(f"{where}: image.generator_range must be [lo, hi] with lo < hi and hi - lo >= {1 / SANE_SCALE:g}, "
                            f"found {safe([lo, hi])}")
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
    if not 0 < chunk_rows < MAX_DIM or len(chunks) != -(-n // chunk_rows):
        raise ManifestError(
            f"{where}: integrity lists {len(chunks)} latent chunks of {chunk_rows} rows for {n} samples"
        )
    check_schema(m, where)
