"""Remote files from an honest but ordinary server (``python -m http.server``, which ignores Range) and from a dead
one: a download that just works, and exit codes that tell unreachable, not found, refused and corrupt apart."""

from __future__ import annotations

import functools
import http.server
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from latentds import errors
from latentds.cli import main
from latentds.dataset import LatentDataset
from latentds.format import LdsReader
from tests.conftest import make_lds
from tests.test_remote import RangeServer, _cache, _publish, server  # noqa: F401 - fixtures: a server, a private cache


class _Plain(http.server.SimpleHTTPRequestHandler):
    """``python -m http.server``'s handler, recording the status of every answer."""

    def log_request(self, code: object = "-", size: object = "-") -> None:
        self.server.codes.append(int(getattr(code, "value", code)))  # type: ignore[attr-defined]

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[http.server.ThreadingHTTPServer]:
    (tmp_path / "www").mkdir()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Plain, directory=str(tmp_path / "www")))
    srv.codes = []  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv: http.server.ThreadingHTTPServer, name: str) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/{name}"


def test_python_http_server_is_downloaded_once_then_asked_if_changed(plain, tmp_path: Path, caplog) -> None:
    path = make_lds(tmp_path / "www" / "a.lds", n=40)
    url = _url(plain, "a.lds")
    with caplog.at_level(logging.INFO, logger="latentds"):
        remote = LatentDataset(url, precision="fp32")
    assert "ignores byte-range requests" in caplog.text and "MiB" in caplog.text  # says so, with the size
    local = LatentDataset(path, precision="fp32")
    assert torch.equal(remote.decode([0, 39])[0], local.decode([0, 39])[0])
    assert plain.codes == [200]  # one request: the whole file, streamed into the cache
    again = LatentDataset(url, precision="fp32")  # another process, a DataLoader worker: asks, gets 304
    assert torch.equal(again.decode([5])[0], local.decode([5])[0])
    assert plain.codes == [200, 304]
    path.write_bytes(make_lds(tmp_path / "b.lds", n=12).read_bytes())  # the server's file changes
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + 10))  # Last-Modified has one-second steps: make it a later one
    with LdsReader(url) as r:
        assert r.num_samples == 12 and plain.codes[-1] == 200  # downloaded again
    assert main(["verify", url]) == 0


def test_with_the_cache_off_ranges_ignored_is_refused_with_the_fix(plain, tmp_path: Path, monkeypatch, capsys) -> None:
    make_lds(tmp_path / "www" / "a.lds", n=6)
    monkeypatch.setenv("LATENTDS_REMOTE_CACHE", "0")
    with pytest.raises(errors.RemoteRefusedError, match="honours Range"):
        LdsReader(_url(plain, "a.lds"))
    assert main(["info", _url(plain, "a.lds")]) == 4
    assert "curl -O" in capsys.readouterr().err


def test_exit_codes_tell_unreachable_not_found_refused_and_corrupt(plain, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("LATENTDS_HTTP_TIMEOUT", "1")
    assert main(["verify", "http://127.0.0.1:9/a.lds"]) == 3  # nothing listens: the server is down
    err = capsys.readouterr().err
    assert "cannot reach the server" in err and "CORRUPT" not in err
    assert main(["verify", _url(plain, "missing.lds")]) == 2
    assert "not found" in capsys.readouterr().err
    path = make_lds(tmp_path / "www" / "a.lds", n=6)
    with LdsReader(path) as r:
        at = r._buffer_start + r.tensors["latents"].begin
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    assert main(["verify", _url(plain, "a.lds")]) == 1
    assert "CORRUPT" in capsys.readouterr().err


def test_verify_url_streams_the_hashes_in_pieces(server: RangeServer, monkeypatch, _cache: Path) -> None:  # noqa: F811
    from latentds.format import ranged
    from latentds.format.remote import HTTPSource

    path, url = _publish(server, 3000, chunk_rows=100)  # 750 KiB of fp16 latents
    monkeypatch.setattr(ranged.RemoteTensors, "VERIFY_PIECE", 64 * 1024)
    sizes: list[int] = []
    read = HTTPSource.read
    monkeypatch.setattr(HTTPSource, "read", lambda self, a, b: sizes.append(b - a) or read(self, a, b))
    with LdsReader(url) as r:
        assert r.verify() == []
        assert not r._remote.chunks and not r._remote.tensors  # nothing held after the check
    assert max(sizes) <= 64 * 1024 and len(sizes) > 10
    assert not list(_cache.rglob("latents-*"))  # and nothing cached: verify checks what the server serves now
    data = bytearray(path.read_bytes())
    with LdsReader(path) as local:
        data[local._buffer_start + local.tensors["latents"].begin + 1000 * 256] ^= 0xFF  # row 1000
    path.write_bytes(bytes(data))
    with LdsReader(url) as r:
        assert r.verify() == ["tensor 'latents' fails its sha256 check", "latents rows 1000-1099 fail their sha256 check"]
