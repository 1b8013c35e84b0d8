"""Remote .lds files: read over HTTP in byte ranges from a real server on 127.0.0.1, counting what it serves."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from latentds import errors
from latentds.dataset import LatentDataset
from latentds.format import LdsReader
from latentds.lds import open_lds
from tests.conftest import make_lds


class RangeServer(http.server.ThreadingHTTPServer):
    """Serves one folder with HTTP Range support (206 + Content-Range), counting requests and body bytes."""

    def __init__(self, root: Path, ranges: bool = True):
        self.root, self.ranges = root, ranges
        self.requests = 0
        self.bytes_served = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: RangeServer

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.server.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        spec = self.headers.get("Range", "")
        if self.server.ranges and spec.startswith("bytes="):
            lo, hi = spec[6:].split("-")
            lo, hi = int(lo), min(int(hi), len(data) - 1)
            if lo >= len(data):
                self.send_error(416)
                return
            body = data[lo : hi + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {lo}-{hi}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with self.server.lock:
            self.server.requests += 1
            self.server.bytes_served += len(body)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RangeServer]:
    srv = RangeServer(tmp_path / "www")
    (tmp_path / "www").mkdir()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LATENTDS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _publish(server: RangeServer, n: int, chunk_rows: int = 100) -> tuple[Path, str]:
    path = make_lds(server.root / "big.lds", n=n, chunk_rows=chunk_rows, latent_dtype=torch.float16)
    return path, f"{server.url}/big.lds"


def test_info_reads_the_header_only(server: RangeServer) -> None:
    path, url = _publish(server, 5000)
    with open_lds(url) as remote, open_lds(path) as local:
        assert remote.is_remote and remote.manifest == local.manifest and remote.file_size == path.stat().st_size
    with LdsReader(path) as r:
        assert server.requests == 2 and server.bytes_served == 8 + r.header_bytes  # the header, nothing else
    assert path.stat().st_size > 20 * server.bytes_served


def test_decoding_rows_fetches_the_generator_once_and_only_the_chunks_touched(server: RangeServer) -> None:
    path, url = _publish(server, 5000)
    local = LatentDataset(path, precision="fp32")
    ds = LatentDataset(url, precision="fp32")
    rows = list(range(1000, 1100)) + [4999]  # chunks 10 and 49
    images, labels = ds.decode(rows)
    expected, expected_labels = local.decode(rows)
    assert torch.equal(labels, expected_labels) and torch.allclose(images, expected, atol=1e-6)
    with LdsReader(path) as r:
        generator_bytes = sum(t.nbytes for name, t in r.tensors.items() if name != "latents")
        row_bytes = r.latent_dim * 2
    served = server.bytes_served
    assert served < generator_bytes + 2 * 100 * row_bytes + 4 * 64 * 1024  # header(s), labels+generator, 2 chunks
    assert served < path.stat().st_size / 3
    again = server.bytes_served
    LatentDataset(url, precision="fp32").decode(rows)  # a new process would find the checked cache
    with LdsReader(path) as r:
        assert server.bytes_served - again == 8 + r.header_bytes  # the header, once: the dataset keeps its reader


def test_a_changed_server_file_is_caught_by_the_chunk_hashes(server: RangeServer, monkeypatch) -> None:
    monkeypatch.setenv("LATENTDS_REMOTE_CACHE", "0")
    path, url = _publish(server, 500)
    reader = LdsReader(url)
    data = bytearray(path.read_bytes())
    lat = reader.tensors["latents"]
    data[reader._buffer_start + lat.begin + 10] ^= 0xFF  # row 0 changes after the header was read
    path.write_bytes(bytes(data))
    with pytest.raises(errors.ChecksumError, match="rows 0-99"):
        reader.latents([3])
    assert reader.latents([250]).shape == (1, reader.latent_dim)  # an untouched chunk still reads


def test_verify_and_cli_info_on_a_url(server: RangeServer, capsys: pytest.CaptureFixture) -> None:
    from latentds.cli import main

    _publish(server, 300)
    url = f"{server.url}/big.lds"
    assert main(["verify", url]) == 0 and "OK" in capsys.readouterr().out
    assert main(["info", url]) == 0
    out = capsys.readouterr().out
    assert "300 latents" in out and "not read" in out


def test_remote_errors_are_one_line_library_errors(server: RangeServer, tmp_path: Path) -> None:
    with pytest.raises(errors.LdsNotFoundError, match="404"):
        LdsReader(f"{server.url}/missing.lds")
    (server.root / "junk.lds").write_bytes(b"\0" * 100)
    with pytest.raises(errors.LdsError):
        LdsReader(f"{server.url}/junk.lds")
    with pytest.raises(errors.RemoteUnreachableError, match="cannot reach the server"):
        LdsReader("http://127.0.0.1:9/nothing.lds")  # nothing listens on the discard port


def test_file_urls_open_the_local_file(tmp_path: Path) -> None:
    path = make_lds(tmp_path / "a b.lds", n=6)
    with open_lds(path.as_uri()) as r:
        assert not r.is_remote and r.path == path
        assert np.array_equal(r.labels().numpy(), np.arange(6) % 3)


def test_fsspec_urls_read_in_ranges_too(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    path = make_lds(tmp_path / "a.lds", n=300, chunk_rows=100)
    fs = fsspec.filesystem("memory")
    fs.pipe("/shared/a.lds", path.read_bytes())
    try:
        remote, local = LatentDataset("memory://shared/a.lds", precision="fp32"), LatentDataset(path, precision="fp32")
        assert torch.allclose(remote.decode([5, 250])[0], local.decode([5, 250])[0], atol=1e-6)
        with LdsReader("memory://shared/a.lds") as r:
            assert r.is_remote and r.verify() == []
    finally:
        fs.rm("/shared/a.lds")


def test_dataloader_workers_read_a_url(server: RangeServer) -> None:
    from torch.utils.data import DataLoader

    path, url = _publish(server, 40, chunk_rows=8)
    local = torch.cat([x for x, _ in DataLoader(LatentDataset(path, precision="fp32"), batch_size=8)])
    loader = DataLoader(LatentDataset(url, precision="fp32"), batch_size=8, num_workers=2)
    remote = torch.cat([x for x, _ in loader])
    assert torch.allclose(remote, local, atol=1e-6)


def test_reads_larger_than_the_memory_budget(server: RangeServer, monkeypatch) -> None:
    """Chunks dropped from memory while one read fetches more than the budget must not be lost to that read."""
    from latentds.format import ranged as ranged_module

    path, url = _publish(server, 400, chunk_rows=10)
    monkeypatch.setattr(ranged_module.RemoteTensors, "MEMORY_BUDGET", 3 * 10 * 128 * 2)  # three fp16 chunks
    remote, local = LdsReader(url), LdsReader(path)
    rows = list(range(0, 400, 7))
    assert torch.equal(remote.latents(rows), local.latents(rows)) and remote.verify() == []


def test_a_filesystem_s_own_exception_becomes_a_remote_read_error(monkeypatch) -> None:
    """hf:// without a network raised httpx's ConnectError as a traceback: filesystems raise their own types."""
    fsspec = pytest.importorskip("fsspec")

    class ConnectError(Exception):
        pass

    def unreachable(self, path):  # noqa: ARG001
        raise ConnectError("Name or service not known")

    monkeypatch.setattr(type(fsspec.filesystem("memory")), "size", unreachable)
    with pytest.raises(errors.LdsError, match="ConnectError"):
        LdsReader("memory://somewhere/a.lds")


