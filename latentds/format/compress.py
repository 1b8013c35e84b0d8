"""`.lds.zst`: one standard zstd frame (content size and checksum required) around a whole .lds file.

Latents barely compress (Gaussian floats), so this is a transport wrapper, not the storage format: the
`zstd` command-line tool unpacks it too, and readers open it transparently: a small one is inflated into memory,
a large one (over ``IN_MEMORY_BYTES``) into an unlinked temporary file that is memory-mapped, so memory stays
bounded by one step whatever the file declares. ``pack``/``unpack`` (which read .lds files back) live in
``packing.py``: this module needs no reader.

What a reader accepts (spec/FORMAT.md, section "Compressed transport"): exactly one frame, no bytes after
it, a declared content size and a content checksum. Before inflating anything the frame is walked block
by block (headers only), so trailing data, a second frame or a frame without checksum is refused up front;
decompression then runs in bounded output chunks, never producing more than the declared content size, and
an in-memory read also checks the declared content size against the .lds header inside it. Memory stays
within the declared sizes plus one chunk, whatever the compression ratio.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import zstandard

from latentds.errors import CompressionError, LatentdsError, LdsNotFoundError
from latentds.format import spec
from latentds.format.header import parse_header

CHUNK = 1 << 20  # bytes of output per decompression step (the memory bound above the declared sizes)
_MAGIC = b"\x28\xb5\x2f\xfd"
#: Refuse to inflate more than this to disk (a hostile frame could claim anything).
DEFAULT_MAX_UNPACKED = 64 * 1024**3
#: Refuse to inflate more than this when a .lds.zst is opened directly (to a temporary file); unpack larger files.
DEFAULT_MAX_IN_MEMORY = 8 * 1024**3
#: A .lds.zst opened directly is inflated into memory up to this size, into a temporary file above it.
IN_MEMORY_BYTES = 64 * 2**20


def frame_content_size(src: str | os.PathLike) -> int:
    """Check that ``src`` is one zstd frame with content size and checksum and nothing after it; return the
    declared content size. Reads only the frame and block headers."""
    src = Path(src)
    size = src.stat().st_size
    with open(src, "rb") as f:
        head = f.read(18)  # the largest frame header
        if head[:4] == _MAGIC and len(head) < 6:
            raise CompressionError(f"{src}: the zstd frame ends inside its header; the file is truncated")
        if len(head) < 6 or head[:4] != _MAGIC:
            raise CompressionError(f"{src}: not a zstd frame (bad magic number); a .lds.zst comes from `latentds pack`")
        try:
            params = zstandard.get_frame_parameters(head)
            header_size = zstandard.frame_header_size(head)
        except zstandard.ZstdError as exc:
            raise CompressionError(f"{src}: corrupt zstd frame header ({exc})") from None
        if params.content_size == zstandard.CONTENTSIZE_UNKNOWN:
            raise CompressionError(f"{src}: the zstd frame does not declare its content size; repack it with "
                                   "`latentds pack` (or `zstd` with content size)")
        if not params.has_checksum:
            raise CompressionError(f"{src}: the zstd frame has no content checksum; repack it with `latentds pack`")
        pos = header_size
        while True:  # block headers: 3 bytes little-endian, bit 0 last block, bits 1-2 type, bits 3.. size
            f.seek(pos)
            raw = f.read(3)
            if len(raw) < 3:
                raise CompressionError(f"{src}: the zstd frame ends early; the file is truncated. Fetch it again.")
            value = struct.unpack("<I", raw + b"\0")[0]
            last, kind, block_size = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3:
                raise CompressionError(f"{src}: corrupt zstd block (reserved block type)")
            pos += 3 + (1 if kind == 1 else block_size)  # an RLE block stores one byte
            if pos > size:
                raise CompressionError(f"{src}: the zstd frame ends early; the file is truncated. Fetch it again.")
            if last:
                break
        pos += 4  # the content checksum
    if pos > size:
        raise CompressionError(f"{src}: the zstd frame ends early; the file is truncated. Fetch it again.")
    if pos < size:
        raise CompressionError(f"{src}: {size - pos} bytes after the zstd frame (trailing data or a second frame); "
                               "a .lds.zst is exactly one frame. Fetch it again.")
    return int(params.content_size)


def _iter_unpacked(src: Path, declared: int, progress: Callable[[int], None] | None) -> Iterator[bytes]:
    """Yield decompressed chunks of at most CHUNK bytes, never past ``declared`` (``frame_content_size``, which
    the caller has checked against its limit); raise CompressionError on corruption."""
    total, consumed = 0, 0
    try:
        with open(src, "rb") as f:
            reader = zstandard.ZstdDecompressor().stream_reader(f, read_size=1 << 16)
            while chunk := reader.read(CHUNK):
                total += len(chunk)
                if total > declared:
                    raise CompressionError(f"{src}: inflates past its declared content size {declared:,}; corrupt")
                if progress:  # input bytes consumed since the last call
                    progress(f.tell() - consumed)
                    consumed = f.tell()
                yield chunk
    except zstandard.ZstdError as exc:
        raise CompressionError(f"{src}: not a valid zstd stream or corrupt ({exc}); fetch the file again") from None
    if total != declared:
        raise CompressionError(f"{src}: inflates to {total:,} bytes but declares {declared:,}; the file is corrupt")


def iter_lds(src: Path, declared: int, progress: Callable[[int], None] | None) -> Iterator[bytes]:
    """``_iter_unpacked``, holding output back until the packed .lds header has arrived and agrees with the
    frame's declared size: a frame that is no .lds is refused after its first step, not after inflating all of it."""
    head = bytearray()
    checked = False
    for chunk in _iter_unpacked(src, declared, progress):
        if checked:
            yield chunk
            continue
        head += chunk
        if len(head) >= 8 and _check_declared_size(src, head, declared):
            checked = True
            yield bytes(head)
            head = bytearray()
    if not checked:
        _check_declared_size(src, head, declared, final=True)
        yield bytes(head)


