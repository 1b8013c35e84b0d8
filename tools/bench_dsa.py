#!/usr/bin/env python
"""Eval's per-image DSA: time per training batch (sampling the numbers and applying them), against a baseline.

    git show c08fe11:latentds/augment.py > /tmp/augment_before.py
    python tools/bench_dsa.py --baseline /tmp/augment_before.py --json bench/results/dsa-cpu.json

The evaluation protocol draws one op per batch and its numbers per image (as the reference's DiffAugment
with seed=-1). This times ``augment_per_image`` on (256, 3, 32, 32) batches, op by op (the op is forced
with a one-token strategy), and the sampling alone (2x2 images, where applying costs next to nothing).
``--baseline FILE`` loads another version of ``latentds/augment.py`` and times it in turn with this one
(A B A B ..., so a drifting machine moves both alike); each figure is the median over ``--reps`` calls
after a warm-up, on one torch thread unless ``--threads``. Both versions must give the same images.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine  # noqa: E402

import latentds.augment as current  # noqa: E402


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("augment_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def medians_ms(fns: dict[str, object], reps: int) -> dict[str, float]:
    """Median ms per call of each function, timed in turn (one call of each per round)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: round(statistics.median(v) * 1000, 3) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--baseline", type=Path, default=None, help="another latentds/augment.py to time against")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--reps", type=int, default=60)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    versions = {"current": current, **({"baseline": load(args.baseline)} if args.baseline else {})}
    x = torch.rand(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tiny = torch.rand(args.batch, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    rows = {}
    for op in current.OPS:
        outs = [m.augment_per_image(x, torch.Generator().manual_seed(5), op) for m in versions.values()]
        assert all(torch.equal(outs[0], o) for o in outs), f"{op}: the versions give different images"
        row = {}
        for what, batch in (("batch_ms", x), ("sampling_ms", tiny)):
            gens = {k: torch.Generator().manual_seed(0) for k in versions}
            fns = {k: (lambda m=m, g=gens[k], op=op, batch=batch: m.augment_per_image(batch, g, op))
                   for k, m in versions.items()}
            for k, v in medians_ms(fns, args.reps).items():
                row[f"{what}_{k}"] = v
        rows[op] = row
        print(op, row, flush=True)
    summary = {k: round(statistics.mean(r[k] for r in rows.values()), 3) for k in next(iter(rows.values()))}
    print("mean over ops:", summary)
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        record = {"command": "python tools/bench_dsa.py" + (f" --baseline {args.baseline}" if args.baseline else "")
                  + (f" --json {args.json}" if args.json else ""),
                  "machine": machine(), "torch": torch.__version__, "commit": commit, "batch": args.batch,
                  "threads": args.threads, "reps": args.reps, "ops": rows, "mean_over_ops": summary}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
