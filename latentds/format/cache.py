"""The local cache of remote .lds files: checked byte ranges (:class:`RemoteCache`) and, for a server that ignores
byte ranges, whole-file copies (:class:`DownloadCache`), under ``$LATENTDS_CACHE_DIR/remote`` (default
``~/.cache/latentds/remote``; ``LATENTDS_REMOTE_CACHE=0`` turns it off).

``python -m http.server``, the server most people try first, answers a ``Range`` request with the whole file
(HTTP 200). Instead of refusing, :class:`HTTPSource` (``remote.py``) streams that answer into
``<cache>/downloads/<sha256 of the URL>.lds`` (a staging file renamed into place when complete; memory stays at
one piece), with a sidecar ``.json`` holding the URL, the size, the server's ``Last-Modified``/``ETag`` and, once
the reader has checked every hash of the copy, its manifest sha256. A later open asks the server whether the file
changed (``If-Modified-Since``/``If-None-Match``): HTTP 304 reuses the checked copy, so DataLoader workers and a
second epoch download nothing. A copy is used only if it is a regular file owned by this user, of the size the
sidecar records. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from latentds.cachedir import ENV_CACHE, cache_home
from latentds.errors import RemoteReadError, RemoteRefusedError
from latentds.format.render import mib, safe
from latentds.format.staging import atomic_write

__all__ = ["DownloadCache", "RemoteCache", "cache_enabled", "cache_root"]

logger = logging.getLogger(__name__)
PIECE = 1 << 20  # bytes per read from the socket and write to the file


def cache_enabled() -> bool:
    return os.environ.get("LATENTDS_REMOTE_CACHE", "1") != "0"


def cache_root() -> Path:
    explicit = os.environ.get(ENV_CACHE, "")
    return Path(explicit) / "remote" if explicit else cache_home() / "remote"


class RemoteCache:
    """Checked byte ranges of one file, named by what they are and keyed by the file's manifest sha256.

    Only ranges whose sha256 matched the manifest are stored, and each is checked again when read back, so
    the cache can be shared between processes and never serves other bytes than the file's. A read opens only
    a regular file owned by this user, never through a symbolic link (a FIFO, a device or a link to /dev/zero
    planted in the folder is skipped), and reads exactly the size the manifest gives for that range.
    """

    def __init__(self, manifest_sha256: str, root: Path | None = None):
        self.dir = (root or cache_root()) / manifest_sha256
        self.enabled = cache_enabled()

    def get(self, key: str, size: int, check: str | Callable[[bytes], bool] | None = None) -> bytes | None:
        """The cached bytes under ``key`` if they are a regular file of exactly ``size`` bytes that passes
        ``check`` (their sha256, or a predicate), else None."""
        if not self.enabled:
            return None
        nofollow = getattr(os, "O_NOFOLLOW", 0)
        try:
            dir_fd = os.open(self.dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | nofollow)
        except OSError:
            return None
        try:
            fd = os.open(key, os.O_RDONLY | nofollow | getattr(os, "O_NONBLOCK", 0), dir_fd=dir_fd)
        except OSError:
            os.close(dir_fd)
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != size or st.st_uid != os.getuid():
                return None
            data = bytearray()
            while len(data) < size and (piece := os.read(fd, min(size - len(data), 1 << 20))):
                data += piece
        except OSError:
            return None
        finally:
            os.close(fd)
            os.close(dir_fd)
        if len(data) != size:
            return None
        ok = check is None or (hashlib.sha256(data).hexdigest() == check if isinstance(check, str) else check(bytes(data)))
        return bytes(data) if ok else None

    def put(self, key: str, data: bytes) -> None:
        if not self.enabled:
            return
        try:
            atomic_write(self.dir / key, [data])
        except OSError:
            pass  # a read-only home: reads still work, uncached




class DownloadCache:
    """Whole-file copies of URLs whose server ignores ranges, under ``root / "downloads"``."""

    def __init__(self, root: Path, url: str, enabled: bool = True):
        key = hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        self.url, self.enabled = url, enabled
        self.path = root / "downloads" / f"{key}.lds"
        self.meta_path = self.path.with_suffix(".json")

    def meta(self) -> dict[str, Any] | None:
        """The sidecar of a usable copy (regular file, this user's, the recorded size), else None."""
        if not self.enabled:
            return None
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
            st = os.lstat(self.path)
        except (OSError, ValueError):
            return None
        if (not isinstance(meta, dict) or meta.get("url") != self.url or not stat.S_ISREG(st.st_mode)
                or st.st_uid != os.getuid() or st.st_size != meta.get("size")):
            return None
        return meta

    def conditional_headers(self) -> dict[str, str]:
        """Headers that let the server answer 304 when the cached copy is still its file."""
        meta = self.meta()
        if meta is None:
            return {}
        headers = {}
        if isinstance(meta.get("etag"), str):
            headers["If-None-Match"] = meta["etag"]
        if isinstance(meta.get("last_modified"), str):
            headers["If-Modified-Since"] = meta["last_modified"]
        return headers

    def fetch(self, resp: Any, limits: Any, rearm: Callable[[float], None]) -> Path:
        """Stream the body of a 200 answer (the whole file) into the cache; the copy's path.

        ``rearm(seconds)``: gives the download its own deadline, ``limits.deadline_s(size)``. The size must be
        declared (``Content-Length``) and fit the cache's free space; nothing past it is read."""
        if not self.enabled:
            raise RemoteRefusedError(
                f"{safe(self.url)}: the server ignores byte-range requests (it sent the whole file; `python -m "
                "http.server` does this) and LATENTDS_REMOTE_CACHE=0 turns off the cache latentds would download it "
                "into; unset LATENTDS_REMOTE_CACHE, serve the file with a server that honours Range requests "
                "(nginx, Apache, `npx http-server`), or download it (curl -O URL) and open the local file")
        size = _declared_size(resp, self.url)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.path.parent).free
        if size > free:
            raise RemoteRefusedError(f"{safe(self.url)}: the server ignores byte ranges, and downloading the whole "
                                     f"file ({mib(size)}) needs more than the {mib(free)} free in {self.path.parent}; "
                                     "set LATENTDS_CACHE_DIR to a larger disk, or serve the file with Range support")
        logger.info(f"{safe(self.url)}: the server ignores byte-range requests (HTTP 200, as `python -m http.server` "
                    f"answers); downloading the whole file once into the cache ({mib(size)}, {self.path})")
        rearm(limits.deadline_s(size))
        self.meta_path.unlink(missing_ok=True)  # an older copy's sidecar: stale from here on
        atomic_write(self.path, _body(resp, size, self.url))
        meta = {"url": self.url, "size": size, "last_modified": resp.getheader("Last-Modified"),
                "etag": resp.getheader("ETag"), "manifest_sha256": None}
        atomic_write(self.meta_path, [json.dumps(meta).encode()])
        return self.path

    def mark_checked(self, manifest_sha256: str) -> None:
        """Record that every hash of the copy matched its manifest (later opens skip the check)."""
        meta = self.meta()
        if meta is not None:
            atomic_write(self.meta_path, [json.dumps({**meta, "manifest_sha256": manifest_sha256}).encode()])

    def discard(self) -> None:
        self.meta_path.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)


def _declared_size(resp: Any, url: str) -> int:
    text = (resp.getheader("Content-Length") or "").strip()
    if not text.isdigit() or len(text) > 19:
        raise RemoteRefusedError(f"{safe(url)}: the server ignores byte-range requests and does not declare the file's "
                                 f"size (Content-Length {safe(text or 'absent', 40)}); serve the file with a server that "
                                 "honours Range requests, or download it and open the local file")
    return int(text)


def _body(resp: Any, size: int, url: str) -> Iterator[bytes]:
    got = 0
    while got < size:
        piece = resp.read(min(PIECE, size - got))
        if not piece:
            raise RemoteReadError(f"{safe(url)}: the download ended after {got:,} of {size:,} bytes; open it again")
        got += len(piece)
        yield piece