def read_zst(src: str | os.PathLike, max_bytes: int = DEFAULT_MAX_IN_MEMORY) -> bytearray | mmap.mmap:
    """Decompress a .lds.zst: at most ``max_bytes``, and only as much as its .lds header declares. Up to
    ``IN_MEMORY_BYTES`` into a bytearray; above that into an unlinked temporary file, returned memory-mapped
    (read-only), so a large or hostile frame costs disk, never more than one 1 MiB step of memory."""
    src = Path(src)
    if not src.is_file():
        raise LdsNotFoundError(f"{src}: no such file")
    declared = frame_content_size(src)
    if declared > max_bytes:
        raise CompressionError(f"{src}: unpacks to {declared:,} bytes, more than the {max_bytes:,} read directly; "
                               f"run `latentds unpack {src} FILE.lds` and open the .lds")
    if declared > IN_MEMORY_BYTES:
        return _inflate_to_temp(src, declared)
    out, pos = None, 0
    for chunk in iter_lds(src, declared, None):
        if out is None:  # sized once the header agreed with the frame: no regrowth, no final copy
            out = bytearray(declared)
        out[pos : pos + len(chunk)] = chunk
        pos += len(chunk)
    return out if out is not None else bytearray()


def _inflate_to_temp(src: Path, declared: int) -> mmap.mmap:
    """Inflate into an unlinked temporary file (gone when the process ends, however it ends) and map it."""
    with tempfile.TemporaryFile(prefix="latentds-zst-") as f:
        try:
            for chunk in iter_lds(src, declared, None):
                f.write(chunk)
            f.flush()
        except OSError as exc:  # a full disk
            raise CompressionError(f"{src}: cannot inflate its {declared:,} bytes to a temporary file ({exc}); "
                                   f"run `latentds unpack {src} FILE.lds` where there is room") from None
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # the mapping keeps the data after close


def _check_declared_size(src: Path, head: bytearray, declared: int, final: bool = False) -> bool:
    """Once the .lds header is in ``head``: it must parse as a .lds header whose tensors end exactly where the
    frame's content does. Returns False while more bytes are needed (``final``: none will come)."""
    header_len = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else -1
    if not 2 <= header_len <= spec.MAX_HEADER_BYTES or 8 + header_len > declared:
        raise CompressionError(f"{src}: the packed file's header length {header_len:,} is impossible for a .lds of "
                               f"{declared:,} bytes; not a .lds or corrupt")
    if len(head) < 8 + header_len:
        if final:
            raise CompressionError(f"{src}: the packed file ends inside its header; not a .lds or corrupt")
        return False
    try:  # the same strict parse as a plain file: offsets are integers, tiled, ending at the declared size
        parse_header(bytes(head[8 : 8 + header_len]), declared - 8 - header_len, "packed .lds")
    except LatentdsError as exc:
        raise CompressionError(f"{src}: the packed .lds does not fit the frame's declared {declared:,} bytes "
                               f"({exc}); not a .lds or corrupt") from None
    return True
