"""What the storage options change in the decoded images: one encode written three ways, decoded and compared.

    python bench/storage_fidelity.py            # after `python bench/per_byte.py --only lds_fp16 --budgets 100`

The per-byte benchmark's 100-per-class encode (its work dir, ``--work``) is written with int8 latents and an fp16
generator (the budget's file), fp16 latents and an fp16 generator, and fp32 latents and an fp32 generator (the
reference), each from the same work dir, so the latents differ only by how they are stored. All three are
decoded in fp32 and compared pixel by pixel in 8-bit grey levels (0-255) after un-normalizing: the mean and
largest absolute difference and the PSNR against the fp32 reference. Paired, on the same images, this has no
seed noise; the per-byte cells give what the same options cost in ConvNet-3 accuracy. For scale, the same
figures for real images shipped as quality-20 JPEG mosaics against the originals. Figures go to
bench/results/storage-fidelity-cpu.json with the command.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tools"))
import per_byte as pb  # noqa: E402

OPTIONS = {"int8 latents, fp16 generator": ("int8", "float16"),
           "fp16 latents, fp16 generator": ("float16", "float16"),
           "fp32 latents, fp32 generator": ("float32", "float32")}
REFERENCE = "fp32 latents, fp32 generator"


def pixels(path: Path):
    """Every image of the file decoded in fp32 to 0-255 (float, not rounded), and its labels."""
    import torch

    import latentds

    ds = latentds.LatentDataset(str(path), precision="fp32", normalize=False)  # [0, 1]: no manifest mean/std here
    images, labels = ds.decode(range(len(ds)))
    return images.float().clamp(0, 1) * 255, torch.as_tensor(labels)


def jpeg_scale(quality: int = 20, n: int = 6400) -> dict:
    """For scale: what quality-Q mosaics change in real images (the first ``n`` of the class-balanced order, in
    whole mosaics), in the same units, against the originals."""
    import numpy as np

    from byte_budget import class_balanced_order, mosaic_bytes, unmosaic
    from latentds.sources import load_source

    data = load_source(pb.DATA_DEFAULT, split="train", progress=False)
    images = data.images.permute(0, 2, 3, 1).numpy()[class_balanced_order(data.labels.numpy(), seed=0)[:n]]
    back = unmosaic(*mosaic_bytes(images, quality)).astype(np.float64)
    diff = np.abs(back - images)
    return {"images": n, "quality": quality, "mean_abs_levels": round(float(diff.mean()), 4),
            "max_abs_levels": round(float(diff.max()), 3),
            "psnr_db": round(10 * math.log10(255 ** 2 / float((diff ** 2).mean())), 2)}


def main() -> int:
    import latentds

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", default="100", choices=[b for b in pb.BUDGETS if b != "all" and b not in pb.SHARED_BUDGETS])
    p.add_argument("--work", type=Path, default=Path("../latentds-bench/per-byte"))
    p.add_argument("--out", type=Path, default=REPO / "bench/results/storage-fidelity-cpu.json")
    args = p.parse_args()
    work_dir = args.work / "encode" / f"itgan@{args.budget}.work"
    if not (work_dir / "config.json").exists():
        raise SystemExit(f"{work_dir}: no encode here; run `python bench/per_byte.py --only lds_fp16 --budgets "
                         f"{args.budget}` first (its work dir is what is written three ways)")
    files, decoded = {}, {}
    for name, (latents, generator) in OPTIONS.items():
        out = args.work / "fidelity" / f"{args.budget}-{latents}-{generator}.lds"
        if not out.exists():
            latentds.encode(pb.DATA_DEFAULT, out, "fast", work_dir=work_dir, generator=pb.GENERATOR, progress=False,
                            overrides=[f"ipc={pb.BUDGETS[args.budget]}", f"latent_dtype={latents}",
                                       f"generator_dtype={generator}"], precision=pb.PRECISION, device="cpu")
        files[name] = out.stat().st_size
        decoded[name] = pixels(out)
    ref, ref_labels = decoded[REFERENCE]
    results = {}
    for name, (images, labels) in decoded.items():
        if not labels.equal(ref_labels):
            raise SystemExit(f"{name}: labels differ from the reference's: not the same encode")
        diff = (images - ref).abs()
        mse = float((diff ** 2).mean())
        results[name] = {"bytes": files[name], "mean_abs_levels": round(float(diff.mean()), 4),
                         "max_abs_levels": round(float(diff.max()), 3),
                         "psnr_db": None if mse == 0 else round(10 * math.log10(255 ** 2 / mse), 2)}
    from benchlib import machine

    record = {"command": f"python bench/storage_fidelity.py --budget {args.budget}", "machine": machine(),
              "images": len(ref), "reference": REFERENCE, "generator": str(pb.GENERATOR.relative_to(REPO)),
              "created": time.strftime("%Y-%m-%d"), "results": results,
              "for_scale_real_images_as_jpeg_mosaics": jpeg_scale()}
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
