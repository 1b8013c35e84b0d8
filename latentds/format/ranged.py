"""The tensor bytes of a .lds read over the network: fetched in few byte ranges, checked against the manifest.

:class:`RemoteTensors` serves :class:`latentds.format.reader.LdsReader` for a URL: labels and generator in one
request for the span they occupy, latents by row chunk, every range checked against its sha256 before use and
kept in the local cache (``cache.RemoteCache``). Sizes come from the header the reader has already validated,
so the cache and the server can only hand over the bytes the manifest names.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import numpy as np

from latentds.errors import ChecksumError
from latentds.format import spec
from latentds.format.cache import RemoteCache
from latentds.format.header import TensorInfo
from latentds.format.render import safe

__all__ = ["RemoteTensors", "count_nonfinite"]

FLOATS = ("F64", "F32", "F16", "BF16")


def count_nonfinite(values: np.ndarray, dtype: str) -> int:
    """NaN and infinite values among ``values`` stored as safetensors ``dtype`` (bfloat16 as uint16 bit patterns)."""
    if dtype == "BF16":  # exponent all ones: inf or NaN
        return int(np.count_nonzero((values & 0x7F80) == 0x7F80))
    return values.size - int(np.count_nonzero(np.isfinite(values)))


class RemoteTensors:
    """The tensor bytes of a remote file, fetched in few ranges and checked against the manifest's sha256 values.

    Labels and generator (small, needed together) come in one request for the span they occupy; latents come
    by row chunk (``integrity.latents_chunks``), adjacent missing chunks in one request. Checked ranges are kept
    in memory (latent chunks up to ``MEMORY_BUDGET`` bytes, oldest dropped first) and in the local cache.
    """

    MEMORY_BUDGET = 256 * 2**20
    VERIFY_PIECE = 8 * 2**20  # bytes per request while verify() streams the file

    def __init__(self, reader: Any, source: Any):  # reader: the LdsReader this serves
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
                f"{self.reader.path}: the bytes served for tensor '{safe(name, 80)}' fail their sha256 check (the file changed "
                "on the server, or it is corrupt)", [f"tensor '{safe(name, 80)}' fails its sha256 check"]
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
        cached = self.cache.get(key, hi - lo)
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
            size = (min((c + 1) * rows, n) - c * rows) * row_bytes
            cached = self.cache.get(f"latents-{c}", size, self.integrity["latents_chunks"][c])
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

    def verify(self) -> list[str]:
        """Every tensor's sha256, every latent chunk's and a NaN count, hashed as the bytes stream from the server in
        requests of about ``VERIFY_PIECE`` bytes (latent pieces end on chunk boundaries). Memory stays at one piece:
        nothing is kept or cached, so this checks what the server serves now. The problems found; [] if intact."""
        problems: list[str] = []
        for t in sorted(self.reader.tensors.values(), key=lambda t: t.begin):
            digest, bad = hashlib.sha256(), 0
            step, chunks = self._piece(t)
            for lo in range(t.begin, t.end, step):
                data = self._read(lo, min(lo + step, t.end))
                digest.update(data)
                if chunks:
                    problems += self._check_chunks(data, (lo - t.begin) // chunks)
                if t.dtype in FLOATS:
                    bad += count_nonfinite(np.frombuffer(data, dtype=spec.ST_TO_NUMPY[t.dtype]), t.dtype)
            if digest.hexdigest() != self.integrity["tensors"][t.name]["sha256"]:
                problems.insert(0, f"tensor '{safe(t.name, 80)}' fails its sha256 check")
            if bad:
                problems.append(f"tensor '{safe(t.name, 80)}' holds {bad} NaN or infinite values")
        return problems

    def _piece(self, t: TensorInfo) -> tuple[int, int]:
        """(bytes per request, bytes per latent chunk or 0) for streaming tensor ``t``."""
        item = spec.ITEMSIZE[t.dtype]
        if t.name != spec.LATENTS or not t.nbytes:
            return max(item, self.VERIFY_PIECE // item * item), 0
        chunk = int(self.integrity["latents_chunk_rows"]) * self.reader.latent_dim * item
        return max(chunk, self.VERIFY_PIECE // chunk * chunk), chunk

    def _check_chunks(self, data: bytes, first: int) -> list[str]:
        """The problems of the latent chunks in ``data``, which starts at chunk ``first``."""
        rows, n = int(self.integrity["latents_chunk_rows"]), self.reader.num_samples
        chunk = rows * self.reader.latent_dim * spec.ITEMSIZE[self.reader.tensors[spec.LATENTS].dtype]
        out = []
        for k, lo in enumerate(range(0, len(data), chunk)):
            c = first + k
            if hashlib.sha256(data[lo : lo + chunk]).hexdigest() != self.integrity["latents_chunks"][c]:
                out.append(f"latents rows {c * rows}-{min((c + 1) * rows, n) - 1} fail their sha256 check")
        return out

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
