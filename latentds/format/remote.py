"""Reading a .lds that lives elsewhere: byte ranges, checked against the manifest's hashes on arrival, cached.

A URL (``https://...``, ``hf://...``, ``s3://...``) opens like a path. The reader asks a source for byte
ranges only: the header first (8 bytes for its length, then exactly the header: two requests),
then, when asked, the generator and labels (one request for the span they occupy) and the latent row chunks a
read touches (``ranged.py``). Every range is checked against the sha256 the (hash-checked) manifest gives for it
before use, so a server can withhold data but never change it; checked ranges are kept in a local cache keyed by
the manifest's sha256 (``$LATENTDS_CACHE_DIR/remote``, default ``~/.cache/latentds/remote``), so a second epoch
or a second process reads nothing again.

``http://`` and ``https://`` use the standard library's ``http.client`` (nothing to install, safe in forked
DataLoader workers), every server treated as a suspect: each request has an overall deadline (``HTTPLimits``:
a base plus its size at a minimum transfer rate, retries and redirects included) enforced by a watchdog that
closes the socket, so a server that drips bytes, stalls or never answers costs at most that; redirects stay on
the same origin unless allowed; and every protocol failure (a bad status line, too many headers, a broken
chunked body, a 5,000-digit Content-Range) is a :class:`RemoteReadError`. Every other scheme goes through fsspec
(``pip install 'latentds[remote]'``, plus the scheme's own package: ``huggingface_hub`` for ``hf://``, ``s3fs``
for ``s3://``). ``file://`` is a local path.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import stat
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from latentds.cachedir import ENV_CACHE, cache_home
from latentds.errors import LdsError, LdsNotFoundError, UsageError
from latentds.format.render import safe
from latentds.format.staging import atomic_write
from latentds.version import __version__

__all__ = ["HTTPLimits", "HTTPSource", "RangeSource", "RemoteCache", "RemoteReadError", "is_url", "local_path",
           "open_source"]
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19})")
_REDIRECTS = (301, 302, 303, 307, 308)


class RemoteReadError(LdsError):
    """A remote file could not be read (network failure, a server that does not serve byte ranges, a protocol
    error, a request past its deadline, a redirect to another origin)."""


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


def _env_float(name: str, default: float, lo: float) -> float:
    text = os.environ.get(name, "")
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= lo or value == float("inf"):
        raise UsageError(f"${name}={safe(text, 40)}: expected a finite number >= {lo:g} (default {default:g})")
    return value


@dataclass(frozen=True)
class HTTPLimits:
    """How long one range request may take: ``timeout_s`` plus its size at ``min_rate`` bytes/s, retries and
    redirects included (``$LATENTDS_HTTP_TIMEOUT``, default 30 s; ``$LATENTDS_HTTP_MIN_RATE``, default 64 KiB/s).
    ``cross_origin``: follow redirects to another scheme, host or port (``$LATENTDS_HTTP_REDIRECTS=any``; by default
    only same-origin redirects are followed, and never from https to http)."""

    timeout_s: float = 30.0
    min_rate: float = 65536.0
    retries: int = 2
    cross_origin: bool = False
    max_redirects: int = 5

    @classmethod
    def from_env(cls) -> HTTPLimits:
        return cls(timeout_s=_env_float("LATENTDS_HTTP_TIMEOUT", cls.timeout_s, 0.001),
                   min_rate=_env_float("LATENTDS_HTTP_MIN_RATE", cls.min_rate, 1.0),
                   cross_origin=os.environ.get("LATENTDS_HTTP_REDIRECTS", "") == "any")

    def deadline_s(self, nbytes: int) -> float:
        return self.timeout_s + nbytes / self.min_rate


class _Retry(Exception):
    """A transient failure (connection refused or reset, HTTP 5xx): try again while the deadline allows."""


def _origin(parts: urllib.parse.SplitResult) -> tuple[str, str, int | None]:
    default = 443 if parts.scheme == "https" else 80
    try:
        port = parts.port or default
    except ValueError:
        port = None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


class HTTPSource:
    """Range requests over http(s) with ``http.client``, each bounded by a deadline (:class:`HTTPLimits`)."""

    def __init__(self, url: str, limits: HTTPLimits | None = None):
        self.url = url
        self.limits = limits or HTTPLimits.from_env()
        self.size: int | None = None
        self.requests = 0
        self.bytes_read = 0
        self._target = url  # where a same-origin redirect pointed: later requests go there directly

    def read(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        budget = self.limits.deadline_s(end - start)
        deadline = time.monotonic() + budget
        for attempt in range(self.limits.retries + 1):
            try:
                return self._follow(start, end, deadline, budget)
            except _Retry as exc:
                left = deadline - time.monotonic()
                if attempt == self.limits.retries or left <= 0:
                    raise RemoteReadError(f"{safe(self.url)}: cannot read ({safe(exc, 160)})") from None
                time.sleep(min(0.5 * 2**attempt, left))
        raise RemoteReadError(f"{safe(self.url)}: cannot read")  # not reached: the loop returns or raises

    def _follow(self, start: int, end: int, deadline: float, budget: float) -> bytes:
        """One attempt: the request, then same-origin redirects (at most ``max_redirects``)."""
        url = self._target
        for _ in range(self.limits.max_redirects + 1):
            answer = self._request(url, start, end, deadline, budget)
            if isinstance(answer, bytes):
                self._target = url
                return answer
            url = self._redirect(url, answer)
        raise RemoteReadError(f"{safe(self.url)}: more than {self.limits.max_redirects} redirects")

    def _redirect(self, url: str, location: str) -> str:
        new = urllib.parse.urljoin(url, location)
        old_parts, new_parts = urllib.parse.urlsplit(url), urllib.parse.urlsplit(new)
        if new_parts.scheme.lower() not in ("http", "https") or (old_parts.scheme == "https" and new_parts.scheme != "https"):
            raise RemoteReadError(f"{safe(self.url)}: redirected to {safe(new)}, which latentds does not follow "
                                  "(only http(s), never from https to http)")
        if _origin(old_parts) != _origin(new_parts) and not self.limits.cross_origin:
            raise RemoteReadError(f"{safe(self.url)}: redirected to another origin ({safe(new)}); open that URL "
                                  "directly, or set LATENTDS_HTTP_REDIRECTS=any to follow such redirects")
        return new

    def _request(self, url: str, start: int, end: int, deadline: float, budget: float) -> bytes | str:
        """The bytes, or the Location of a redirect. Every failure of the server or the network is raised as
        RemoteReadError (final) or _Retry (transient)."""
        parts = urllib.parse.urlsplit(url)
        left = deadline - time.monotonic()
        if left <= 0:
            raise RemoteReadError(f"{safe(self.url)}: no answer within {budget:.1f} s (bytes {start}-{end - 1}; "
                                  "LATENTDS_HTTP_TIMEOUT and LATENTDS_HTTP_MIN_RATE set the deadline)")
        conn_type = http.client.HTTPSConnection if parts.scheme.lower() == "https" else http.client.HTTPConnection
        self.requests += 1
        conn = None
        watchdog = None
        try:
            conn = conn_type(parts.hostname or "", parts.port, timeout=left)
            watchdog = threading.Timer(left, _abort, (conn,))
            watchdog.daemon = True
            watchdog.start()
            path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
            conn.request("GET", path, headers={"Range": f"bytes={start}-{end - 1}",
                                               "User-Agent": f"latentds/{__version__}"})
            resp = conn.getresponse()
            return self._answer(resp, start, end, deadline, budget)
        except (LdsError, _Retry):
            raise
        except Exception as exc:  # noqa: BLE001 - http.client, ssl and socket raise a dozen types; all mean one thing
            if time.monotonic() >= deadline:
                raise RemoteReadError(_late(self.url, budget, start, end)) from None
            if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)) and not isinstance(
                    exc, http.client.RemoteDisconnected):
                raise _Retry(f"{type(exc).__name__}: {exc}") from None
            raise RemoteReadError(f"{safe(self.url)}: the server's answer is not valid HTTP "
                                  f"({type(exc).__name__}: {safe(exc, 120)})") from None
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if conn is not None:
                conn.close()

    def _answer(self, resp: http.client.HTTPResponse, start: int, end: int, deadline: float,
                budget: float) -> bytes | str:
        status = resp.status
        if status in _REDIRECTS:
            location = resp.getheader("Location")
            if not location:
                raise RemoteReadError(f"{safe(self.url)}: HTTP {status} without a Location")
            return location
        if status in (404, 410):
            raise LdsNotFoundError(f"{safe(self.url)}: not found (HTTP {status})")
        if status == 416:  # a range past the end: the file is shorter than its header says
            raise RemoteReadError(f"{safe(self.url)}: bytes {start}-{end - 1} lie past the end of the file; "
                                  "it is truncated or changed while being read")
        if status >= 500:
            raise _Retry(f"HTTP {status} {safe(resp.reason, 60)}")
        if status != 206:
            raise RemoteReadError(
                f"{safe(self.url)}: the server answered HTTP {status} {safe(resp.reason, 60)} to a byte-range "
                "request; latentds reads remote files in ranges (HTTP 206). Download the file and open it locally")
        m = _CONTENT_RANGE.fullmatch((resp.getheader("Content-Range") or "").strip())
        total = int(m.group(3)) if m else -1
        if m is None or not 0 < total < 2**63 or int(m.group(1)) != start:
            raise RemoteReadError(f"{safe(self.url)}: the server's partial answer has no usable Content-Range for "
                                  f"bytes {start}-{end - 1} (found {safe(resp.getheader('Content-Range'), 60)}); "
                                  "download the file and open it locally")
        if self.size is not None and total != self.size:
            raise RemoteReadError(f"{safe(self.url)}: the file's size changed from {self.size:,} to {total:,} "
                                  "while it was read; open it again")
        self.size = total
        want = min(end, total) - start
        data = bytearray()
        while len(data) < want:
            piece = resp.read(min(want - len(data), 1 << 20))
            if not piece:
                break
            data += piece
        self.bytes_read += len(data)
        if len(data) != want:
            if time.monotonic() >= deadline:  # the watchdog closed the socket on a stalled body
                raise RemoteReadError(_late(self.url, budget, start, end))
            raise RemoteReadError(f"{safe(self.url)}: asked for {want} bytes at {start}, got {len(data)}")
        return bytes(data)


def _late(url: str, budget: float, start: int, end: int) -> str:
    return (f"{safe(url)}: no complete answer within {budget:.1f} s (bytes {start}-{end - 1}); the server is too slow "
            "or stalled. LATENTDS_HTTP_TIMEOUT and LATENTDS_HTTP_MIN_RATE set the deadline")


def _abort(conn: http.client.HTTPConnection) -> None:
    """The watchdog: shut the socket down, which wakes a read blocked on it (a dripping or silent server)."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class FsspecSource:
    """Any fsspec URL (``hf://``, ``s3://``, ``gs://``, ...), read with ``cat_file`` ranges."""

    def __init__(self, url: str):
        try:
            import fsspec
        except ImportError:
            raise UsageError(f"{safe(url)}: reading this URL needs fsspec: pip install 'latentds[remote]'") from None
        self.url = url
        try:
            self._fs, self._path = fsspec.core.url_to_fs(url)
            self.size = int(self._fs.size(self._path))
        except ImportError as exc:  # the scheme's own package (huggingface_hub, s3fs, ...)
            raise UsageError(f"{safe(url)}: {safe(exc, 200)}") from None
        except FileNotFoundError:
            raise LdsNotFoundError(f"{safe(url)}: not found") from None
        except Exception as exc:  # noqa: BLE001 - each filesystem raises its own (httpx, botocore, ...)
            raise RemoteReadError(f"{safe(url)}: cannot read ({type(exc).__name__}: {safe(exc, 200)})") from None
        self.requests = 1
        self.bytes_read = 0

    def read(self, start: int, end: int) -> bytes:
        try:
            self.requests += 1
            data = self._fs.cat_file(self._path, start=start, end=min(end, self.size))
        except Exception as exc:  # noqa: BLE001 - each filesystem raises its own (httpx, botocore, ...)
            raise RemoteReadError(f"{safe(self.url)}: cannot read bytes {start}-{end - 1} "
                                  f"({type(exc).__name__}: {safe(exc, 200)})") from None
        if not isinstance(data, bytes) or len(data) > end - start:
            raise RemoteReadError(f"{safe(self.url)}: the filesystem returned {len(data) if isinstance(data, bytes) else '?'} "
                                  f"bytes for a {end - start}-byte range")
        self.bytes_read += len(data)
        return data


def open_source(url: str) -> RangeSource:
    scheme = urllib.parse.urlparse(url).scheme.lower()
    return HTTPSource(url) if scheme in ("http", "https") else FsspecSource(url)


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
        self.enabled = os.environ.get("LATENTDS_REMOTE_CACHE", "1") != "0"

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
