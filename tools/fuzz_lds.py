"""Seeded, structure-aware fuzz campaign against everything that reads a stranger's .lds: every input must end in
the library's own error (a one-line message, exit 1 or 2) or work, and no output may carry a raw control character.

    python tools/fuzz_lds.py [--inputs 1000000] [--seed 0] [--workers 1] [--out bench/results/fuzz-cpu.json]

Each input is a small valid .lds (a tiny registered generator, a few latents, a provenance with every field the
writers record) mutated one way. Byte-level: bit flips, truncation, header-JSON edits, deep nesting or long
numbers spliced into the JSON. Structure-aware, re-signed with a correct manifest sha256 (as a hostile sender
would): any field of the manifest, provenance and extra fields included, gets its type swapped, an extreme number
(1e308, 5e-324, 2**64, a 400-digit integer), hostile Unicode (ESC/OSC/CSI sequences, C1 controls, bidi overrides,
unpaired surrogates, 100,000 characters), deep nesting, an empty container, or is deleted, duplicated or joined by
an unknown field; generator arguments are scaled. Some inputs are wrapped in a .lds.zst whose frame or inner
header is hostile. Each input then runs through the CLI's ``main()`` in this process: ``info``, sometimes ``info --json``,
and ``verify`` (and for some a decode through ``LatentDataset``), then one of ``export`` (npz), ``preview``, ``merge`` (with a second valid file), ``pack`` + ``unpack``,
or the remote reader (``info`` and a decode over HTTP from a server in the worker that answers well or with a bad
status line, 200 headers, a 5,000-digit Content-Range, a broken chunked body, an escape-laden reason phrase or a
redirect to another origin). Outcomes are counted by exit code and error type; an exception that escapes ``main()``
(or the dataset API) is a failure (``!Type``), and so is a raw control character (C0 but newline and tab, DEL, C1)
in anything printed (``!RawEscape``). Failing inputs are saved under ``--crashes``. Inputs over 5 s of wall time are
listed with their CPU time, and an input still running after ``--hang`` seconds is stopped and counted as ``!Hang``.
Work is split into checkpointed chunks (``OUT.partial.json``): rerun the same command after an interruption and it
continues.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import http.server
import io
import json
import multiprocessing
import os
import random
import re
import resource
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, machine  # noqa: E402

HOSTILE_VALUES = [0, -1, 2**31, 2**63, 2**64 + 5, 10**400, 1e30, -1e-9, float("nan"), True, None, "x", "\x1b[2J",
                  [], [1, 2], {}, {"a": 1}, "F32", [[[[[[]]]]]]]
EXTREME_NUMBERS = [1e308, -1e308, 5e-324, 1e-300, -0.0, 0, -1, 2**31, 2**63, -(2**63), 2**64, 10**100, 10**400,
                   1.5, 0.1, 65537, 1e-9, 1e15]
UNICODE = ["\x1b[2J\x1b[H", "\x1b]0;pwned\x07", "\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "\x9b31m", "\x07\x08\x7f",
           "\u202etxt.exe", "\ud800", "\x00", "a" * 100_000, "é" * 300, "\r\n", "🙂" * 60, "", " 1 . 0 ", "１.０"]
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but \t and \n
SERVER_MODES = ("ok", "ok", "ok", "bad-status", "many-headers", "huge-range", "broken-chunked", "reason-escape",
                "redirect-offsite", "not-206")


def base_file(path: Path, seed: int = 0) -> bytes:
    """A tiny valid .lds whose provenance holds every field the writers record (so every one gets mutated)."""
    import torch

    from latentds import image_spec, save_lds
    from latentds.models import create_model

    torch.manual_seed(0)  # the same generator in both base files: they merge
    g = create_model("biggan", num_classes=3, width=1, latent_dim=8, image_size=16, channels=1).eval()
    gen = torch.Generator().manual_seed(seed)
    prov = {"source": {"name": "fake", "fingerprint": "ab" * 32, "num_images": 30, "bytes": 4096},
            "method": "fuzz base", "selection": {"ipc": 3, "num_latents": 10, "seed": 0},
            "encode_config": {"gan": {"width": 1, "lr": 0.0002}, "ipc": 3}, "losses": {"condense": {"loss_curve": [1.0, 0.5]}},
            "run": {"timing_s": {"total": 1.5}}, "release": {"generator_file": "g.pth", "latents_key": None},
            "parts": [{"file": "a.lds", "sha256": "cd" * 32, "rows": [0, 5], "latent_dtype": "F16",
                       "provenance": {"source": {"name": "part"}}}]}
    out = save_lds(path, g, torch.randn(10, 8, generator=gen), torch.arange(10) % 3, ["a", "b", "c"],
                   image_spec([0.5], [0.25], (1, 16, 16)), prov, latent_dtype=torch.float16)
    return out.read_bytes()


def split(raw: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def join(header: dict | str, data: bytes) -> bytes:
    text = (header if isinstance(header, str) else json.dumps(header, allow_nan=True)).encode("utf-8", "surrogatepass")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def paths(obj, prefix=()):
    """Every (path, value) in a JSON tree."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:50]):
            yield from paths(v, (*prefix, i))


