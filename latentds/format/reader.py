"""Read a .lds file: validate the layout before allocating, then hand out tensors.

Order of checks (each raises its own :mod:`latentds.errors` subclass):
file exists -> header length sane -> header JSON well-formed -> tensor offsets contiguous and inside the
file -> manifest present, right format and major version, its own sha256 matches -> manifest consistent
with the tensors (names, dtypes, shapes) and with its schema -> labels within range. Tensor sha256s are checked
by :meth:`LdsReader.verify` (and on open when ``verify=True``). The header and manifest parsing lives in
``header.py``, the byte-range reading of URLs in ``ranged.py``, the .lds.zst wrapper in ``compress.py``.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentds.errors import (
    ChecksumError,
    HeaderLengthError,
    HeaderTooLargeError,
    LabelRangeError,
    LdsNotFoundError,
    NonFiniteError,
    UsageError,
)
from latentds.format import spec
from latentds.format.compress import read_zst
from latentds.format.header import TensorInfo, file_sha256, parse_header, parse_manifest
from latentds.format.ranged import RemoteTensors, count_nonfinite
from latentds.format.remote import is_url, local_path, open_source
from latentds.format.render import safe

__all__ = ["LdsReader", "TensorInfo", "file_sha256"]


def _is_zst(path: Path) -> bool:
    return path.name.endswith(".zst")


class LdsReader:
    """An open .lds (or .lds.zst) file. Cheap to open; tensors are read on demand.

    The data are memory-mapped for a plain file; a ``.lds.zst`` is decompressed first, into memory when small and
    into an unlinked temporary file (memory-mapped) when large, so memory stays bounded either way. A reader holds an OS handle: it is not picklable (pickle its ``path`` and reopen per process).
    """

    def __init__(self, path: str | os.PathLike, *, verify: bool = False, check_labels: bool = True):
        self._mmap: mmap.mmap | None = None
        self._remote: RemoteTensors | None = None
        self._data: bytes | bytearray | mmap.mmap = b""
        self.local_copy: Path | None = None  # a URL whose server ignores ranges: the checked copy in the cache
        source = download = None
        if is_url(path) and local_path(str(path)) is None:  # read in byte ranges (format/remote.py)
            self.path: Path | str = str(path)
            where = self.path
            if _is_zst(Path(urllib.parse.urlparse(where).path)):
                raise UsageError(f"{where}: a .lds.zst cannot be read in ranges; download it and `latentds unpack` it")
            source = open_source(where)
            data: bytes | bytearray | mmap.mmap = source.read(0, 8)  # then exactly the header: two requests
            self.file_size = source.size if source.size is not None else len(data)
            if getattr(source, "local_copy", None) is not None:  # ranges ignored: downloaded whole into the cache
                self.local_copy, download, source = source.local_copy, source, None
                data = self._data = self._map(self.local_copy)
                self.file_size = len(data)
        else:
            self.path = local_path(str(path)) if is_url(path) else Path(path)  # file:// is a local path
            where = str(self.path)
            if not self.path.is_file():
                raise LdsNotFoundError(
                    f"{where}: no such file" + ("" if not self.path.exists() else " (not a regular file)")
                )
            if _is_zst(self.path):
                data = read_zst(self.path)
                self._mmap = data if isinstance(data, mmap.mmap) else None
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
            self._remote = RemoteTensors(self, source)
            self._labels_unchecked = check_labels  # checked when the labels are first fetched, not at open
        elif check_labels:
            self._check_labels()
        if download is not None:
            self._check_download(download.downloads, download.fresh)
        if verify:
            problems = self.verify()
            if problems:
                raise ChecksumError(f"{where}: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""), problems)

    def _check_download(self, downloads: Any, fresh: bool) -> None:
        """Check every hash of a copy downloaded whole (once: the cache's sidecar then records its manifest)."""
        meta = downloads.meta()
        if not fresh and meta is not None and meta.get("manifest_sha256") == self.manifest_sha256:
            return
        problems = self.verify()
        if problems:
            downloads.discard()
            raise ChecksumError(f"{self.path}: the downloaded file is corrupt: {problems[0]}"
                                + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""), problems)
        downloads.mark_checked(self.manifest_sha256)

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

    @property
    def int8(self) -> bool:
        """Whether the latents are int8 codes with a scale per dimension (encoding "int8")."""
        return self.manifest["latents"]["encoding"] == spec.INT8

    def latents(self, rows: Iterable[int] | np.ndarray | slice | None = None, *, check: bool = False) -> torch.Tensor:
        """Latent vectors for the given rows (all when None): the stored float dtype, or float32 decoded from
        int8 codes and the manifest's ``latents.scale``. ``check`` verifies the touched chunks."""
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
        if self.int8:  # (n, D) codes times their dimensions' scales (checked finite and positive at open)
            return out.float() * torch.tensor(self.manifest["latents"]["scale"], dtype=torch.float32)
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
            raise NonFiniteError(f"{self.path}: tensor '{safe(name, 80)}' holds {bad} NaN or infinite values; the file cannot "
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
        """Check every tensor's sha256 (and the latent row chunks). Returns the problems found; [] if intact.
        A remote file is streamed from its server in pieces, hashed as they arrive (memory: one piece)."""
        if self._remote is not None:
            return self._remote.verify()
        problems: list[str] = []
        integrity = self.manifest["integrity"]
        for name, info in self.tensors.items():
            digest = self._digest(name)
            if digest != integrity["tensors"][name]["sha256"]:
                problems.append(f"tensor '{safe(name, 80)}' fails its sha256 check")
        try:
            self.verify_latent_rows(np.arange(self.num_samples))
        except ChecksumError as exc:
            problems.extend(exc.problems)
        for name, info in self.tensors.items():  # cheap next to the sha256 of the same bytes
            if info.dtype in ("F64", "F32", "F16", "BF16") and (bad := self._count_nonfinite(name)):
                problems.append(f"tensor '{safe(name, 80)}' holds {bad} NaN or infinite values")
        return problems

    def _digest(self, name: str, step: int = 64 << 20) -> str:
        """sha256 of a tensor's bytes, in steps whose mapped pages are let go once hashed (see ``_release``)."""
        view, h = self.raw_bytes(name), hashlib.sha256()
        for lo in range(0, len(view), step):
            h.update(view[lo : lo + step])
            self._release(self.tensors[name].begin + lo, step)
        return h.hexdigest()

    def _release(self, begin: int, length: int) -> None:
        """Drop the mapped pages of data-buffer bytes [begin, begin + length) from this process's memory: they are
        read back from the file if touched again. Keeps `verify` of a large file (or of a .lds.zst inflated to a
        temporary file) at one step of resident memory instead of the whole file."""
        if self._mmap is None or not hasattr(self._mmap, "madvise"):
            return
        start = self._buffer_start + begin
        aligned = start - start % mmap.PAGESIZE
        end = min(start + length, len(self._mmap))
        try:
            self._mmap.madvise(mmap.MADV_DONTNEED, aligned, max(end - aligned, 0))
        except (OSError, ValueError):
            pass

    def _count_nonfinite(self, name: str, block: int = 1 << 22) -> int:
        """NaN/inf count of a floating tensor, read in blocks from the file's buffer (no copy of the tensor)."""
        flat = self.array(name).reshape(-1)
        bad = 0
        for lo in range(0, flat.size, block):
            bad += count_nonfinite(flat[lo : lo + block], self.tensors[name].dtype)
            self._release(self.tensors[name].begin + lo * flat.itemsize, block * flat.itemsize)
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
            digest = hashlib.sha256(view[lo * row_bytes : hi * row_bytes]).hexdigest()
            self._release(self.tensors[spec.LATENTS].begin + lo * row_bytes, (hi - lo) * row_bytes)
            if digest != integrity["latents_chunks"][int(c)]:
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
