"""Reading a .lds that lives elsewhere: byte ranges, checked against the manifest's hashes on arrival, cached.

A URL (``https://...``, ``hf://...``, ``s3://...``) opens like a path. The reader asks a source for byte
ranges only: the header first (8 bytes for its length, then exactly the header: two requests),
then, when asked, the generator and labels (one request for the span they occupy) and the latent row chunks a
read touches (``ranged.py``). Every range is checked against the sha256 the (hash-checked) manifest gives for it
before use, so a server can withhold data but never change it; checked ranges are kept in a local cache keyed by
the manifest's sha256 (``$LATENTDS_CACHE_DIR/remote``, default ``~/.cache/latentds/remote``; ``cache.py``), so a
second epoch or a second process reads nothing again. A server that ignores ranges (``python -m http.server``
answers HTTP 200 with the whole file) gets one streamed download into that cache instead, reused while the server
says the file has not changed (``cache.DownloadCache``).

``http://`` and ``https://`` use the standard library's ``http.client`` (nothing to install, safe in forked
DataLoader workers), every server treated as a suspect: each request has an overall deadline (``HTTPLimits``:
a base plus its size at a minimum transfer rate, retries and redirects included) enforced by a watchdog that
closes the socket, so a server that drips bytes, stalls or never answers costs at most that; redirects stay on
the same origin unless allowed; and every protocol failure (a bad status line, too many headers, a broken
chunked body, a 5,000-digit Content-Range) is a :class:`RemoteReadError`, with its own subclasses for a server
that cannot be reached (:class:`RemoteUnreachableError`) and one that refuses (:class:`RemoteRefusedError`): the
CLI exits 3 and 4 for them, 2 for a file not found, 1 for a corrupt one. Every other scheme goes through fsspec
(``pip install 'latentds[remote]'``, plus the scheme's own package: ``huggingface_hub`` for ``hf://``, ``s3fs``
for ``s3://``). ``file://`` is a local path.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from latentds.errors import (
    LdsError,
    LdsNotFoundError,
    RemoteReadError,
    RemoteRefusedError,
    RemoteUnreachableError,
    UsageError,
)
from latentds.format.cache import DownloadCache, RemoteCache, cache_enabled, cache_root
from latentds.format.render import safe
from latentds.version import __version__

__all__ = ["HTTPLimits", "HTTPSource", "RangeSource", "RemoteCache", "RemoteReadError", "RemoteRefusedError",
           "RemoteUnreachableError", "is_url", "local_path", "open_source"]
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19})")
_REDIRECTS = (301, 302, 303, 307, 308)


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
    """A transient failure (connection refused or reset, HTTP 5xx): try again while the deadline allows.
    ``unreachable``: no server answered (as opposed to one that answered with an error)."""

    def __init__(self, message: str, unreachable: bool):
        super().__init__(message)
        self.unreachable = unreachable


class _Watchdog:
    """Shuts a connection's socket down when its deadline passes (see ``_abort``); re-armed for a download."""

    def __init__(self, conn: http.client.HTTPConnection):
        self.conn, self.timer = conn, None

    def arm(self, seconds: float) -> None:
        self.cancel()
        self.timer = threading.Timer(seconds, _abort, (self.conn,))
        self.timer.daemon = True
        self.timer.start()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


def _origin(parts: urllib.parse.SplitResult) -> tuple[str, str, int | None]:
    default = 443 if parts.scheme == "https" else 80
    try:
        port = parts.port or default
    except ValueError:
        port = None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


