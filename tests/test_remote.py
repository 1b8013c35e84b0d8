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
        assert server.bytes_served - again == 2 * (8 + r.header_bytes)  # headers only (dataset + its reader)


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
    server.ranges = False
    make_lds(server.root / "a.lds", n=6)
    with pytest.raises(errors.LdsError, match="byte-range"):
        LdsReader(f"{server.url}/a.lds")
    with pytest.raises(errors.LdsError, match="cannot read"):
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