# --- every server a suspect (issue 26) ---------------------------------------------------------------------------
import socket  # noqa: E402
import time  # noqa: E402


class RawServer:
    """A TCP server on 127.0.0.1 that answers every connection with ``reply(request_bytes) -> bytes`` (or drips it,
    or says nothing), to play the servers a stranger may run."""

    def __init__(self, reply, drip: float = 0.0, silent: bool = False):
        self.reply, self.drip, self.silent = reply, drip, silent
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/f.lds"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                request = conn.recv(65536)
                if self.silent:
                    self.stop.wait(30)
                    return
                data = self.reply(request)
                if self.drip:
                    for i in range(len(data)):
                        if self.stop.wait(self.drip):
                            return
                        conn.sendall(data[i : i + 1])
                else:
                    conn.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def _served(tmp_path: Path) -> bytes:
    return make_lds(tmp_path / "f.lds", n=4).read_bytes()


def _range_reply(data: bytes, extra: bytes = b"", status: bytes = b"206 Partial Content"):
    def reply(request: bytes) -> bytes:
        spec = request.split(b"Range: bytes=")[1].split(b"\r\n")[0].decode()
        lo, hi = (int(v) for v in spec.split("-"))
        body = data[lo : hi + 1]
        return (b"HTTP/1.1 " + status + b"\r\nContent-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n" % (
            lo, lo + len(body) - 1, len(data), len(body)) + extra + b"\r\n" + body)
    return reply


