"""Any image size and channel count: smoke encodes at several shapes, decode rates by resolution, CLI start-up.

    python tools/bench_shapes.py [--out bench/results/shapes-cpu.json] [--compare-tree DIR]

Measures, in one run on this machine:
- ``latentds encode DIR out.lds --preset smoke`` wall time (a fresh process, ``/usr/bin/time``-style) on
  generated image folders of 10 classes x 100 PNGs at 1x28x28, 3x32x32 and 3x64x64, and the file each writes;
- decoding rate (images/s through ``DataLoader(LatentDataset(...), batch_size=256)``, 0 workers, the
  execution plan's precision) of BigGAN generators at 32x32 and 64x64, width 16 (the ``cpu`` preset's) and 64
  (the paper's), 2,048 latents (512 at width 64) each, best of 3 passes;
- ``latentds --help`` wall time (best of 5 fresh processes), and the same for another checkout given by
  ``--compare-tree`` (e.g. a ``git worktree`` of an older commit) for a before/after figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.fakedata: the same generated folders the tests use
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import cpu_model  # noqa: E402

from tests.fakedata import create_image_folder  # noqa: E402

SHAPES = ((1, 28, 28), (3, 32, 32), (3, 64, 64))
CLASSES = tuple(f"class{i}" for i in range(10))


def smoke_encode(shape: tuple[int, int, int], work: Path) -> dict:
    folder = create_image_folder(work / f"data{shape[1]}c{shape[0]}", shape, classes=CLASSES, per_class=100)
    out = work / f"smoke{shape[1]}c{shape[0]}.lds"
    cmd = [sys.executable, "-m", "latentds", "encode", str(folder), str(out), "--preset", "smoke", "--quiet"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=work)
    wall = time.perf_counter() - start
    from latentds.format import LdsReader

    with LdsReader(out) as r:
        timing = r.manifest["provenance"]["run"]["timing_s"]
        gen = r.manifest["generator"]
    return {"shape": list(shape), "images": 100 * len(CLASSES), "wall_s": round(wall, 2), "file_bytes": out.stat().st_size,
            "stage_s": timing, "generator": {"arch": gen["arch"], "args": gen["args"]},
            "command": "latentds encode DIR out.lds --preset smoke --quiet"}


def decode_rate(size: int, width: int, work: Path) -> dict:
    from torch.utils.data import DataLoader

    from latentds import LatentDataset
    from latentds import image_spec, save_lds
    from latentds.models import create_model

    n = 2048 if width <= 16 else 512  # the paper-width generator is ~16x slower: fewer latents, same method
    torch.manual_seed(0)
    g = create_model("biggan", num_classes=10, width=width, image_size=size, channels=3).eval()
    path = work / f"decode{size}w{width}.lds"
    save_lds(path, g, torch.randn(n, 128), torch.arange(n) % 10, list(CLASSES),
             image_spec([0.5] * 3, [0.25] * 3, g.contract.image_shape, g.contract.output_range), latent_dtype=torch.float16)
    ds = LatentDataset(path, device="cpu")
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        count = sum(len(x) for x, _ in DataLoader(ds, batch_size=256, num_workers=0))
        best = max(best, count / (time.perf_counter() - start))
    return {"image_size": size, "width": width, "params": sum(p.numel() for p in g.parameters()),
            "latents": n, "images_per_s": round(best, 1), "plan": {"precision": ds.plan.precision, "channels_last": ds.plan.channels_last,
                                                      "decode_chunk": ds.plan.decode_chunk}}


def help_wall(tree: Path, runs: int = 5) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from latentds.cli import main; main(['--help'])"], check=True,
                       env=env, cwd=tree, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - start)
    return round(best, 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "bench/results/shapes-cpu.json")
    p.add_argument("--compare-tree", type=Path, default=None, help="another checkout for the --help before/after")
    p.add_argument("--skip-encode", action="store_true", help="only the decode rates and --help")
    args = p.parse_args()
    result: dict = {
        "command": "python tools/bench_shapes.py" + (" --compare-tree OLD" if args.compare_tree else ""),
        "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__},
    }
    result["help_s"] = {"this": help_wall(REPO)}
    if args.compare_tree:
        result["help_s"]["compare_tree"] = help_wall(args.compare_tree.resolve())
    print(f"latentds --help: {result['help_s']}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result["smoke_encode"] = []
        for shape in () if args.skip_encode else SHAPES:
            row = smoke_encode(shape, work)
            result["smoke_encode"].append(row)
            print(f"smoke encode {'x'.join(map(str, shape))}: {row['wall_s']:.1f} s wall, {row['file_bytes'] / 2**20:.2f} MiB")
        result["decode"] = []
        for size in (32, 64):
            for width in (16, 64):
                row = decode_rate(size, width, work)
                result["decode"].append(row)
                print(f"decode biggan {size}x{size} width {width}: {row['images_per_s']:.0f} img/s ({row['params']:,} params)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
