"""Read a .lds file: validate the layout before allocating, then hand out tensors.

Order of checks (each raises its own :mod:`latentds.errors` subclass):
file exists -> header length sane -> header JSON well-formed -> tensor offsets contiguous and inside the
file -> manifest present, right format and major version, its own sha256 matches -> manifest consistent
with the tensors (names, dtypes, shapes) -> labels within range. Tensor sha256s are checked by
:meth:`LdsReader.verify` (and on open when ``verify=True``).
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import struct
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentds.errors import (
    ChecksumError,
    HeaderLengthError,
    HeaderParseError,
    HeaderTooLargeError,
    LabelRangeError,
    LdsNotFoundError,
    NonFiniteError,
    NotLdsError,
    TensorLayoutError,
    TensorMismatchError,
    TruncatedFileError,
    UnsupportedVersionError,
    UsageError,
)
from latentds.format import spec
from latentds.format.manifest import validate_manifest


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


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_zst(path: Path) -> bool:
    return path.name.endswith(".zst")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"duplicate key(s) {dupes[:3]}")
    return dict(pairs)


def strict_json(text: str | bytes, what: str, where: str) -> Any:
    """JSON as safetensors reads it: UTF-8, no duplicate keys, no NaN/Infinity; a hostile nesting depth or a
    huge integer is a HeaderParseError, never a RecursionError or ValueError of Python's own."""
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=no_constants)
    except RecursionError:
        raise HeaderParseError(f"{where}: the {what} nests too deeply; it is not a .lds file or is hostile") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, duplicate keys, over-long integers
        raise HeaderParseError(
            f"{where}: the {what} is not valid UTF-8 JSON ({exc}); this is not a .lds file or it is corrupt"
        ) from None


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
                f"{where}: header entry {name!r} must have exactly 'dtype', 'shape' and 'data_offsets'"
            )
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in spec.ST_TO_NUMPY:
            raise HeaderParseError(
                f"{where}: tensor {name!r} has dtype {str(dtype)[:40]!r}; supported: {', '.join(spec.ST_TO_NUMPY)}"
            )
        if not (isinstance(shape, list) and len(shape) <= 8 and all(type(d) is int and 0 <= d < 2**63 for d in shape)):
            raise HeaderParseError(f"{where}: tensor {name!r} has an invalid shape {str(shape)[:80]}")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(o) is int and o < 2**63 for o in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            raise HeaderParseError(f"{where}: tensor {name!r} has invalid data_offsets {str(offsets)[:80]}")
        info = TensorInfo(name, dtype, tuple(shape), offsets[0], offsets[1])
        expected = info.numel * spec.ITEMSIZE[dtype]
        if info.nbytes != expected:
            raise TensorMismatchError(
                f"{where}: tensor {name!r} spans {info.nbytes} bytes but dtype {dtype} and shape {list(shape)} "
                f"need {expected}; the header is corrupt"
            )
        tensors[name] = info

    # Offsets must tile the buffer exactly: sorted, contiguous from 0, no overlap, ending at the buffer end.
    cursor = 0
    for info in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if info.begin != cursor:
            kind = "overlaps the previous tensor" if info.begin < cursor else "leaves a gap before it"
            raise TensorLayoutError(
                f"{where}: tensor {info.name!r} starts at byte {info.begin} of the data buffer and {kind} "
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
    try:
        major, _minor = spec.parse_version(str(version))
    except ValueError:
        raise UnsupportedVersionError(f"{where}: unreadable format_version {version!r}") from None
    if major not in spec.READABLE_MAJOR_VERSIONS:
        readable = ", ".join(f"{v}.x" for v in spec.READABLE_MAJOR_VERSIONS)
        raise UnsupportedVersionError(
            f"{where}: .lds format version {version}; this build of latentds reads versions {readable}. "
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
                f"{where}: tensor {name!r} is {info.dtype}{list(info.shape)} in the header but "
                f"{want['dtype']}{list(want['shape'])} in the manifest"
            )
    n, d = manifest["num_samples"], manifest["latent_dim"]
    lat, lab = tensors[spec.LATENTS], tensors[spec.LABELS]
    if lat.shape != (n, d) or lat.dtype not in spec.LATENT_DTYPES:
        raise TensorMismatchError(
            f"{where}: 'latents' must be [{n}, {d}] of {'/'.join(spec.LATENT_DTYPES)}, found {lat.dtype}{list(lat.shape)}"
        )
    if lab.shape != (n,) or lab.dtype not in spec.LABEL_DTYPES:
        raise TensorMismatchError(
            f"{where}: 'labels' must be [{n}] of {'/'.join(spec.LABEL_DTYPES)}, found {lab.dtype}{list(lab.shape)}"
        )
    return manifest


class LdsReader:
    """An open .lds (or .lds.zst) file. Cheap to open; tensors are read on demand.

    The data are memory-mapped for a plain file; a ``.lds.zst`` is decompressed into memory first.
    A reader holds an OS handle: it is not picklable (pickle its ``path`` and reopen per process).
    """

    def __init__(self, path: str | os.PathLike, *, verify: bool = False, check_labels: bool = True):
        from latentds.format.remote import is_url, local_path, open_source

        self._mmap: mmap.mmap | None = None
        self._remote: _RemoteTensors | None = None
        self._data: bytes | bytearray | mmap.mmap = b""
        source = None
        if is_url(path) and local_path(str(path)) is None:  # read in byte ranges (format/remote.py)
            self.path: Path | str = str(path)
            where = self.path
            if _is_zst(Path(urllib.parse.urlparse(where).path)):
                raise UsageError(f"{where}: a .lds.zst cannot be read in ranges; download it and `latentds unpack` it")
            source = open_source(where)
            data: bytes | bytearray | mmap.mmap = source.read(0, 8)  # then exactly the header: two requests
            self.file_size = source.size if source.size is not None else len(data)
        else:
            self.path = local_path(str(path)) if is_url(path) else Path(path)  # file:// is a local path
            where = str(self.path)
            if not self.path.is_file():
                raise LdsNotFoundError(
                    f"{where}: no such file" + ("" if not self.path.exists() else " (not a regular file)")
                )
            if _is_zst(self.path):
                from latentds.format.compress import read_zst

                data = read_zst(self.path)
            else:
                data = self._map(self.path)
            self._data = data
            self.file_size = len(data)
        if self.file_size < 8 or len(data) < 8:
            raise HeaderLengthError(f"{where}: {self.file_size} bytes is too short to be a .lds file (truncated?)")
        (header_len,) = struct.unpack("<Q", data[:8])
        if header_len > spec.MAX_HEADER_BYTES:
            raise HeaderTooLargeError(
                f"{where}: declared header length {header_len} exceeds the {spec.MAX_HEADER_BYTES}-byte bound; "
                "this is not a .lds file or its first 8 bytes are corrupt"
            )
        if header_len < 2 or 8 + header_len > self.file_size:
            raise HeaderLengthError(
                f"{where}: declared header length {header_len} does not fit in a {self.file_size}-byte file; "
                "the file is truncated or is not a .lds file"
            )
        if header_len % 8:
            raise HeaderLengthError(
                f"{where}: declared header length {header_len} is not a multiple of 8 (the format pads the header "
                "so tensor data is 8-byte aligned); the file is corrupt or was not written as a .lds"
            )
        self._buffer_start = 8 + header_len
        self.header_bytes = header_len
        if source is not None and len(data) < 8 + header_len:  # a header longer than the first request
            data = bytes(data) + source.read(len(data), 8 + header_len)
        self.tensors, self.metadata = parse_header(
            bytes(data[8 : 8 + header_len]), self.file_size - self._buffer_start, where
        )
        self.manifest = parse_manifest(self.metadata, self.tensors, where)
        self.manifest_sha256: str = self.metadata[spec.META_MANIFEST_SHA256]  # the file's identity (hashes all tensors)
        self._labels_unchecked = False
        if source is not None:
            self._remote = _RemoteTensors(self, source)
            self._labels_unchecked = check_labels  # checked when the labels are first fetched, not at open
        elif check_labels:
            self._check_labels()
        if verify:
            problems = self.verify()
            if problems:
                raise ChecksumError(f"{where}: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""), problems)

    def _map(self, path: Path) -> mmap.mmap:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise HeaderLengthError(f"{path}: the file is empty")
            self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._mmap

    @property
    def is_remote(self) -> bool:
        """True when the file is read over the network in byte ranges (a URL)."""
        return self._remote is not None

    # --- manifest shortcuts -------------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        return int(self.manifest["num_samples"])

    @property
    def latent_dim(self) -> int:
        return int(self.manifest["latent_dim"])

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def num_classes(self) -> int:
        return len(self.manifest["classes"])

    # --- raw access ---------------------------------------------------------------------------------
    def array(self, name: str) -> np.ndarray:
        """A read-only numpy view of one tensor (bfloat16 appears as uint16)."""
        info = self.tensors[name]
        arr = np.frombuffer(self.raw_bytes(name), dtype=spec.ST_TO_NUMPY[info.dtype], count=info.numel)
        arr.flags.writeable = False  # the buffer of an in-memory .lds.zst is a bytearray: keep the view read-only
        if name == spec.LABELS and self._labels_unchecked:
            self._labels_unchecked = False
            self._check_labels()
        return arr.reshape(info.shape)

    def raw_bytes(self, name: str) -> memoryview:
        """The bytes of one tensor: a view of the mapped file, or (remote) the checked bytes fetched for it."""
        if self._remote is not None:
            return memoryview(self._remote.tensor_bytes(name))
        info = self.tensors[name]
        start = self._buffer_start + info.begin
        return memoryview(self._data)[start : start + info.nbytes]

    def tensor(self, name: str) -> torch.Tensor:
        """A copy of one tensor as torch, in its stored dtype."""
        info = self.tensors[name]
        out = torch.from_numpy(self.array(name).copy())
        return out.view(torch.bfloat16) if info.dtype == "BF16" else out

    def latents(self, rows: Iterable[int] | np.ndarray | slice | None = None, *, check: bool = False) -> torch.Tensor:
        """Latent vectors (stored dtype) for the given rows (all when None). ``check`` verifies the touched chunks."""
        if rows is None:
            rows = slice(None)
        if self._remote is not None:  # only the chunks these rows touch are fetched, each checked on arrival
            idx = np.arange(self.num_samples)[rows] if isinstance(rows, slice) else np.asarray(rows, dtype=np.int64)
            picked = self._remote.latent_rows(idx)
        else:
            arr = self.array(spec.LATENTS)
            if check:
                idx = np.arange(self.num_samples)[rows] if isinstance(rows, slice) else np.asarray(rows)
                self.verify_latent_rows(idx)
            picked = np.array(arr[rows] if isinstance(rows, slice) else arr[np.asarray(rows, dtype=np.int64)])
        out = torch.from_numpy(picked)
        out = out.view(torch.bfloat16) if self.tensors[spec.LATENTS].dtype == "BF16" else out
        self._check_finite(spec.LATENTS, out)
        return out

    def labels(self) -> torch.Tensor:
        return self.tensor(spec.LABELS).to(torch.int64)

    def generator_state(self) -> dict[str, torch.Tensor]:
        """The generator's state dict (stored dtypes), keys without the ``generator.`` prefix."""
        p = spec.GENERATOR_PREFIX
        state = {name[len(p) :]: self.tensor(name) for name in self.tensors if name.startswith(p)}
        for key, value in state.items():
            self._check_finite(p + key, value)
        return state

    def _check_finite(self, name: str, values: torch.Tensor) -> None:
        """NaN or infinity in latents or weights would decode to garbage: refuse, as the writer does."""
        if values.is_floating_point() and values.numel() and not bool(torch.isfinite(values).all()):
            bad = int((~torch.isfinite(values)).sum())
            raise NonFiniteError(f"{self.path}: tensor {name!r} holds {bad} NaN or infinite values; the file cannot "
                                 "be decoded (its sender wrote non-finite data, or it is corrupt)")

    # --- integrity ----------------------------------------------------------------------------------
    def _check_labels(self) -> None:
        labels = self.array(spec.LABELS)
        if labels.size == 0:
            return
        lo, hi = int(labels.min()), int(labels.max())
        k = self.num_classes
        if lo < 0 or hi >= k:
            bad = int(np.flatnonzero((labels < 0) | (labels >= k))[0])
            raise LabelRangeError(
                f"{self.path}: label {int(labels[bad])} at row {bad} is outside [0, {k}) for {k} classes; the file is corrupt"
            )

    def verify(self) -> list[str]:
        """Check every tensor's sha256 (and the latent row chunks). Returns the problems found; [] if intact."""
        problems: list[str] = []
        integrity = self.manifest["integrity"]
        for name, info in self.tensors.items():
            digest = hashlib.sha256(self.raw_bytes(name)).hexdigest()
            if digest != integrity["tensors"][name]["sha256"]:
                problems.append(f"tensor {name!r} fails its sha256 check")
        try:
            self.verify_latent_rows(np.arange(self.num_samples))
        except ChecksumError as exc:
            problems.extend(exc.problems)
        for name, info in self.tensors.items():  # cheap next to the sha256 of the same bytes
            if info.dtype in ("F64", "F32", "F16", "BF16") and (bad := self._count_nonfinite(name)):
                problems.append(f"tensor {name!r} holds {bad} NaN or infinite values")
        return problems

    def _count_nonfinite(self, name: str, block: int = 1 << 22) -> int:
        """NaN/inf count of a floating tensor, read in blocks from the file's buffer (no copy of the tensor)."""
        flat = self.array(name).reshape(-1)
        bad = 0
        for lo in range(0, flat.size, block):
            part = flat[lo : lo + block]
            if self.tensors[name].dtype == "BF16":  # uint16 bit patterns: exponent all ones is inf or NaN
                bad += int(np.count_nonzero((part & 0x7F80) == 0x7F80))
            else:
                bad += part.size - int(np.count_nonzero(np.isfinite(part)))
        return bad

    def verify_latent_rows(self, rows: np.ndarray) -> None:
        """Check the sha256 of every latent row chunk that ``rows`` touch; raise ChecksumError if one fails."""
        integrity = self.manifest["integrity"]
        chunk_rows = int(integrity["latents_chunk_rows"])
        row_bytes = self.latent_dim * spec.ITEMSIZE[self.tensors[spec.LATENTS].dtype]
        view = self.raw_bytes(spec.LATENTS)
        bad = []
        for c in np.unique(np.asarray(rows, dtype=np.int64) // chunk_rows):
            lo = int(c) * chunk_rows
            hi = min(lo + chunk_rows, self.num_samples)
            if hashlib.sha256(view[lo * row_bytes : hi * row_bytes]).hexdigest() != integrity["latents_chunks"][int(c)]:
                bad.append(f"latents rows {lo}-{hi - 1} fail their sha256 check")
        if bad:
            raise ChecksumError(f"{self.path}: {bad[0]}; the file is corrupt", bad)

    # --- lifecycle ----------------------------------------------------------------------------------
    def close(self) -> None:
        self._data = b""
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:  # a numpy view still points into it; the GC closes it later
                pass
            self._mmap = None

    def __enter__(self) -> LdsReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        raise TypeError("LdsReader holds an open file and cannot be pickled; pickle its path and reopen it")

    def __repr__(self) -> str:
        return f"LdsReader({str(self.path)!r}, num_samples={self.num_samples}, latent_dim={self.latent_dim})"


class _RemoteTensors:
    """The tensor bytes of a remote file, fetched in few ranges and checked against the manifest's sha256 values.

    Labels and generator (small, needed together) come in one request for the span they occupy; latents come
    by row chunk (``integrity.latents_chunks``), adjacent missing chunks in one request. Checked ranges are kept
    in memory (latent chunks up to ``MEMORY_BUDGET`` bytes, oldest dropped first) and in the local cache.
    """

    MEMORY_BUDGET = 256 * 2**20

    def __init__(self, reader: LdsReader, source: Any):
        from latentds.format.remote import RemoteCache

        self.reader, self.source = reader, source
        self.cache = RemoteCache(reader.manifest_sha256)
        self.integrity = reader.manifest["integrity"]
        self.tensors: dict[str, bytes] = {}
        self.chunks: OrderedDict[int, bytes] = OrderedDict()
        self.chunk_bytes = 0

    def _read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the data buffer."""
        base = self.reader._buffer_start
        return self.source.read(base + start, base + end)

    def _expect(self, name: str, data: bytes | memoryview) -> None:
        if not self._matches(name, data):
            raise ChecksumError(
                f"{self.reader.path}: the bytes served for tensor {name!r} fail their sha256 check (the file changed "
                "on the server, or it is corrupt)", [f"tensor {name!r} fails its sha256 check"]
            )

    def tensor_bytes(self, name: str) -> bytes:
        if name not in self.tensors:
            if name == spec.LATENTS:  # every chunk is checked on arrival; verify() hashes the whole tensor
                self.tensors[name] = self.rows_bytes(np.arange(self.reader.num_samples))
            else:
                self._fetch_small()
        return self.tensors[name]

    def _fetch_small(self) -> None:
        """Labels and generator tensors: from the cache, else one request for the span they occupy."""
        infos = [t for t in self.reader.tensors.values() if t.name != spec.LATENTS]
        if not infos:
            return
        lo, hi = min(t.begin for t in infos), max(t.end for t in infos)
        lat = self.reader.tensors[spec.LATENTS]
        span_sha = hashlib.sha256(
            "".join(self.integrity["tensors"][t.name]["sha256"] for t in infos).encode()
        ).hexdigest()  # names the cached span by what it must hold
        if lat.begin < hi and lat.end > lo and lat.nbytes:  # latents in the middle (allowed, unusual): one by one
            for t in infos:
                data = self._read(t.begin, t.end)
                self._expect(t.name, data)
                self.tensors[t.name] = data
            return
        key = f"span-{span_sha[:32]}"
        cached = self.cache.get(key, lambda data: len(data) == hi - lo)
        parts = _split(cached, infos, lo) if cached is not None else None
        if parts is None or not all(self._matches(name, data) for name, data in parts.items()):
            span = self._read(lo, hi)  # not cached, or the cached copy no longer matches
            parts = _split(span, infos, lo)
            for name, data in parts.items():
                self._expect(name, data)
            self.cache.put(key, span)
        self.tensors.update(parts)

    def _matches(self, name: str, data: bytes | memoryview) -> bool:
        return hashlib.sha256(data).hexdigest() == self.integrity["tensors"][name]["sha256"]

    def latent_rows(self, idx: np.ndarray) -> np.ndarray:
        lat = self.reader.tensors[spec.LATENTS]
        n, d = self.reader.num_samples, self.reader.latent_dim
        dtype = spec.ST_TO_NUMPY[lat.dtype]
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"{self.reader.path}: latent rows must lie in [0, {n})")
        return np.frombuffer(self.rows_bytes(idx), dtype=dtype).reshape(len(idx), d).copy()

    def rows_bytes(self, idx: np.ndarray) -> bytes:
        """The stored bytes of latent rows ``idx`` (in that order), fetching the chunks they touch."""
        rows = int(self.integrity["latents_chunk_rows"])
        row_bytes = self.reader.latent_dim * spec.ITEMSIZE[self.reader.tensors[spec.LATENTS].dtype]
        if idx.size == 0 or row_bytes == 0:
            return b""
        chunk_of = idx // rows
        wanted = np.unique(chunk_of).tolist()
        have = {c: self.chunks[c] for c in wanted if c in self.chunks}  # held here: _keep may evict while fetching
        have.update(self._fetch_chunks([c for c in wanted if c not in have], rows, row_bytes))
        out = bytearray(len(idx) * row_bytes)
        for c in wanted:
            data = have[c]
            for pos in np.flatnonzero(chunk_of == c).tolist():
                r = int(idx[pos]) - c * rows
                out[pos * row_bytes : (pos + 1) * row_bytes] = data[r * row_bytes : (r + 1) * row_bytes]
        return bytes(out)

    def _fetch_chunks(self, missing: list[int], rows: int, row_bytes: int) -> dict[int, bytes]:
        """The checked bytes of latent chunks ``missing``: from the local cache, else fetched (runs of adjacent
        chunks in one request each); also kept in memory for later reads."""
        n = self.reader.num_samples
        base = self.reader.tensors[spec.LATENTS].begin
        got: dict[int, bytes] = {}
        todo = []
        for c in missing:
            cached = self.cache.get(f"latents-{c}", self.integrity["latents_chunks"][c])
            if cached is not None:
                got[c] = cached
                self._keep(c, cached)
            else:
                todo.append(c)
        i = 0
        while i < len(todo):  # runs of adjacent chunks: one request each
            j = i
            while j + 1 < len(todo) and todo[j + 1] == todo[j] + 1:
                j += 1
            lo_row, hi_row = todo[i] * rows, min((todo[j] + 1) * rows, n)
            data = self._read(base + lo_row * row_bytes, base + hi_row * row_bytes)
            for c in todo[i : j + 1]:
                a, b = (c * rows - lo_row) * row_bytes, (min((c + 1) * rows, n) - lo_row) * row_bytes
                part = data[a:b]
                if hashlib.sha256(part).hexdigest() != self.integrity["latents_chunks"][c]:
                    first, last = c * rows, min((c + 1) * rows, n) - 1
                    raise ChecksumError(
                        f"{self.reader.path}: the bytes served for latent rows {first}-{last} fail their sha256 "
                        "check (the file changed on the server, or it is corrupt)",
                        [f"latents rows {first}-{last} fail their sha256 check"],
                    )
                self.cache.put(f"latents-{c}", part)
                got[c] = part
                self._keep(c, part)
            i = j + 1
        return got

    def _keep(self, c: int, data: bytes) -> None:
        self.chunks[c] = data
        self.chunk_bytes += len(data)
        while self.chunk_bytes > self.MEMORY_BUDGET and len(self.chunks) > 1:
            _, old = self.chunks.popitem(last=False)
            self.chunk_bytes -= len(old)


def _split(span: bytes, infos: list[TensorInfo], lo: int) -> dict[str, bytes]:
    """The bytes of each tensor in ``infos`` from ``span``, a range of the data buffer starting at ``lo``."""
    view = memoryview(span)
    return {t.name: bytes(view[t.begin - lo : t.end - lo]) for t in infos}
