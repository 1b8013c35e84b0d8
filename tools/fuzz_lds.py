"""Seeded fuzz campaign against the .lds reader: every input must end in the library's own error or open cleanly.

    python tools/fuzz_lds.py [--inputs 1000000] [--seed 0] [--workers 2] [--out bench/results/fuzz-cpu.json]

Each input is a small valid .lds (a tiny registered generator, a few latents) mutated one way: bit flips or
byte overwrites anywhere, truncation, header-JSON edits (values replaced by hostile ones: huge or negative
integers, floats, lists, deep nesting, strings with control characters), or manifest edits re-signed with a
correct sha256 (as a hostile sender would). Each input is opened (``open_lds``), verified, and, if it opens,
its first row decoded. Outcomes are counted by exception type; anything outside ``LatentdsError`` is a
failure and is saved (with its seed) under ``--crashes``. Inputs over 5 s of wall time are listed with their CPU
time (a slow input burns CPU; one stalled by other load on the machine does not), and an input still
running after ``--hang`` seconds is stopped and counted as ``!Hang``. Work is split into chunks of inputs that
are checkpointed to ``OUT.partial.json``: rerun the same command after an interruption and it continues.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import multiprocessing
import os
import random
import resource
import signal
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, machine  # noqa: E402

HOSTILE_VALUES = [0, -1, 2**31, 2**63, 2**64 + 5, 10**400, 1e30, -1e-9, float("nan"), True, None, "x", "\x1b[2J",
                  [], [1, 2], {}, {"a": 1}, "F32", [[[[[[]]]]]]]


def base_file(tmp: Path) -> bytes:
    import torch

    from latentds.lds import image_spec, save_lds
    from latentds.models import create_model

    torch.manual_seed(0)
    g = create_model("biggan", num_classes=3, width=1, latent_dim=8, image_size=16, channels=1).eval()
    path = save_lds(tmp / "base.lds", g, torch.randn(10, 8), torch.arange(10) % 3, ["a", "b", "c"],
                    image_spec([0.5], [0.25], (1, 16, 16)), latent_dtype=torch.float16)
    return path.read_bytes()


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
        for i, v in enumerate(obj):
            yield from paths(v, (*prefix, i))


def set_path(obj, path, value):
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


KINDS = ("bit-flips", "truncate-or-extend", "header-value", "manifest-value-resigned", "generator-args-resigned",
         "spliced-json")


def mutate(raw: bytes, rng: random.Random, kind: int) -> bytes:
    if kind == 0:  # bit flips
        data = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    if kind == 1:  # truncation or extension
        return raw[: rng.randrange(len(raw))] if rng.random() < 0.7 else raw + bytes(rng.randrange(1, 64))
    header, data = split(raw)
    manifest = json.loads(header["__metadata__"]["latentds.manifest"])
    if kind in (2, 3):  # a header value replaced (kind 2) or a manifest value replaced and re-signed (kind 3)
        target = header if kind == 2 else manifest
        choices = [p for p, _ in paths(target) if p and p[0] != "__metadata__"]
        set_path(target, rng.choice(choices), copy.deepcopy(rng.choice(HOSTILE_VALUES)))
    elif kind == 4:  # manifest keys removed or duplicated, generator args scaled
        args = manifest["generator"]["args"]
        key = rng.choice(sorted(args))
        args[key] = rng.choice([0, 1, 7, 10**6, 2**40, -3, args[key]])
        if rng.random() < 0.3:
            manifest.pop(rng.choice(sorted(manifest)), None)
    else:  # deep nesting or long numbers spliced into the header text
        text = json.dumps(header)
        cut = rng.randrange(len(text))
        junk = rng.choice(["[" * 50_000, "9" * 6000, '"\\ud800"', "{" * 3000, "1e999"])
        return join(text[:cut] + junk + text[cut:], data)
    if kind in (3, 4):
        text = json.dumps(manifest, allow_nan=True)
        header["__metadata__"] = {"latentds.manifest": text,
                                  "latentds.manifest_sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()}
    return join(header, data)


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang


def run_one(path: Path, hang_s: int) -> str:
    from latentds.dataset import LatentDataset
    from latentds.errors import LatentdsError
    from latentds.lds import open_lds

    signal.alarm(hang_s)
    try:
        with open_lds(path) as reader:
            reader.verify()
        LatentDataset(path, device="cpu", precision="fp32")[0]
        return "ok"
    except _Hang:
        return "!Hang"
    except LatentdsError as exc:
        return type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - the point of a fuzzer (RecursionError included)
        return f"!{type(exc).__name__}"
    finally:
        signal.alarm(0)


_STATE: dict = {}


def _init_worker(crashes: str, workdir: str) -> None:
    import torch

    sys.setrecursionlimit(10_000)
    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _alarm)
    tmp = Path(tempfile.mkdtemp(dir=workdir))  # inside the parent's TemporaryDirectory: removed with it
    _STATE.update(tmp=tmp, raw=base_file(tmp), crashes=Path(crashes))


def run_chunk(task: tuple[int, int, int, int]) -> dict:
    """Inputs ``lo..hi-1`` of campaign ``seed``: outcome counts, slow inputs, the slowest time, this worker's RSS."""
    seed, lo, hi, hang_s = task
    raw, target = _STATE["raw"], _STATE["tmp"] / "input.lds"
    counts: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = {}
    slow: list[dict] = []
    slowest = {"wall_s": 0.0, "cpu_s": 0.0}
    for i in range(lo, hi):
        rng = random.Random(seed * 1_000_003 + i)
        kind = rng.randrange(len(KINDS))
        target.write_bytes(mutate(raw, rng, kind))
        t0, c0 = time.perf_counter(), time.process_time()
        outcome = run_one(target, hang_s)
        took = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
        if took["wall_s"] > 5.0:  # recorded with its CPU time: a busy machine stretches wall time, not CPU time
            slow.append({"input": i, **{k: round(v, 2) for k, v in took.items()}})
        slowest = {k: max(slowest[k], took[k]) for k in slowest}
        counts[outcome] += 1
        by_kind.setdefault(KINDS[kind], Counter())[outcome] += 1
        if outcome.startswith("!"):
            _STATE["crashes"].mkdir(parents=True, exist_ok=True)
            (_STATE["crashes"] / f"input-{seed}-{i}.lds").write_bytes(target.read_bytes())
    return {"lo": lo, "counts": counts, "by_kind": by_kind, "slow": slow, "slowest": slowest,
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _merge(total: dict, part: dict) -> None:
    total["done"].append(part["lo"])
    total["outcomes"].update(part["counts"])
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
    p.add_argument("--chunk", type=int, default=5000, help="inputs per checkpointed unit of work")
    p.add_argument("--hang", type=int, default=30, help="seconds after which an input counts as a hang")
    p.add_argument("--out", type=Path, default=REPO / "bench/results/fuzz-cpu.json")
    p.add_argument("--crashes", type=Path, default=Path(tempfile.gettempdir()) / "latentds-fuzz-crashes")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a plain kill still stops the workers and cleans up
    # Resumable: finished chunks are kept in OUT.partial.json; rerunning the same command continues from it.
    partial = args.out.with_suffix(".partial.json")
    key = {"inputs": args.inputs, "seed": args.seed, "chunk": args.chunk}
    total = {"done": [], "outcomes": Counter(), "by_kind": {}, "slow": [], "slowest": {"wall_s": 0.0, "cpu_s": 0.0},
             "peak_rss_mib": 0.0, "seconds": 0.0}
    if partial.exists():
        saved = json.loads(partial.read_text())
        if saved["key"] == key:
            total.update(saved["total"], outcomes=Counter(saved["total"]["outcomes"]),
                         by_kind={k: Counter(v) for k, v in saved["total"]["by_kind"].items()})
            print(f"resuming: {len(total['done'])} chunks done", file=sys.stderr)
    done = set(total["done"])
    tasks = [(args.seed, lo, min(lo + args.chunk, args.inputs), args.hang)
             for lo in range(0, args.inputs, args.chunk) if lo not in done]
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
        "inputs": n, "seconds": round(total["seconds"], 1), "inputs_per_s": round(n / total["seconds"], 1),
        "outcomes": dict(total["outcomes"].most_common()), "failures": failures,
        "by_mutation": {k: dict(v.most_common()) for k, v in sorted(total["by_kind"].items())},
        "slow_over_5s_cpu": sum(s["cpu_s"] > 5 for s in total["slow"]),
        "slow_over_5s_wall": total["slow"],  # each with its CPU time: wall time alone is stretched by other load
        "slowest_input": {k: round(v, 2) for k, v in total["slowest"].items()},
        "peak_rss_mib_per_worker": round(total["peak_rss_mib"], 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    partial.unlink(missing_ok=True)
    print(json.dumps(result, indent=2))
    return 1 if failures or any(s["cpu_s"] > 5 for s in total["slow"]) else 0


if __name__ == "__main__":
    sys.exit(main())
