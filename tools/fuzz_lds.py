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
import http.server
import io
import json
import multiprocessing
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, machine  # noqa: E402
from fuzz_mutations import KINDS, RAW_CONTROL, SERVER_MODES, base_file, mutate  # noqa: E402



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
