"""The safetensors header and the latentds manifest inside it: parsed strictly, validated before any tensor is read.

Nothing here reads files or allocates tensor memory: :func:`parse_header` takes the header bytes and the size of
the data buffer, :func:`parse_manifest` the header's metadata. The reader (``reader.py``) and the transport
wrapper (``compress.py``) both build on this module; neither imports the other.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import Any

from latentds.errors import (
    ChecksumError,
    HeaderParseError,
    HeaderTooLargeError,
    ManifestError,
    NotLdsError,
    TensorLayoutError,
    TensorMismatchError,
    TruncatedFileError,
    UnsupportedVersionError,
)
from latentds.format import spec
from latentds.format.manifest import validate_manifest
from latentds.format.render import safe

__all__ = ["TensorInfo", "file_sha256", "json_depth", "parse_header", "parse_manifest", "strict_json"]

#: Deepest nesting a header or manifest may have (the writer's deepest, provenance of a merge of merges, is ~12).
MAX_JSON_DEPTH = 64


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives in the data buffer."""

    name: str
    dtype: str  # safetensors name, e.g. "F32"
    shape: tuple[int, ...]
    begin: int  # offsets relative to the start of the data buffer
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)  # Python ints: a hostile shape cannot wrap around to a small size

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"duplicate key(s) {safe(dupes[:3])}")
    return dict(pairs)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf: as unusable as the literal Infinity
        raise ValueError(f"the number {safe(text, 24)} does not fit a 64-bit float")
    return value


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), counted without recursion; stops past ``limit``.
    Raises ValueError for a string or key that is not valid Unicode (a ``\\ud800`` escape: an unpaired surrogate,
    which no UTF-8 writer, terminal or file system takes)."""
    depth, level = 0, [value]
    while True:
        nxt: list[Any] = []
        for v in level:
            if isinstance(v, dict):
                for k, x in v.items():
                    k.encode("utf-8")  # UnicodeEncodeError is a ValueError
                    nxt.append(x)
            elif isinstance(v, list):
                nxt.extend(v)
            elif isinstance(v, str):
                v.encode("utf-8")
        if not nxt or depth > limit:
            return depth
        depth, level = depth + 1, nxt


def strict_json(text: str | bytes, what: str, where: str) -> Any:
    """JSON as safetensors reads it: UTF-8, no duplicate keys, no NaN/Infinity, no number beyond a float (1e400),
    at most MAX_JSON_DEPTH levels; anything else is a HeaderParseError, never an exception of Python's own."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants,
                           parse_float=_finite_float)
    except RecursionError:
        raise HeaderParseError(f"{where}: the {what} nests too deeply; it is not a .lds file or is hostile") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, duplicate keys, over-long integers
        raise HeaderParseError(
            f"{where}: the {what} is not valid UTF-8 JSON ({safe(exc, 200)}); this is not a .lds file or it is corrupt"
        ) from None
    try:
        depth = json_depth(value)
    except UnicodeEncodeError:
        raise HeaderParseError(f"{where}: the {what} holds a string that is not valid Unicode (an unpaired surrogate "
                               "escape such as \\ud800); it is corrupt or hostile") from None
    if depth > MAX_JSON_DEPTH:
        raise HeaderParseError(f"{where}: the {what} nests deeper than {MAX_JSON_DEPTH} levels; it is not a .lds "
                               "file or is hostile")
    return value


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_header(header: bytes, buffer_size: int, where: str) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate a safetensors header against the size of the data buffer that follows it."""
    obj = strict_json(header, "header", where)
    if not isinstance(obj, dict):
        raise HeaderParseError(f"{where}: the header must be a JSON object, found {type(obj).__name__}")
    metadata = obj.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise HeaderParseError(f"{where}: '__metadata__' must map strings to strings")

    tensors: dict[str, TensorInfo] = {}
    for name, entry in obj.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise HeaderParseError(
                f"{where}: header entry '{safe(name, 80)}' must have exactly 'dtype', 'shape' and 'data_offsets'"
            )
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in spec.ST_TO_NUMPY:
            raise HeaderParseError(
                f"{where}: tensor '{safe(name, 80)}' has dtype '{safe(dtype, 40)}'; supported: {', '.join(spec.ST_TO_NUMPY)}"
            )
        if not (isinstance(shape, list) and len(shape) <= 8 and all(type(d) is int and 0 <= d < 2**63 for d in shape)):
            raise HeaderParseError(f"{where}: tensor '{safe(name, 80)}' has an invalid shape {safe(shape, 80)}")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(o) is int and o < 2**63 for o in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            raise HeaderParseError(f"{where}: tensor '{safe(name, 80)}' has invalid data_offsets {safe(offsets, 80)}")
        info = TensorInfo(name, dtype, tuple(shape), offsets[0], offsets[1])
        expected = info.numel * spec.ITEMSIZE[dtype]
        if info.nbytes != expected:
            raise TensorMismatchError(
                f"{where}: tensor '{safe(name, 80)}' spans {info.nbytes} bytes but dtype {dtype} and shape {list(shape)} "
                f"need {expected}; the header is corrupt"
            )
        tensors[name] = info

    # Offsets must tile the buffer exactly: sorted, contiguous from 0, no overlap, ending at the buffer end.
    cursor = 0
    for info in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if info.begin != cursor:
            kind = "overlaps the previous tensor" if info.begin < cursor else "leaves a gap before it"
            raise TensorLayoutError(
                f"{where}: tensor '{safe(info.name, 80)}' starts at byte {info.begin} of the data buffer and {kind} "
                f"(expected {cursor}); the header is corrupt"
            )
        cursor = info.end
    if cursor > buffer_size:
        raise TruncatedFileError(
            f"{where}: the header declares {cursor} bytes of tensor data but the file holds only {buffer_size}; "
            "the file is truncated (an incomplete download or copy?). Fetch it again."
        )
    if cursor < buffer_size:
        raise TensorLayoutError(
            f"{where}: the file has {buffer_size - cursor} bytes after the last tensor; "
            "it was appended to or its header is corrupt"
        )
    return tensors, metadata


def parse_manifest(metadata: dict[str, str], tensors: dict[str, TensorInfo], where: str) -> dict[str, Any]:
    """Extract, authenticate and validate the manifest, and check it against the tensor table."""
    text = metadata.get(spec.META_MANIFEST)
    if text is None:
        raise NotLdsError(
            f"{where}: a safetensors file without a '{spec.META_MANIFEST}' entry in its metadata; "
            "it is not a latentds (.lds) file"
        )
    if len(text.encode("utf-8")) > spec.MAX_MANIFEST_BYTES:
        raise HeaderTooLargeError(f"{where}: the manifest exceeds {spec.MAX_MANIFEST_BYTES} bytes")
    manifest = strict_json(text, "manifest", where)
    if not isinstance(manifest, dict) or manifest.get("format") != spec.FORMAT_NAME:
        raise NotLdsError(f"{where}: the manifest does not declare format {spec.FORMAT_NAME!r}; not a .lds file")
    version = manifest.get("format_version")
    if not isinstance(version, str):
        raise ManifestError(f"{where}: format_version must be a string such as \"{spec.FORMAT_VERSION}\", found "
                            f"{safe(version, 40)}")
    try:
        major, _minor = spec.parse_version(version)
    except ValueError:
        raise UnsupportedVersionError(f"{where}: unreadable format_version '{safe(version, 40)}'") from None
    if major not in spec.READABLE_MAJOR_VERSIONS:
        readable = ", ".join(f"{v}.x" for v in spec.READABLE_MAJOR_VERSIONS)
        raise UnsupportedVersionError(
            f"{where}: .lds format version {safe(version, 40)}; this build of latentds reads versions {readable}. "
            "Upgrade latentds to read it."
        )
    digest = metadata.get(spec.META_MANIFEST_SHA256)
    if digest != hashlib.sha256(text.encode("utf-8")).hexdigest():
        raise ChecksumError(f"{where}: the manifest fails its sha256 check; the header is corrupt", ["manifest"])
    validate_manifest(manifest, where)

    listed = manifest["integrity"]["tensors"]
    if set(listed) != set(tensors):
        missing = sorted(set(listed) - set(tensors))
        extra = sorted(set(tensors) - set(listed))
        raise TensorMismatchError(
            f"{where}: tensors missing from the file: {missing or 'none'}; not listed in the manifest: "
            f"{extra or 'none'}"
        )
    foreign = sorted(
        name for name in tensors if name not in (spec.LATENTS, spec.LABELS) and not name.startswith(spec.GENERATOR_PREFIX)
    )
    if foreign:
        raise TensorMismatchError(
            f"{where}: tensor name(s) {foreign[:3]} are not part of format {spec.FORMAT_NAME} 1.x (only "
            f"'{spec.LATENTS}', '{spec.LABELS}' and '{spec.GENERATOR_PREFIX}<key>')"
        )
    for name, info in tensors.items():
        want = listed[name]
        if want["dtype"] != info.dtype or tuple(want["shape"]) != info.shape:
            raise TensorMismatchError(
                f"{where}: tensor '{safe(name, 80)}' is {info.dtype}{list(info.shape)} in the header but "
                f"{want['dtype']}{list(want['shape'])} in the manifest"
            )
    n, d = manifest["num_samples"], manifest["latent_dim"]
    lat, lab = tensors[spec.LATENTS], tensors[spec.LABELS]
    allowed = ("I8",) if manifest["latents"]["encoding"] == spec.INT8 else spec.LATENT_DTYPES
    if lat.shape != (n, d) or lat.dtype not in allowed:
        raise TensorMismatchError(
            f"{where}: 'latents' must be [{n}, {d}] of {'/'.join(allowed)} (encoding "
            f"{manifest['latents']['encoding']}), found {lat.dtype}{list(lat.shape)}"
        )
    if lab.shape != (n,) or lab.dtype not in spec.LABEL_DTYPES:
        raise TensorMismatchError(
            f"{where}: 'labels' must be [{n}] of {'/'.join(spec.LABEL_DTYPES)}, found {lab.dtype}{list(lab.shape)}"
        )
    return manifest


