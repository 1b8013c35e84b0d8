"""How much contrast the images of a per-byte cell have: the mean over images of each image's pixel standard
deviation on [0, 1] (all channels), for the committed latentds sets of a generator, its random samples (the
``gan`` cell's seed-0 draw) and the real images at the same count per class, each built as the cells build
their training sets (``latentds.evaluation.training_set``) and un-normalized.

    python bench/image_contrast.py                          # the w16-10000it cells at 100 per class

Why: with the longer-trained generator, random samples train ConvNet-3 better than latents inverted from real
images (bench/results/per-byte-cpu.md), and the inverted images look washed out; this puts a number on it.
Figures go to bench/results/image-contrast-cpu.json with the command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tools"))
import per_byte as pb  # noqa: E402
from benchlib import machine, rel, save_result  # noqa: E402


def contrast(spec: str, ipc: int | None) -> float:
    """Mean per-image pixel std, on [0, 1], of the training set ``spec`` names (seed 0), un-normalized."""
    import torch

    from latentds.evaluation import training_set

    train = training_set(spec, ipc=ipc, seed=0, precision=pb.PRECISION)
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (train.mean, train.std))
    images = (train.images * std + mean).clamp(0, 1)
    return round(float(images.flatten(1).std(1).mean()), 4)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generator", default="w16-10000it")
    p.add_argument("--budget", default="100", choices=["100", "500"])
    p.add_argument("--out", type=Path, default=REPO / "bench/results/image-contrast-cpu.json")
    args = p.parse_args()
    ipc = pb.BUDGETS[args.budget]
    generator = pb.check_generator(args.generator)
    suffix = "" if args.generator == pb.BENCHMARK_GENERATOR else f"+{args.generator}"
    result = {}
    for method in ("inversion", "lds_int8", *pb.LONG_METHODS, *pb.CURVE_METHODS):
        path = REPO / "bench/results/per-byte-sets" / f"{method}{suffix}@{args.budget}.lds"
        if path.exists():
            result[f"{method}{suffix}@{args.budget}"] = contrast(str(path), None)
    result[f"gan{suffix}@{args.budget}"] = contrast(f"gan:{generator}", ipc)
    result[f"real@{args.budget}"] = contrast(pb.DATA_DEFAULT, ipc)
    save_result({"mean_per_image_pixel_std": result, "generator": rel(generator), "machine": machine(),
                 "command": f"python bench/image_contrast.py --generator {args.generator} --budget {args.budget}"},
                args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
