"""Seeded fuzz campaign against the .lds reader: every input must end in the library's own error or open cleanly.

    python tools/fuzz_lds.py [--inputs 1000000] [--seed 0] [--out bench/results/fuzz-cpu.json]

Each input is a small valid .lds (a tiny registered generator, a few latents) mutated one way: bit flips or
byte overwrites anywhere, truncation, header-JSON edits (values replaced by hostile ones: huge or negative
integers, floats, lists, deep nesting, strings with control characters), or manifest edits re-signed with a
correct sha256 (as a hostile sender would). Each input is opened (``open_lds``), verified, and, if it opens,
its first row decoded. Outcomes are counted by exception type; anything outside ``LatentdsError`` is a
failure and is saved (with its seed) under ``--crashes``. Slow inputs (> 5 s) are counted too.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import random
import resource
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
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


def mutate(raw: bytes, rng: random.Random) -> bytes:
    kind = rng.randrange(6)
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


def run_one(path: Path) -> str:
    from latentds.dataset import LatentDataset
    from latentds.errors import LatentdsError
    from latentds.lds import open_lds

    try:
        with open_lds(path) as reader:
            reader.verify()
        LatentDataset(path, device="cpu", precision="fp32")[0]
        return "ok"
    except LatentdsError as exc:
        return type(exc).__name__
    except RecursionError:  # counted as a failure below
        return "!RecursionError"
    except Exception as exc:  # noqa: BLE001 - the point of a fuzzer
        return f"!{type(exc).__name__}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "bench/results/fuzz-cpu.json")
    p.add_argument("--crashes", type=Path, default=Path(tempfile.gettempdir()) / "latentds-fuzz-crashes")
    args = p.parse_args()
    import os

    os.environ.setdefault("LATENTDS_PROBE", "0")
    sys.setrecursionlimit(10_000)
    counts: Counter[str] = Counter()
    slow = 0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        raw = base_file(tmp_path)
        target = tmp_path / "input.lds"
        for i in range(args.inputs):
            rng = random.Random(args.seed * 1_000_003 + i)
            target.write_bytes(mutate(raw, rng))
            t0 = time.perf_counter()
            outcome = run_one(target)
            slow += time.perf_counter() - t0 > 5.0
            counts[outcome] += 1
            if outcome.startswith("!"):
                args.crashes.mkdir(parents=True, exist_ok=True)
                (args.crashes / f"input-{args.seed}-{i}.lds").write_bytes(target.read_bytes())
            if (i + 1) % 1000 == 0:
                rate = (i + 1) / (time.perf_counter() - start)
                print(f"{i + 1:,} inputs, {rate:.0f}/s, failures {sum(v for k, v in counts.items() if k.startswith('!'))}",
                      file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    failures = {k: v for k, v in counts.items() if k.startswith("!")}
    result = {
        "command": f"python tools/fuzz_lds.py --inputs {args.inputs} --seed {args.seed}",
        "inputs": args.inputs, "seconds": round(seconds, 1), "inputs_per_s": round(args.inputs / seconds, 1),
        "outcomes": dict(counts.most_common()), "failures": failures, "slow_over_5s": slow,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 1 if failures or slow else 0


if __name__ == "__main__":
    sys.exit(main())