@pytest.mark.parametrize(
    ("answer", "match", "code"),  # code: the CLI's exit code, 3 for a broken answer, 4 for a refusal
    [
        (lambda d: lambda r: b"HTTP/1.1 20x Fine\x1b[2J\r\n\r\n", "not valid HTTP", 3),
        (lambda d: lambda r: b"HTTP/1.1 206 OK\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
         "not valid HTTP", 3),
        (lambda d: lambda r: b"HTTP/1.1 206 OK\r\nContent-Range: bytes 0-7/" + b"9" * 5000 + b"\r\n\r\n", "Content-Range",
         3),
        (lambda d: lambda r: b"HTTP/1.1 206 OK\r\nContent-Range: bytes 0-7/%d\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"zz\r\n" % len(d), "not valid HTTP", 3),
        (lambda d: lambda r: b"HTTP/1.1 403 \x1b]0;pwned\x07\r\nContent-Length: 0\r\n\r\n", "403", 4),
        (lambda d: lambda r: b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2:9/x.lds\r\nContent-Length: 0\r\n\r\n",
         "another origin", 4),
        (lambda d: lambda r: b"", "not valid HTTP", 3),
    ],
    ids=["bad-status-line", "200-headers", "5000-digit-total", "broken-chunked", "escape-reason", "offsite-redirect",
         "closed"],
)
def test_every_protocol_error_is_a_remote_read_error(tmp_path: Path, answer, match: str, code: int, capsys) -> None:
    from latentds.cli import main

    srv = RawServer(answer(_served(tmp_path)))
    try:
        with pytest.raises(errors.LdsError, match=match) as info:
            LdsReader(srv.url)
        assert "\x1b" not in str(info.value) and "\x07" not in str(info.value)
        assert main(["info", srv.url]) == code
        assert "\x1b" not in capsys.readouterr().err
    finally:
        srv.close()


@pytest.mark.parametrize("kind", ["drip", "silent"])
def test_a_server_that_drips_or_stalls_meets_the_deadline(tmp_path: Path, monkeypatch, kind: str) -> None:
    monkeypatch.setenv("LATENTDS_HTTP_TIMEOUT", "1")
    reply = _range_reply(_served(tmp_path))
    srv = RawServer(reply, drip=0.2) if kind == "drip" else RawServer(reply, silent=True)
    try:
        start = time.monotonic()
        with pytest.raises(errors.LdsError, match="within"):
            LdsReader(srv.url)
        assert time.monotonic() - start < 3.0  # 1 s plus 8 bytes at the minimum rate, plus slack
    finally:
        srv.close()


def test_same_origin_redirects_are_followed(server: RangeServer, tmp_path: Path) -> None:
    path, url = _publish(server, 6)
    srv = RawServer(lambda r: b"HTTP/1.1 307 Moved\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n")
    try:
        with pytest.raises(errors.LdsError, match="more than 5 redirects"):  # same origin: followed, but bounded
            LdsReader(srv.url)
    finally:
        srv.close()
    with LdsReader(url) as r:
        assert r.num_samples == 6


def test_the_cache_reads_only_regular_files_of_the_manifest_size(server: RangeServer, _cache: Path) -> None:
    import os

    path, url = _publish(server, 40, chunk_rows=10)
    with LdsReader(url) as r:
        r.latents([0])
        sha = r.manifest_sha256
    folder = _cache / "remote" / sha
    cached = folder / "latents-0"
    assert cached.is_file()
    cached.unlink()
    cached.symlink_to("/dev/zero")  # a link to an endless device: must be skipped, not read
    os.mkfifo(folder / "latents-1")  # a FIFO: opening it would block
    (folder / "latents-2").write_bytes(b"x" * 10**6)  # the wrong size: never read whole
    before = server.requests
    with LdsReader(url) as r:
        local = LdsReader(path)
        assert torch.equal(r.latents([0, 10, 20]), local.latents([0, 10, 20]))
    assert server.requests > before  # fetched again instead of trusting the planted entries


def test_http_limits_are_configurable(monkeypatch) -> None:
    from latentds.format.remote import HTTPLimits

    monkeypatch.setenv("LATENTDS_HTTP_TIMEOUT", "5")
    monkeypatch.setenv("LATENTDS_HTTP_MIN_RATE", "1024")
    limits = HTTPLimits.from_env()
    assert limits.deadline_s(2048) == 7.0 and not limits.cross_origin
    monkeypatch.setenv("LATENTDS_HTTP_TIMEOUT", "soon")
    with pytest.raises(errors.UsageError, match="LATENTDS_HTTP_TIMEOUT"):
        HTTPLimits.from_env()
