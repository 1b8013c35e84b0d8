"""`.lds.zst`: a standard zstd frame (with content checksum) around a whole .lds file.

Latents barely compress (Gaussian floats), so this is a transport wrapper, not the storage format: the
`zstd` command-line tool unpacks it too, and readers open it transparently (decompressing into memory).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import zstandard

from latentds.errors import CompressionError, LdsNotFoundError
from latentds.format.writer import atomic_write

_CHUNK = 1 << 20
#: Refuse to inflate more than this (a corrupt or hostile frame could claim anything).
DEFAULT_MAX_UNPACKED = 64 * 1024**3


def _iter_unpacked(src: Path, max_bytes: int, progress: Callable[[int], None] | None) -> Iterator[bytes]:
    """Yield decompressed chunks; raise CompressionError on corruption, truncation or excess size."""
    dctx = zstandard.ZstdDecompressor()
    obj = dctx.decompressobj()
    total = 0
    try:
        with open(src, "rb") as f:
            while block := f.read(_CHUNK):
                if obj.eof:
                    raise CompressionError(f"{src}: data after the end of the zstd frame; the file is corrupt")
                out = obj.decompress(block)
                total += len(out)
                if total > max_bytes:
                    raise CompressionError(
                        f"{src}: unpacks to more than {max_bytes} bytes; refusing (raise the limit if this is expected)"
                    )
                if progress:
                    progress(len(block))
                if out:
                    yield out
    except zstandard.ZstdError as exc:
        raise CompressionError(f"{src}: not a valid zstd stream or corrupt ({exc}); fetch the file again") from None
    if not obj.eof:
        raise CompressionError(f"{src}: the zstd frame ends early; the file is truncated. Fetch it again.")


def read_zst(src: str | os.PathLike, max_bytes: int = DEFAULT_MAX_UNPACKED) -> bytes:
    """Decompress a .lds.zst into memory."""
    src = Path(src)
    if not src.is_file():
        raise LdsNotFoundError(f"{src}: no such file")
    return b"".join(_iter_unpacked(src, max_bytes, None))


def pack(
    src: str | os.PathLike, dst: str | os.PathLike, level: int = 10, progress: Callable[[int], None] | None = None
) -> Path:
    """Compress a .lds into a .lds.zst (zstd frame with content size and checksum), atomically."""
    src = Path(src)
    if not src.is_file():
        raise LdsNotFoundError(f"{src}: no such file")
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True, threads=-1)

    def chunks() -> Iterator[bytes]:
        comp = cctx.compressobj(size=src.stat().st_size)
        with open(src, "rb") as f:
            while block := f.read(_CHUNK):
                yield comp.compress(block)
                if progress:
                    progress(len(block))
        yield comp.flush()

    return atomic_write(dst, chunks())


def unpack(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    max_bytes: int = DEFAULT_MAX_UNPACKED,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Decompress a .lds.zst into a .lds, atomically (a failed unpack leaves no output file)."""
    src = Path(src)
    if not src.is_file():
        raise LdsNotFoundError(f"{src}: no such file")
    return atomic_write(dst, _iter_unpacked(src, max_bytes, progress))