def set_path(obj, path, value):
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


def _get_path(obj, path):
    for key in path:
        obj = obj[key]
    return obj


def _nested(rng: random.Random) -> object:
    depth = rng.choice([5, 20, 63, 64, 65, 200])
    value: object = rng.choice([[], {}, 1, "x"])
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def _nodes(obj: object, limit: int = 2_000_000) -> int:
    """JSON nodes in ``obj`` (shared references counted each time, as json.dumps writes them), stopping at ``limit``."""
    count, stack = 0, [obj]
    while stack and count < limit:
        v = stack.pop()
        count += 1
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return count


def _structured(manifest: dict, rng: random.Random) -> None:
    """One structure-aware edit of one manifest field (any depth: provenance and extra fields included)."""
    choices = [p for p, _ in paths(manifest) if p]
    path = rng.choice(choices)
    op = rng.randrange(9)
    parent = _get_path(manifest, path[:-1])
    if op == 0:  # type swapped
        value = rng.choice(["text", 7, 2.5, [1, "a"], {"x": 1}, None, True, False])
    elif op == 1:
        value = rng.choice(EXTREME_NUMBERS)
        if rng.random() < 0.3:  # a list of them where a list of numbers is expected
            value = [value] * rng.choice([0, 1, 2, 3, 1000])
    elif op == 2:
        value = rng.choice(UNICODE)
    elif op == 3:
        value = _nested(rng)
    elif op == 4:
        value = rng.choice([[], {}, "", [[]], [{}]])
    elif op == 5:  # deleted
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
        elif isinstance(parent, list) and parent:
            parent.pop(path[-1] if path[-1] < len(parent) else -1)
        return
    elif op == 6:  # an unknown extra field beside it
        target = parent if isinstance(parent, dict) else manifest
        target[rng.choice(UNICODE[:8] + ["extra", "__proto__", ""])] = rng.choice(HOSTILE_VALUES + UNICODE[:5])
        return
    elif op == 7:  # a list made long, or an object given many keys
        old = _get_path(manifest, path)
        value = [old] * rng.choice([2, 100, 10_000]) if rng.random() < 0.5 else {f"k{i}": old for i in range(1000)}
    else:
        value = copy.deepcopy(rng.choice(HOSTILE_VALUES))
    set_path(manifest, path, value)


