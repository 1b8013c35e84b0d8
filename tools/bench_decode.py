"""File sizes and the JPEG baseline: what shipping a generator + latents costs against shipping JPEGs.

    python tools/bench_decode.py [--jpeg ../shared/datasets/cifar10-jpeg] [--out bench/results/decode-cpu.json]

Measures, in one run on this machine:
- reading CIFAR-10 JPEGs with torchvision's ImageFolder (batch 256, 0 workers): the rate decoding competes with;
- the size of a .lds in the paper's configuration (4.3 M-parameter generator, 50,000 x 128 latents) in fp32
  and fp16, and packed as .lds.zst.
Decoding throughput (fp32 against the execution plan, loader overhead) is tools/bench_speed.py's.
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

from latentds.format import pack
from latentds import image_spec, save_lds
from latentds.models import create_model

MIB = 2**20


def imagefolder_rate(root: Path, n: int, batch_size: int = 256) -> float:
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    folder = datasets.ImageFolder(str(root), transform=transforms.ToTensor())
    subset = Subset(folder, np.random.default_rng(0).permutation(len(folder))[:n].tolist())
    start = time.perf_counter()
    count = sum(len(x) for x, _ in DataLoader(subset, batch_size=batch_size, num_workers=0))
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jpeg", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets/cifar10-jpeg")
    parser.add_argument("--out", type=Path, default=Path("bench/results/decode-cpu.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    result: dict = {
        "command": "python tools/bench_decode.py",
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__},
    }
    n_jpeg = 4096
    if (args.jpeg / "train").is_dir():
        rate = imagefolder_rate(args.jpeg / "train", n_jpeg)
        result["imagefolder_jpeg"] = {"images": n_jpeg, "images_per_s": round(rate, 1), "batch_size": 256, "num_workers": 0}
        print(f"ImageFolder JPEG: {rate:.0f} images/s")

    classes = [f"c{i}" for i in range(10)]
    spec = image_spec([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616], (3, 32, 32), (-1.0, 1.0))  # biggan32's
    with tempfile.TemporaryDirectory() as tmp:
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
    result["file_sizes_paper_config"] = sizes
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
