#!/usr/bin/env python
"""Wall time of `latentds encode` in 1 process vs 2 torchrun processes on this machine, same result checked.

    python tools/bench_torchrun.py                          # CIFAR-10 JPEG copy, smoke preset
    python tools/bench_torchrun.py --data DIR --json bench/results/torchrun-cpu.json

Runs, each from an empty work dir:
  1. the whole smoke encode: 1 process x all threads, 1 process x 1 thread, torchrun 2 processes x 1 thread;
  2. the parallel part alone, made longer (inversion and condensation at --steps steps): the generator and
     ConvNet of run 1 are copied into each work dir, so only loading, inversion, condensation and the
     write run; same three layouts.
Prints wall times and the stage times rank 0 recorded, checks whether each layout's latents are equal
bit for bit with the 1-process 1-thread run (a different thread count may round differently), and writes
the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "cifar10-jpeg"



def portable(text: str) -> str:
    """Paths in recorded commands made relative to the repository (``../shared/...``), not this machine's."""
    return text.replace(f"{REPO}/", "").replace(f"{REPO.parent}/", "../")

def run(label: str, argv: list[str], nproc: int, threads: int, cwd: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if nproc == 1:
        cmd = [sys.executable, "-m", "latentds", *argv]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "latentds", *argv]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    from latentds.format import LdsReader

    out = Path(argv[2])
    r = LdsReader(cwd / out if not out.is_absolute() else out)
    timing = r.manifest["provenance"]["run"]["timing_s"]
    print(f"{label:44} {wall:7.1f} s   ({', '.join(f'{k} {v:.1f}' for k, v in timing.items() if k != 'total')})",
          flush=True)
    return {"label": label, "processes": nproc, "threads_per_process": threads, "wall_s": round(wall, 2),
            "rank0_timing_s": timing,
            # the scratch dir is this run's own; the record names it $TMP so the command reads the same everywhere
            "command": f"OMP_NUM_THREADS={threads} python " + " ".join(cmd[1:]).replace(f"{cwd}/", "$TMP/"),
            "latents": r.latents()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--steps", type=int, default=60, help="inversion and condensation steps in part 2")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    import torch

    cores = os.cpu_count() or 1
    layouts = [(1, cores), (1, 1), (2, 1)]
    tmp = Path(tempfile.mkdtemp(prefix="latentds-torchrun-"))
    results: dict[str, list[dict]] = {"whole smoke encode": [], "inversion + condensation only": []}
    try:
        base = ["encode", args.data, "", "--preset", "smoke", "--device", "cpu", "--quiet", "--no-download"]
        for nproc, threads in layouts:
            name = f"whole-{nproc}p{threads}t"
            argv_ = list(base)
            argv_[2] = str(tmp / f"{name}.lds")
            results["whole smoke encode"].append(
                run(f"whole smoke, {nproc} process(es) x {threads} thread(s)", argv_, nproc, threads, tmp))
        first = tmp / f"whole-1p{cores}t.work"
        extra = ["--set", f"invert.iterations={args.steps}", "--set", f"condense.iterations={args.steps}"]
        for nproc, threads in layouts:
            name = f"units-{nproc}p{threads}t"
            work = tmp / f"{name}.work"
            work.mkdir()
            shutil.copytree(first / "gan", work / "gan")
            shutil.copytree(first / "classifier", work / "classifier")
            argv_ = list(base) + extra
            argv_[2] = str(tmp / f"{name}.lds")
            results["inversion + condensation only"].append(
                run(f"{args.steps}-step inv+cond, {nproc} process(es) x {threads} thread(s)", argv_, nproc, threads, tmp))
        for part, rows in results.items():
            ref = rows[1]["latents"]  # 1 process x 1 thread: the torchrun ranks' thread count
            for r in rows:
                r["latents_equal_to_1_process_1_thread"] = torch.equal(r.pop("latents"), ref)
            print(f"{part}: latents equal to 1 process x 1 thread: "
                  + ", ".join(f"{r['processes']}p x {r['threads_per_process']}t {r['latents_equal_to_1_process_1_thread']}"
                              for r in rows))
        if args.json:
            record = {"command": "python tools/bench_torchrun.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                      "cpu_count": cores, "torch": torch.__version__, "results": results}
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(portable(json.dumps(record, indent=1)) + "\n")
            print(f"wrote {args.json}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
