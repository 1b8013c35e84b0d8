"""``pack`` and ``unpack``: a .lds into a .lds.zst and back, atomically, each result read back before it replaces
anything (spec/FORMAT.md section 8). The frame walking and bounded inflation are ``compress.py``'s."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import zstandard

from latentds.errors import CompressionError, LdsError, LdsNotFoundError
from latentds.format.compress import CHUNK, DEFAULT_MAX_UNPACKED, iter_lds, frame_content_size
from latentds.format.reader import LdsReader
from latentds.format.staging import atomic_write

__all__ = ["pack", "unpack"]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def pack(
    src: str | os.PathLike, dst: str | os.PathLike, level: int = 10, progress: Callable[[int], None] | None = None
) -> Path:
    """Compress a .lds into a .lds.zst (zstd frame with content size and checksum), atomically."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise LdsNotFoundError(f"{src}: no such file")
    if _same_file(src, dst):
        raise CompressionError(f"{dst}: is the input file itself; write the .lds.zst to another path")
    if not 1 <= level <= 22:
        raise CompressionError(f"zstd level must be 1..22, got {level}")
    LdsReader(src).close()  # only .lds files are packed: validates the header and manifest, reads no tensors
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True, threads=-1)

    def chunks() -> Iterator[bytes]:
        comp = cctx.compressobj(size=src.stat().st_size)
        with open(src, "rb") as f:
            while block := f.read(CHUNK):
                yield comp.compress(block)
                if progress:
                    progress(len(block))
        yield comp.flush()

    return atomic_write(dst, chunks(), check=frame_content_size)


def unpack(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    max_bytes: int = DEFAULT_MAX_UNPACKED,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Decompress a .lds.zst into a .lds, atomically: the result replaces ``dst`` only once it has been read
    back as a valid .lds (header, manifest, tensor layout); a failed unpack leaves ``dst`` as it was."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise LdsNotFoundError(f"{src}: no such file")
    if _same_file(src, dst):
        raise CompressionError(f"{dst}: is the input file itself; unpack to another path")
    declared = frame_content_size(src)
    if declared > max_bytes:
        raise CompressionError(f"{src}: declares {declared:,} unpacked bytes, more than the {max_bytes:,}-byte limit; "
                               "refusing (raise the limit if this is expected)")

    def check(staged: Path) -> None:
        try:
            LdsReader(staged).close()
        except CompressionError:
            raise
        except LdsError as exc:  # named for the user
            raise CompressionError(f"{src}: unpacks to something that is not a valid .lds ({exc}); "
                                   f"{dst} was left as it was") from None

    return atomic_write(dst, iter_lds(src, declared, progress), check=check)