def _zst(raw: bytes, rng: random.Random) -> bytes:
    """``raw`` in a zstd frame, sometimes with a hostile frame header (declared size) or tail."""
    import zstandard

    size = len(raw)
    if rng.random() < 0.5:  # the inner header's offsets lie about the size
        header, data = split(raw)
        name = rng.choice([k for k in header if k != "__metadata__"])
        header[name]["data_offsets"][1] = rng.choice([float("inf"), 1e300, -1, 2**64, "x", header[name]["data_offsets"][1] + 8])
        raw = join(header, data)
        size = len(raw)
    declared = rng.choice([size, size, size + 1, max(size - 1, 0), 2**30, 2**33])
    cctx = zstandard.ZstdCompressor(level=1, write_checksum=True, write_content_size=True)
    frame = bytearray(cctx.compress(raw))
    if declared != size:  # rewrite the frame header's content size field (FCS, 4 or 8 bytes after the descriptor)
        desc = frame[4]
        fcs_flag, single = desc >> 6, (desc >> 5) & 1
        width = [1 if single else 0, 2, 4, 8][fcs_flag]
        pos = 5 + (0 if single else 1) + [0, 1, 2, 4][desc & 3]
        if width >= 4 and declared < 2 ** (8 * width):
            frame[pos : pos + width] = declared.to_bytes(width, "little")
    if rng.random() < 0.1:
        frame += bytes(rng.randrange(1, 16))
    return bytes(frame)


KINDS = ("bit-flips", "truncate-or-extend", "header-value", "manifest-value-resigned", "generator-args-resigned",
         "spliced-json", "manifest-structure-resigned", "zst-wrapped")


