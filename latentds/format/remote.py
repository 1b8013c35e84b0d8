"""Reading a .lds that lives elsewhere: byte ranges, checked against the manifest's hashes on arrival, cached.

A URL (``https://...``, ``hf://...``, ``s3://...``) opens like a path. The reader asks a source for byte
ranges only: the header first (8 bytes for its length, then exactly the header: two requests),
then, when asked, the generator and labels (one request for the span they occupy) and the latent row chunks a
read touches. Every range is checked against the sha256 the (hash-checked) manifest gives for it before use,
so a server can withhold data but never change it; checked ranges are kept in a local cache keyed by the
manifest's sha256 (``$LATENTDS_CACHE_DIR/remote``, default ``~/.cache/latentds/remote``), so a second epoch or
a second process reads nothing again.

``http://`` and ``https://`` use the standard library (Range requests; nothing to install, safe in forked
DataLoader workers); every other scheme goes through fsspec (``pip install 'latentds[remote]'``, plus the
scheme's own package: ``huggingface_hub`` for ``hf://``, ``s3fs`` for ``s3://``). ``file://`` is a local path.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from latentds.errors import LdsError, LdsNotFoundError, UsageError

__all__ = ["HTTPSource", "RangeSource", "RemoteCache", "RemoteReadError", "is_url", "local_path", "open_source"]
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class RemoteReadError(LdsError):
    """A remote file could not be read (network failure, a server that does not serve byte ranges)."""


def is_url(path: object) -> bool:
    """True for ``scheme://...`` strings (``file://`` included), False for plain paths."""
    return isinstance(path, str) and bool(_URL.match(path))


def local_path(url: str) -> Path | None:
    """The path of a ``file://`` URL, None for every other URL."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "file":
        return None
    return Path(urllib.request.url2pathname(parsed.path))


class RangeSource(Protocol):
    url: str
    size: int | None  # known after the first read
    requests: int
    bytes_read: int

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` (fewer only at the end of the file)."""


class HTTPSource:
    """Range requests over http(s) with the standard library; a few retries on transient failures."""

    def __init__(self, url: str, timeout: float = 60.0, retries: int = 3):
        self.url, self.timeout, self.retries = url, timeout, retries
        self.size: int | None = None
        self.requests = 0
        self.bytes_read = 0

    def read(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        from latentds.version import __version__

        req = urllib.request.Request(
            self.url, headers={"Range": f"bytes={start}-{end - 1}", "User-Agent": f"latentds/{__version__}"}
        )
        for attempt in range(self.retries + 1):
            try:
                self.requests += 1
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    if resp.status != 206:
                        raise RemoteReadError(
                            f"{self.url}: the server answered HTTP {resp.status} to a byte-range request; latentds "
                            "reads remote files in ranges (HTTP 206). Download the file and open it locally"
                        )
                    total = _content_range_total(resp.headers.get("Content-Range", ""))
                    if total is None:
                        raise RemoteReadError(f"{self.url}: the server's partial answer has no usable Content-Range "
                                              "header (the file's size); download the file and open it locally")
                    self.size = total
                    data = resp.read(end - start)
                self.bytes_read += len(data)
                want = end - start if self.size is None else min(end, self.size) - start
                if len(data) != want:
                    raise RemoteReadError(f"{self.url}: asked for {want} bytes at {start}, got {len(data)}")
                return data
            except urllib.error.HTTPError as exc:
                if exc.code in (404, 410):
                    raise LdsNotFoundError(f"{self.url}: not found (HTTP {exc.code})") from None
                if exc.code == 416:  # a range past the end: the file is shorter than its header says
                    raise RemoteReadError(f"{self.url}: bytes {start}-{end - 1} lie past the end of the file; "
                                          "it is truncated or changed while being read") from None
                if exc.code < 500 or attempt == self.retries:
                    raise RemoteReadError(f"{self.url}: HTTP {exc.code} {exc.reason}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt == self.retries:
                    reason = getattr(exc, "reason", exc)
                    raise RemoteReadError(f"{self.url}: cannot read ({reason})") from None
            time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")


def _content_range_total(value: str) -> int | None:
    m = re.fullmatch(r"bytes \d+-\d+/(\d+)", value.strip())
    return int(m.group(1)) if m else None


class FsspecSource:
    """Any fsspec URL (``hf://``, ``s3://``, ``gs://``, ...), read with ``cat_file`` ranges."""

    def __init__(self, url: str):
        try:
            import fsspec
        except ImportError:
            raise UsageError(f"{url}: reading this URL needs fsspec: pip install 'latentds[remote]'") from None
        self.url = url
        try:
            self._fs, self._path = fsspec.core.url_to_fs(url)
            self.size = int(self._fs.size(self._path))
        except ImportError as exc:  # the scheme's own package (huggingface_hub, s3fs, ...)
            raise UsageError(f"{url}: {exc}") from None
        except FileNotFoundError:
            raise LdsNotFoundError(f"{url}: not found") from None
        except Exception as exc:  # noqa: BLE001 - each filesystem raises its own (httpx, botocore, ...)
            raise RemoteReadError(f"{url}: cannot read ({type(exc).__name__}: {exc})") from None
        self.requests = 1
        self.bytes_read = 0

    def read(self, start: int, end: int) -> bytes:
        try:
            self.requests += 1
            data = self._fs.cat_file(self._path, start=start, end=min(end, self.size))
        except Exception as exc:  # noqa: BLE001 - each filesystem raises its own (httpx, botocore, ...)
            raise RemoteReadError(f"{self.url}: cannot read bytes {start}-{end - 1} ({type(exc).__name__}: {exc})") from None
        self.bytes_read += len(data)
        return data


def open_source(url: str) -> RangeSource:
    scheme = urllib.parse.urlparse(url).scheme.lower()
    return HTTPSource(url) if scheme in ("http", "https") else FsspecSource(url)


def cache_root() -> Path:
    from latentds.cachedir import ENV_CACHE, cache_home

    explicit = os.environ.get(ENV_CACHE, "")
    return Path(explicit) / "remote" if explicit else cache_home() / "remote"


class RemoteCache:
    """Checked byte ranges of one file, named by what they are and keyed by the file's manifest sha256.

    Only ranges whose sha256 matched the manifest are stored, and each is checked again when read back, so
    the cache can be shared between processes and never serves other bytes than the file's.
    """

    def __init__(self, manifest_sha256: str, root: Path | None = None):
        self.dir = (root or cache_root()) / manifest_sha256
        self.enabled = os.environ.get("LATENTDS_REMOTE_CACHE", "1") != "0"

    def get(self, key: str, check: str | Callable[[bytes], bool]) -> bytes | None:
        """The cached bytes under ``key`` if they pass ``check`` (their sha256, or a predicate), else None."""
        if not self.enabled:
            return None
        try:
            data = (self.dir / key).read_bytes()
        except OSError:
            return None
        ok = hashlib.sha256(data).hexdigest() == check if isinstance(check, str) else check(data)
        return data if ok else None

    def put(self, key: str, data: bytes) -> None:
        if not self.enabled:
            return
        try:
            from latentds.format.staging import atomic_write

            atomic_write(self.dir / key, [data])
        except OSError:
            pass  # a read-only home: reads still work, uncached
