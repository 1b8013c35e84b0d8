"""`.lds.zst`: one standard zstd frame (content size and checksum required) around a whole .lds file.

Latents barely compress (Gaussian floats), so this is a transport wrapper, not the storage format: the
`zstd` command-line tool unpacks it too, and readers open it transparently (decompressing into memory).

What a reader accepts (spec/FORMAT.md, section "Compressed transport"): exactly one frame, no bytes after
it, a declared content size and a content checksum. Before inflating anything the frame is walked block
by block (headers only), so trailing data, a second frame or a frame without checksum is refused up front;
decompression then runs in bounded output chunks, never producing more than the declared content size, and
an in-memory read also checks the declared content size against the .lds header inside it. Memory stays
within the declared sizes plus one chunk, whatever the compression ratio.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import zstandard

from latentds.errors import CompressionError, LdsNotFoundError
from latentds.format.writer import atomic_write

_CHUNK = 1 << 20  # bytes of output per decompression step (the memory bound above the declared sizes)
_MAGIC = b"\x28\xb5\x2f\xfd"
#: Refuse to inflate more than this to disk (a hostile frame could claim anything).
DEFAULT_MAX_UNPACKED = 64 * 1024**3
#: Refuse to inflate more than this into memory when a .lds.zst is opened directly; unpack larger files first.
DEFAULT_MAX_IN_MEMORY = 8 * 1024**3


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
    """Yield decompressed chunks of at most _CHUNK bytes, never past ``declared`` (``frame_content_size``, which
    the caller has checked against its limit); raise CompressionError on corruption."""
    total, consumed = 0, 0
    try:
        with open(src, "rb") as f:
            reader = zstandard.ZstdDecompressor().stream_reader(f, read_size=1 << 16)
            while chunk := reader.read(_CHUNK):
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


def _iter_lds(src: Path, declared: int, progress: Callable[[int], None] | None) -> Iterator[bytes]:
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


def read_zst(src: str | os.PathLike, max_bytes: int = DEFAULT_MAX_IN_MEMORY) -> bytearray:
    """Decompress a .lds.zst into memory: at most ``max_bytes``, and only as much as its .lds header declares."""
    src = Path(src)
    if not src.is_file():
        raise LdsNotFoundError(f"{src}: no such file")
    declared = frame_content_size(src)
    if declared > max_bytes:
        raise CompressionError(f"{src}: unpacks to {declared:,} bytes, more than the {max_bytes:,} read into memory; "
                               f"run `latentds unpack {src} FILE.lds` and open the .lds")
    out, pos = None, 0
    for chunk in _iter_lds(src, declared, None):
        if out is None:  # sized once the header agreed with the frame: no regrowth, no final copy
            out = bytearray(declared)
        out[pos : pos + len(chunk)] = chunk
        pos += len(chunk)
    return out if out is not None else bytearray()


def _check_declared_size(src: Path, head: bytearray, declared: int, final: bool = False) -> bool:
    """Once the .lds header is in ``head``: its tensors must end exactly where the frame's content does.
    Returns False while more bytes are needed (``final``: none will come)."""
    from latentds.format import spec

    header_len = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else -1
    if not 2 <= header_len <= spec.MAX_HEADER_BYTES or 8 + header_len > declared:
        raise CompressionError(f"{src}: the packed file's header length {header_len:,} is impossible for a .lds of "
                               f"{declared:,} bytes; not a .lds or corrupt")
    if len(head) < 8 + header_len:
        if final:
            raise CompressionError(f"{src}: the packed file ends inside its header; not a .lds or corrupt")
        return False
    try:
        header = json.loads(bytes(head[8 : 8 + header_len]))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
        raise CompressionError(f"{src}: the packed file's header is not safetensors JSON; not a .lds") from None
    if 8 + header_len + max(ends, default=0) != declared:
        raise CompressionError(f"{src}: the packed .lds declares {8 + header_len + max(ends, default=0):,} bytes but "
                               f"the frame {declared:,}; corrupt")
    return True


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def pack(
    src: str | os.PathLike, dst: str | os.PathLike, level: int = 10, progress: Callable[[int], None] | None = None
) -> Path:
    """Compress a .lds into a .lds.zst (zstd frame with content size and checksum), atomically."""
    from latentds.format.reader import LdsReader

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
            while block := f.read(_CHUNK):
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
    from latentds.format.reader import LdsReader

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
        except Exception as exc:  # the library's LdsError subclasses, named for the user
            raise CompressionError(f"{src}: unpacks to something that is not a valid .lds ({exc}); "
                                   f"{dst} was left as it was") from None

    return atomic_write(dst, _iter_lds(src, declared, progress), check=check)