def mutate(raw: bytes, rng: random.Random, kind: int) -> bytes:
    if kind == 0:  # bit flips
        data = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    if kind == 1:  # truncation or extension
        return raw[: rng.randrange(len(raw))] if rng.random() < 0.7 else raw + bytes(rng.randrange(1, 64))
    if kind == 7:
        inner = mutate(raw, rng, rng.choice([3, 6, 6])) if rng.random() < 0.5 else raw
        return _zst(inner, rng)
    header, data = split(raw)
    manifest = json.loads(header["__metadata__"]["latentds.manifest"])
    if kind in (2, 3):  # a header value replaced (kind 2) or a manifest value replaced and re-signed (kind 3)
        target = header if kind == 2 else manifest
        choices = [p for p, _ in paths(target) if p and p[0] != "__metadata__"]
        set_path(target, rng.choice(choices), copy.deepcopy(rng.choice(HOSTILE_VALUES)))
    elif kind == 4:  # manifest keys removed, generator args scaled
        args = manifest["generator"]["args"]
        key = rng.choice(sorted(args))
        args[key] = rng.choice([0, 1, 7, 10**6, 2**40, -3, args[key]])
        if rng.random() < 0.3:
            manifest.pop(rng.choice(sorted(manifest)), None)
    elif kind == 5:  # deep nesting or long numbers spliced into the header text
        text = json.dumps(header)
        cut = rng.randrange(len(text))
        junk = rng.choice(["[" * 50_000, "9" * 6000, '"\\ud800"', "{" * 3000, "1e999", "1e400", "-1e400"])
        return join(text[:cut] + junk + text[cut:], data)
    else:  # kind 6: one to three structure-aware edits
        for _ in range(rng.choice([1, 1, 2, 3])):
            _structured(manifest, rng)
    if kind in (3, 4, 6):
        # Repeated lengthening can nest 10,000 x 10,000 shared references: written out, gigabytes (the fuzzer's own
        # json.dumps was OOM-killed at 22 GB on input 26,795 of seed 0). Past 2 M nodes the manifest is written as
        # what it would be, a text far over the 8 MiB bound, without expanding it.
        big = _nodes(manifest) >= 2_000_000
        text = '{"format": "latentds", "pad": "' + "x" * (9 << 20) + '"}' if big else json.dumps(manifest, allow_nan=True)
        header["__metadata__"] = {"latentds.manifest": text,
                                  "latentds.manifest_sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()}
    return join(header, data)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    payload = b""
    mode = "ok"


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves the current input in byte ranges, well or in one of the hostile ways of SERVER_MODES."""

    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        data, mode = self.server.payload, self.server.mode
        spec = self.headers.get("Range", "bytes=0-0")[6:].split("-")
        lo, hi = int(spec[0]), min(int(spec[1]), len(data) - 1)
        body = data[lo : hi + 1]
        w = self.wfile.write
        if mode == "bad-status":
            w(b"HTTP/1.1 20x Fine\x1b[2J\r\n\r\n")
        elif mode == "many-headers":
            w(b"HTTP/1.1 206 Partial\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n")
        elif mode == "huge-range":
            w(b"HTTP/1.1 206 Partial\r\nContent-Range: bytes 0-7/" + b"9" * 5000 + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        elif mode == "broken-chunked":
            w(b"HTTP/1.1 206 Partial\r\nContent-Range: bytes %d-%d/%d\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" % (lo, hi, len(data)))
        elif mode == "reason-escape":
            w(b"HTTP/1.1 403 \x1b]0;pwned\x07\x9b2J\r\nContent-Length: 0\r\n\r\n")
        elif mode == "redirect-offsite":
            w(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2:9/elsewhere.lds\r\nContent-Length: 0\r\n\r\n")
        elif mode == "not-206":
            w(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
        else:
            w(b"HTTP/1.1 206 Partial\r\nContent-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n\r\n" % (lo, hi, len(data), len(body)) + body)
        self.close_connection = True


class _Hang(Exception):
    pass


class _RawEscape(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang


def _cli(*argv: str) -> int:
    """``latentds ARGV`` in this process; its output must hold no raw control character."""
    from latentds.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    if RAW_CONTROL.search(out.getvalue()) or RAW_CONTROL.search(err.getvalue()):
        raise _RawEscape
    return code


def _target(path: Path, rng: random.Random, work: Path) -> tuple[str, int]:
    """One of the writing verbs or the remote reader on the input; (its name, its exit code)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    roll = rng.random()
    if roll < 0.3:
        return "export", _cli("export", str(path), str(work / "x.npz"))
    if roll < 0.45:
        return "preview", _cli("preview", str(path), str(work / "p.png"), "--per-class", "2")
    if roll < 0.6:
        return "merge", _cli("merge", str(path), str(_STATE["other"]), str(work / "m.lds"))
    if roll < 0.75:
        if path.name.endswith(".zst"):
            return "unpack", _cli("unpack", str(path), str(work / "u.lds"))
        code = _cli("pack", str(path), str(work / "p.lds.zst"))
        return "pack+unpack", code if code else _cli("unpack", str(work / "p.lds.zst"), str(work / "u.lds"))
    server = _STATE["server"]
    server.payload, server.mode = path.read_bytes(), rng.choice(SERVER_MODES)
    url = f"http://127.0.0.1:{server.server_address[1]}/{path.name}"
    code = _cli("info", url)
    if code == 0:
        _decode(url)
    return f"remote:{server.mode}", code


def _decode(path: str | Path) -> None:
    from latentds import LatentDataset
    from latentds.errors import LatentdsError

    try:
        LatentDataset(path, device="cpu", precision="fp32")[0]
    except LatentdsError as exc:
        if RAW_CONTROL.search(str(exc)):
            raise _RawEscape from None


def run_one(path: Path, rng: random.Random, hang_s: int) -> tuple[str, str]:
    """(outcome of open + verify: 'ok' or the library error's name, or '!...' for a failure; the target tried)."""
    from latentds.errors import LatentdsError
    from latentds import open_lds

    signal.alarm(hang_s)
    target = "-"
    try:
        try:
            with open_lds(path, budget=False) as reader:
                reader.verify()
            outcome = "ok"
        except LatentdsError as exc:
            outcome = type(exc).__name__
            if RAW_CONTROL.search(str(exc)):
                raise _RawEscape from None
        _cli("info", str(path))
        if rng.random() < 0.3:
            _cli("info", "--json", str(path))
        code = _cli("verify", str(path))
        if code == 0 and rng.random() < 0.5:
            _decode(path)
        name, code = _target(path, rng, _STATE["tmp"] / "work")
        target = f"{name}={code}"
        return outcome, target
    except _Hang:
        return "!Hang", target
    except _RawEscape:
        return "!RawEscape", target
    except Exception as exc:  # noqa: BLE001 - the point of a fuzzer (RecursionError included)
        return f"!{type(exc).__name__}", target
    finally:
        signal.alarm(0)


_STATE: dict = {}


def _init_worker(crashes: str, workdir: str) -> None:
    import functools

    import torch

    import latentds.cli

    latentds.cli.build_parser = functools.lru_cache(maxsize=1)(latentds.cli.build_parser)  # one parser, many inputs

    sys.setrecursionlimit(10_000)
    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _alarm)
    tmp = Path(tempfile.mkdtemp(dir=workdir))  # inside the parent's TemporaryDirectory: removed with it
    os.environ.update(LATENTDS_MAX_MEMORY="1G", LATENTDS_HTTP_TIMEOUT="3", LATENTDS_CACHE_DIR=str(tmp / "cache"),
                      LATENTDS_REMOTE_CACHE="0")
    server = _Server(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_file(tmp / "other.lds", seed=1)
    _STATE.update(tmp=tmp, raw=base_file(tmp / "base.lds"), other=tmp / "other.lds", crashes=Path(crashes),
                  server=server)


def run_chunk(task: tuple[int, int, int, int]) -> dict:
    """Inputs ``lo..hi-1`` of campaign ``seed``: outcome counts, slow inputs, the slowest time, this worker's RSS."""
    seed, lo, hi, hang_s = task
    raw = _STATE["raw"]
    counts: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = {}
    by_target: Counter[str] = Counter()
    slow: list[dict] = []
    slowest = {"wall_s": 0.0, "cpu_s": 0.0}
    for i in range(lo, hi):
        rng = random.Random(seed * 1_000_003 + i)
        kind = rng.randrange(len(KINDS))
        target = _STATE["tmp"] / ("input.lds.zst" if KINDS[kind] == "zst-wrapped" else "input.lds")
        target.write_bytes(mutate(raw, rng, kind))
        t0, c0 = time.perf_counter(), time.process_time()
        outcome, tried = run_one(target, rng, hang_s)
        took = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
        if took["wall_s"] > 5.0:  # recorded with its CPU time: a busy machine stretches wall time, not CPU time
            slow.append({"input": i, **{k: round(v, 2) for k, v in took.items()}})
        slowest = {k: max(slowest[k], took[k]) for k in slowest}
        counts[outcome] += 1
        by_target[tried.split("=")[0] + ("=ok" if tried.endswith("=0") else "=refused")] += 1
        by_kind.setdefault(KINDS[kind], Counter())[outcome] += 1
        if outcome.startswith("!"):
            _STATE["crashes"].mkdir(parents=True, exist_ok=True)
            (_STATE["crashes"] / f"input-{seed}-{i}-{target.name}").write_bytes(target.read_bytes())
        target.unlink(missing_ok=True)
    return {"lo": lo, "counts": counts, "by_kind": by_kind, "by_target": by_target, "slow": slow, "slowest": slowest,
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _merge(total: dict, part: dict) -> None:
    total["done"].append(part["lo"])
    total["outcomes"].update(part["counts"])
    total["by_target"].update(part["by_target"])
    for kind, counts in part["by_kind"].items():
        total["by_kind"].setdefault(kind, Counter()).update(counts)
    total["slow"] += part["slow"]
    total["slowest"] = {k: max(total["slowest"][k], part["slowest"][k]) for k in total["slowest"]}
    total["peak_rss_mib"] = max(total["peak_rss_mib"], part["rss_mib"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="processes (each single-threaded)")
    p.add_argument("--chunk", type=int, default=2000, help="inputs per checkpointed unit of work")
    p.add_argument("--hang", type=int, default=30, help="seconds after which an input counts as a hang")
    p.add_argument("--out", type=Path, default=REPO / "bench/results/fuzz-cpu.json")
    p.add_argument("--crashes", type=Path, default=Path(tempfile.gettempdir()) / "latentds-fuzz-crashes")
    p.add_argument("--record-partial", action="store_true",
                   help="run nothing: write OUT from the chunks OUT.partial.json holds (a campaign stopped early), "
                        "marked incomplete with the number of inputs that ran")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a plain kill still stops the workers and cleans up
    # Resumable: finished chunks are kept in OUT.partial.json; rerunning the same command continues from it.
    partial = args.out.with_suffix(".partial.json")
    key = {"inputs": args.inputs, "seed": args.seed, "chunk": args.chunk, "version": 2}
    total = {"done": [], "outcomes": Counter(), "by_kind": {}, "by_target": Counter(), "slow": [],
             "slowest": {"wall_s": 0.0, "cpu_s": 0.0}, "peak_rss_mib": 0.0, "seconds": 0.0}
    if partial.exists():
        saved = json.loads(partial.read_text())
        if saved["key"] == key:
            total.update(saved["total"], outcomes=Counter(saved["total"]["outcomes"]),
                         by_target=Counter(saved["total"]["by_target"]),
                         by_kind={k: Counter(v) for k, v in saved["total"]["by_kind"].items()})
            print(f"resuming: {len(total['done'])} chunks done", file=sys.stderr)
    done = set(total["done"])
    tasks = [(args.seed, lo, min(lo + args.chunk, args.inputs), args.hang)
             for lo in range(0, args.inputs, args.chunk) if lo not in done and not args.record_partial]
    start, before = time.perf_counter(), total["seconds"]
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="latentds-fuzz-") as workdir, ctx.Pool(
        args.workers, initializer=_init_worker, initargs=(str(args.crashes), workdir)
    ) as pool:
        for part in pool.imap_unordered(run_chunk, tasks):
            _merge(total, part)
            total["seconds"] = before + time.perf_counter() - start
            n = sum(total["outcomes"].values())
            failures = sum(v for k, v in total["outcomes"].items() if k.startswith("!"))
            print(f"{n:,} inputs, {n / total['seconds']:.0f}/s, failures {failures}, over 5 s: "
                  f"{sum(s['cpu_s'] > 5 for s in total['slow'])} CPU, {len(total['slow'])} wall",
                  file=sys.stderr, flush=True)
            tmp = partial.with_suffix(".tmp")
            tmp.write_text(json.dumps({"key": key, "total": total}))
            os.replace(tmp, partial)
    n = sum(total["outcomes"].values())
    failures = {k: v for k, v in total["outcomes"].items() if k.startswith("!")}
    result = {
        "command": f"python tools/fuzz_lds.py --inputs {args.inputs} --seed {args.seed} --workers {args.workers}",
        "machine": machine(),
        "inputs": n, "planned_inputs": args.inputs, "complete": n == args.inputs,
        "chunks_done": sorted(total["done"]), "seconds": round(total["seconds"], 1), "inputs_per_s": round(n / max(total["seconds"], 1e-9), 1),
        "outcomes": dict(total["outcomes"].most_common()), "failures": failures,
        "raw_escapes": total["outcomes"].get("!RawEscape", 0),
        "by_mutation": {k: dict(v.most_common()) for k, v in sorted(total["by_kind"].items())},
        "by_target": dict(sorted(total["by_target"].items())),
        "slow_over_5s_cpu": sum(s["cpu_s"] > 5 for s in total["slow"]),
        "slow_over_5s_wall": total["slow"],  # each with its CPU time: wall time alone is stretched by other load
        "slowest_input": {k: round(v, 2) for k, v in total["slowest"].items()},
        "peak_rss_mib_per_worker": round(total["peak_rss_mib"], 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if result["complete"]:
        partial.unlink(missing_ok=True)
    print(json.dumps(result, indent=2))
    return 1 if failures or any(s["cpu_s"] > 5 for s in total["slow"]) else 0


if __name__ == "__main__":
    sys.exit(main())
