"""How much contrast the images of a per-byte cell have: the mean over images of each image's pixel standard
deviation on [0, 1] (all channels), for the committed latentds sets of a generator, its random samples (the
``gan`` cell's draw: 100 per class, seed 0) and a random real subset of the same size.

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
from storage_fidelity import pixels  # noqa: E402


def contrast(images) -> float:
    """Mean per-image pixel std of (N, C, H, W) images on [0, 1]."""
    return round(float(images.flatten(1).std(1).mean()), 4)


def main() -> int:
    import torch

    from latentds.checkpoint import load_model
    from latentds.sources import load_source

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generator", default="w16-10000it")
    p.add_argument("--budget", default="100", choices=["100", "500"])
    p.add_argument("--out", type=Path, default=REPO / "bench/results/image-contrast-cpu.json")
    args = p.parse_args()
    ipc = pb.BUDGETS[args.budget]
    suffix = "" if args.generator == pb.BENCHMARK_GENERATOR else f"+{args.generator}"
    result = {}
    for method in ("inversion", "lds_int8"):
        path = REPO / "bench/results/per-byte-sets" / f"{method}{suffix}@{args.budget}.lds"
        if path.exists():
            result[f"{method}{suffix}@{args.budget}"] = contrast(pixels(path)[0] / 255)
    generator_file = REPO / "bench/artifacts" / f"cifar10-biggan32-{args.generator}.safetensors"
    g = load_model(generator_file)
    g = (g[0] if isinstance(g, tuple) else g).eval()
    labels = torch.arange(10).repeat_interleave(ipc)
    z = torch.randn(labels.numel(), 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        result[f"gan{suffix}@{args.budget}"] = contrast(((g(z, labels) + 1) / 2).clamp(0, 1))
    data = load_source(pb.DATA_DEFAULT, split="train", progress=False)
    pick = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(0))[: labels.numel()]
    result[f"real@{args.budget}"] = contrast(data.images[pick].float() / 255)
    save_result({"mean_per_image_pixel_std": result, "generator": rel(generator_file), "machine": machine(),
                 "command": f"python bench/image_contrast.py --generator {args.generator} --budget {args.budget}"},
                args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