class HTTPSource:
    """Range requests over http(s) with ``http.client``, each bounded by a deadline (:class:`HTTPLimits`).

    A server that ignores ranges (HTTP 200 with the whole file, as ``python -m http.server`` answers) gets one
    streamed download into the cache instead (``download.py``); ``local_copy`` is then that file's path, and
    ``fresh`` says whether it was downloaded now (its hashes not yet checked)."""

    def __init__(self, url: str, limits: HTTPLimits | None = None):
        self.url = url
        self.limits = limits or HTTPLimits.from_env()
        self.size: int | None = None
        self.requests = 0
        self.bytes_read = 0
        self.local_copy: Path | None = None
        self.fresh = False
        self.downloads = DownloadCache(cache_root(), url, cache_enabled())
        self._target = url  # where a same-origin redirect pointed: later requests go there directly

    def read(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        if self.local_copy is not None:
            with open(self.local_copy, "rb") as f:
                f.seek(start)
                return f.read(end - start)
        budget = self.limits.deadline_s(end - start)
        deadline = time.monotonic() + budget
        for attempt in range(self.limits.retries + 1):
            try:
                return self._follow(start, end, deadline, budget)
            except _Retry as exc:
                pause = 0.5 * 2**attempt
                if attempt == self.limits.retries or time.monotonic() + pause >= deadline:
                    if exc.unreachable:
                        raise RemoteUnreachableError(
                            f"{safe(self.url)}: cannot reach the server ({safe(exc, 160)}); check the URL and that the "
                            "server is running") from None
                    raise RemoteReadError(f"{safe(self.url)}: cannot read ({safe(exc, 160)})") from None
                time.sleep(pause)
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
            raise RemoteRefusedError(f"{safe(self.url)}: redirected to {safe(new)}, which latentds does not follow "
                                     "(only http(s), never from https to http)")
        if _origin(old_parts) != _origin(new_parts) and not self.limits.cross_origin:
            raise RemoteRefusedError(f"{safe(self.url)}: redirected to another origin ({safe(new)}); open that URL "
                                     "directly, or set LATENTDS_HTTP_REDIRECTS=any to follow such redirects")
        return new

    def _request(self, url: str, start: int, end: int, deadline: float, budget: float) -> bytes | str:
        """The bytes, or the Location of a redirect. Every failure of the server or the network is raised as
        RemoteReadError (final) or _Retry (transient)."""
        parts = urllib.parse.urlsplit(url)
        left = deadline - time.monotonic()
        if left <= 0:
            raise RemoteUnreachableError(f"{safe(self.url)}: no answer within {budget:.1f} s (bytes {start}-{end - 1}; "
                                         "LATENTDS_HTTP_TIMEOUT and LATENTDS_HTTP_MIN_RATE set the deadline)")
        conn_type = http.client.HTTPSConnection if parts.scheme.lower() == "https" else http.client.HTTPConnection
        self.requests += 1
        conn = None
        watchdog = None
        headers = {"Range": f"bytes={start}-{end - 1}", "User-Agent": f"latentds/{__version__}"}
        if self.size is None:  # the first request: a copy downloaded earlier may still be the server's file
            headers.update(self.downloads.conditional_headers())
        try:
            conn = conn_type(parts.hostname or "", parts.port, timeout=left)
            watchdog = _Watchdog(conn)
            watchdog.arm(left)
            path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            if resp.status in (200, 304) and self.size is None:
                return self._whole_file(resp, start, end, watchdog)
            return self._answer(resp, start, end, deadline, budget)
        except (LdsError, _Retry):
            raise
        except Exception as exc:  # noqa: BLE001 - http.client, ssl and socket raise a dozen types; all mean one thing
            if time.monotonic() >= deadline:
                raise RemoteUnreachableError(_late(self.url, budget, start, end)) from None
            if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)) and not isinstance(
                    exc, http.client.RemoteDisconnected):
                raise _Retry(f"{type(exc).__name__}: {exc}", unreachable=True) from None
            raise RemoteReadError(f"{safe(self.url)}: the server's answer is not valid HTTP "
                                  f"({type(exc).__name__}: {safe(exc, 120)})") from None
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if conn is not None:
                conn.close()

    def _whole_file(self, resp: http.client.HTTPResponse, start: int, end: int, watchdog: _Watchdog) -> bytes:
        """A 304 (the cached copy is current) or a 200 (ranges ignored: download the file once); then read locally."""
        if resp.status == 304:
            meta = self.downloads.meta()
            if meta is None:  # the copy went away since the request asked about it: ask again, unconditionally
                raise _Retry("HTTP 304 for a cached copy that is gone", unreachable=False)
            self.local_copy = self.downloads.path
        else:
            t0 = time.monotonic()
            try:
                self.local_copy = self.downloads.fetch(resp, self.limits, watchdog.arm)
            except RemoteReadError:
                if watchdog.timer is not None and time.monotonic() - t0 >= watchdog.timer.interval:
                    raise RemoteUnreachableError(f"{safe(self.url)}: the download did not finish within "
                                                 f"{watchdog.timer.interval:.1f} s; LATENTDS_HTTP_TIMEOUT and "
                                                 "LATENTDS_HTTP_MIN_RATE set the deadline") from None
                raise
            self.fresh = True
            self.bytes_read += self.local_copy.stat().st_size
        self.size = self.local_copy.stat().st_size
        return self.read(start, end)

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
            raise _Retry(f"HTTP {status} {safe(resp.reason, 60)}", unreachable=False)
        if 400 <= status < 500:
            raise RemoteRefusedError(f"{safe(self.url)}: the server refused to serve it (HTTP {status} "
                                     f"{safe(resp.reason, 60)}); check the URL and your access to it")
        if status != 206:
            raise RemoteReadError(
                f"{safe(self.url)}: the server answered HTTP {status} {safe(resp.reason, 60)} to a byte-range "
                "request after serving ranges before; open it again")
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
                raise RemoteUnreachableError(_late(self.url, budget, start, end))
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
        except PermissionError as exc:
            raise RemoteRefusedError(f"{safe(url)}: access refused ({safe(exc, 200)})") from None
        except (ConnectionError, TimeoutError, socket.gaierror) as exc:
            raise RemoteUnreachableError(f"{safe(url)}: cannot reach the server ({type(exc).__name__}: "
                                         f"{safe(exc, 200)})") from None
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
