"""Decode throughput and file sizes: what shipping a generator + latents costs against shipping JPEGs.

    python tools/bench_decode.py [--jpeg ../shared/datasets/cifar10-jpeg] [--out bench/results/decode-cpu.json]

Measures, in one run on this machine:
- fp32 matmul and conv GFLOP/s (the machine's ceiling for decoding);
- LatentDataset decode throughput at batch sizes 1, 16, 64, 256 for the paper-size BigGAN (width 64)
  and a small variant, as images/s and as a fraction of the measured conv throughput;
- reading the same number of images from the CIFAR-10 JPEG folder with torchvision's ImageFolder;
- the size of a .lds in the paper's configuration (4.3 M-parameter generator, 50,000 x 128 latents)
  in fp32 and fp16, and packed as .lds.zst.
Generators are randomly initialised: decode cost does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from latentds.dataset import CPU_DECODE_BATCH, LatentDataset
from latentds.format import pack
from latentds.lds import image_spec, save_lds
from latentds.models import count_parameters, create_model

MIB = 2**20


def timed(fn, min_seconds: float = 1.0, min_reps: int = 2) -> float:
    """Seconds per call: one warm-up, then repeat until min_seconds and min_reps are reached."""
    fn()
    reps, start = 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - start < min_seconds:
        fn()
        reps += 1
    return (time.perf_counter() - start) / reps


def machine_gflops() -> dict[str, float]:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    matmul = 2 * 2048**3 / timed(lambda: a @ b) / 1e9
    x, w = torch.randn(16, 256, 32, 32), torch.randn(256, 256, 3, 3)
    conv_flops = 2 * 16 * 256 * 32 * 32 * 256 * 9
    with torch.inference_mode():
        conv = conv_flops / timed(lambda: torch.nn.functional.conv2d(x, w, padding=1)) / 1e9
    return {"matmul_fp32_gflops": round(matmul, 1), "conv3x3_fp32_gflops": round(conv, 1)}


def generator_flops(model: nn.Module) -> float:
    """FLOPs (2 x multiply-adds) of conv and linear layers for one image."""
    total = 0

    def hook(module: nn.Module, inputs, output) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_out = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += 2 * output.numel() * per_out
        elif isinstance(module, nn.Linear):
            total += 2 * output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.inference_mode():
        model.eval()(torch.randn(1, model.latent_dim), torch.zeros(1, dtype=torch.long))
    for h in handles:
        h.remove()
    return float(total)


def decode_rate(path: Path, batch_size: int, max_decode_batch: int | None, min_seconds: float) -> float:
    """Images/s of LatentDataset.__getitems__ on random batches (what a DataLoader calls)."""
    ds = LatentDataset(path, max_decode_batch=max_decode_batch)
    ds.decode([0])  # load the generator outside the timing
    rng = np.random.default_rng(batch_size)
    return batch_size / timed(lambda: ds.__getitems__(rng.integers(0, len(ds), batch_size).tolist()), min_seconds)


def imagefolder_rate(root: Path, n: int, batch_size: int = 256) -> float:
    from torchvision import datasets, transforms
    from torch.utils.data import DataLoader, Subset

    folder = datasets.ImageFolder(str(root), transform=transforms.ToTensor())
    subset = Subset(folder, np.random.default_rng(0).permutation(len(folder))[:n].tolist())
    start = time.perf_counter()
    count = sum(len(x) for x, _ in DataLoader(subset, batch_size=batch_size, num_workers=0))
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jpeg", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets/cifar10-jpeg")
    parser.add_argument("--out", type=Path, default=Path("bench/results/decode-cpu.json"))
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 16])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--min-seconds", type=float, default=2.0)
    args = parser.parse_args()

    torch.manual_seed(0)
    result: dict = {
        "command": "python tools/bench_decode.py",
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__},
    }
    result["machine"].update(machine_gflops())
    conv_peak = result["machine"]["conv3x3_fp32_gflops"]
    print(f"machine: {result['machine']}")

    classes = [f"c{i}" for i in range(10)]
    spec = image_spec([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for width in args.widths:
            g = create_model("biggan32", num_classes=10, width=width).eval()
            flops = generator_flops(g)
            path = save_lds(Path(tmp) / f"w{width}.lds", g, torch.randn(4096, 128), torch.arange(4096) % 10, classes, spec)
            for bs in args.batch_sizes:
                # Default chunking (16 images per pass on a CPU) against one pass for the whole batch.
                rate = decode_rate(path, bs, None, args.min_seconds)
                one_pass = decode_rate(path, bs, bs, args.min_seconds) if bs > CPU_DECODE_BATCH else rate
                row = {
                    "generator": f"biggan32 width {width}",
                    "params": count_parameters(g),
                    "gflop_per_image": round(flops / 1e9, 3),
                    "batch_size": bs,
                    "images_per_s": round(rate, 1),
                    "images_per_s_one_pass": round(one_pass, 1),
                    "achieved_gflops": round(rate * flops / 1e9, 1),
                    "fraction_of_conv_peak": round(rate * flops / 1e9 / conv_peak, 3),
                }
                rows.append(row)
                print(row)
        n_jpeg = 4096
        if (args.jpeg / "train").is_dir():
            rate = imagefolder_rate(args.jpeg / "train", n_jpeg)
            result["imagefolder_jpeg"] = {"images": n_jpeg, "images_per_s": round(rate, 1), "batch_size": 256, "num_workers": 0}
            print(f"ImageFolder JPEG: {rate:.0f} images/s")

        # File sizes in the paper's configuration: 4.3 M-parameter generator, 50,000 x 128 latents.
        g = create_model("biggan32", num_classes=10, width=64).eval()
        latents, labels = torch.randn(50_000, 128), torch.arange(50_000) % 10
        sizes = {}
        for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
            p = save_lds(Path(tmp) / f"paper-{name}.lds", g, latents, labels, classes, spec, latent_dtype=dtype)
            packed = pack(p, Path(tmp) / f"paper-{name}.lds.zst")
            sizes[name] = {
                "lds_bytes": p.stat().st_size,
                "lds_mib": round(p.stat().st_size / MIB, 2),
                "lds_zst_mib": round(packed.stat().st_size / MIB, 2),
                "ratio_vs_162.6_mib_archive": round(162.6 * MIB / p.stat().st_size, 2),
            }
            print(f"paper config, latents {name}: {sizes[name]}")
    result["decode"] = rows
    result["file_sizes_paper_config"] = sizes
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
