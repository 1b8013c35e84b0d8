"""Speed on the hardware at hand: the machine's matmul rates, decoding, loader overhead, every encode stage.

    python tools/bench_speed.py [--device cpu|cuda] [--out bench/results/speed-cpu.json] [--quick]

Measures, in one run on this machine (figures compare only within the run):
- matmul GFLOP/s in fp32 and bf16 (bf16 is emulated, and slow, on CPUs without AVX512-BF16/AMX);
- the execution plan latentds chooses here (``latentds info --system``) and what it measured;
- decoding, BigGAN-32 at width 16 and at the paper's width 64 (3.36 GFLOP per image), batch 1/16/64/256:
  ``LatentDataset.__getitems__`` with the fixed fp32 plan (what 0.1 shipped: fp32, contiguous, chunks of 16)
  against the chosen plan, and the bare generator's best forward rate under the plan; images/s and the
  fraction of the measured matmul rate of the dtype used;
- loader overhead: ``DataLoader(LatentDataset(p), batch_size=256)`` with 0 and 2 workers against that best
  bare rate;
- per-stage encode throughput, fp32 against the plan: GAN iterations/s (the cpu preset's width-16 BigGAN,
  batch 32, 2 D steps), classifier images/s (ConvNet-3 width 128), inversion and condensation steps/s
  (units of 50 latents; 10 latents against 128 real images per class), eval images/s (ConvNet-3 width 128).
Generators and nets are randomly initialised: speed does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from latentds import LatentDataset, image_spec, save_lds
from latentds.models import count_parameters, create_model
from latentds.plan import Compute, get_plan, machine_info

CLASSES = [f"c{i}" for i in range(10)]
SPEC = image_spec([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616], (3, 32, 32), (-1.0, 1.0))  # biggan32's


def timed(fn: Callable[[], Any], min_seconds: float, sync: Callable[[], None], min_reps: int = 2) -> float:
    """Seconds per call: one warm-up, then repeat until min_seconds and min_reps are reached."""
    fn()
    sync()
    reps, start = 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - start < min_seconds:
        fn()
        reps += 1
    sync()
    return (time.perf_counter() - start) / reps


def fixed_fp32(path: Path, device: torch.device) -> LatentDataset:
    """latentds 0.1's decoding: fp32, contiguous, chunks of 16 (before the plan existed)."""
    ds = LatentDataset(path, device=device, precision="fp32", max_decode_batch=16)
    ds.plan = replace(ds.plan, channels_last=False)
    return ds


def matmul_gflops(device: torch.device, sync: Callable[[], None], quick: bool) -> dict[str, float]:
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        n = 4096 if device.type == "cuda" else 2048
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        t0 = time.perf_counter()
        a[:256] @ b  # a first look: bf16 without hardware support can be 100x slower; shrink then
        sync()
        if time.perf_counter() - t0 > 0.05:
            n = 512
            a, b = a[:n, :n].contiguous(), b[:n, :n].contiguous()
        out[f"matmul_{name}_gflops"] = round(2 * n**3 / timed(lambda: a @ b, 0.5 if quick else 1.5, sync) / 1e9, 1)
    return out


def generator_flops(model: nn.Module) -> float:
    """FLOPs (2 x multiply-adds) of conv and linear layers for one image."""
    total = 0

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += 2 * output.numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, nn.Linear):
            total += 2 * output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.randn(1, model.latent_dim), torch.zeros(1, dtype=torch.long))
    for h in handles:
        h.remove()
    return float(total)


def decode_rows(path: Path, width: int, device: torch.device, sync: Callable[[], None], batches: list[int],
                min_seconds: float, matmul: dict[str, float]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    g = create_model("biggan32", num_classes=10, width=width)
    flops = generator_flops(g)
    old = fixed_fp32(path, device)
    new = LatentDataset(path, device=device)  # the plan: its hardware class's rule
    plan = new.plan
    for ds in (old, new):
        ds.decode([0])  # load the generator outside the timing
    rng = np.random.default_rng(width)
    rows = []
    for bs in batches:
        rates = {}
        for name, ds in (("fp32", old), ("plan", new)):
            rates[name] = bs / timed(lambda: ds.__getitems__(rng.integers(0, len(ds), bs).tolist()), min_seconds, sync)
        peak = matmul[f"matmul_{plan.precision}_gflops"] if plan.precision != "fp16" else None
        row = {
            "generator": f"biggan32 width {width}", "params": count_parameters(g), "gflop_per_image": round(flops / 1e9, 3),
            "batch_size": bs, "images_per_s_fp32": round(rates["fp32"], 1), "images_per_s_plan": round(rates["plan"], 1),
            "speedup": round(rates["plan"] / rates["fp32"], 2),
            "fraction_of_fp32_matmul_fp32": round(rates["fp32"] * flops / 1e9 / matmul["matmul_fp32_gflops"], 3),
            "fraction_of_matmul_plan": round(rates["plan"] * flops / 1e9 / peak, 3) if peak else None,
        }
        rows.append(row)
        print(row, flush=True)
    # The bare generator under the plan: its best forward rate over chunk sizes, latents already in memory.
    gen = new._generator
    best = {"images_per_s": 0.0}
    for chunk in sorted({plan.decode_chunk, 16, 64, 256} if device.type == "cpu" else {plan.decode_chunk, 1024}):
        z = torch.randn(chunk, g.latent_dim, device=device, dtype=plan.decode_dtype)
        y = (torch.arange(chunk) % 10).to(device)
        with torch.no_grad():
            rate = chunk / timed(lambda: gen(z, y), min_seconds, sync)
        if rate > best["images_per_s"]:
            best = {"images_per_s": round(rate, 1), "chunk": chunk}
    return rows, {"plan": plan.to_dict(), "bare_best": best}


def loader_rates(path: Path, device: torch.device, images: int) -> dict[str, float]:
    from torch.utils.data import DataLoader

    out = {}
    for workers in ((0,) if device.type == "cuda" else (0, 2)):
        ds = LatentDataset(path, device=device)
        loader = DataLoader(ds, batch_size=256, shuffle=True, num_workers=workers, persistent_workers=workers > 0,
                            generator=torch.Generator().manual_seed(0))
        it = iter(loader)
        next(it)  # workers started and the generator loaded outside the timing
        n, start = 0, time.perf_counter()
        for x, _ in it:
            n += x.shape[0]
            if n >= images:
                break
        out[f"workers_{workers}"] = round(n / (time.perf_counter() - start), 1)
        del it, loader
    return out


# --- encode stages ----------------------------------------------------------------------------------------
def synthetic_set(n_per_class: int = 200):
    from latentds.sources import ImageSet

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10 * n_per_class, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.arange(10).repeat_interleave(n_per_class)
    return ImageSet.from_tensors(images, labels, CLASSES, "synthetic")


def stage_rates(device: torch.device, compute: Compute, quick: bool) -> dict[str, float]:
    from latentds.encoding import (
        ClassifierConfig,
        CondenseConfig,
        EmbeddingSampler,
        GANConfig,
        InvertConfig,
        condense_unit,
        invert_latents,
        random_convnet,
        train_classifier,
        train_gan,
    )
    from latentds.evaluation import EvalConfig, TrainSet, train_and_test

    data = synthetic_set()
    mean, std = data.mean_std()
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        its = 4 if quick else 12
        gan_cfg = GANConfig(width=16, disc_width=16, iterations=its, batch_size=32, d_steps=2, ema_start=0,
                            checkpoint_every=10_000)
        _, st = train_gan(data, gan_cfg, Path(tmp) / "gan", device, False, compute=compute)
        out["gan_iterations_per_s"] = round(st["iterations_per_s"], 3)
        cls_cfg = ClassifierConfig(width=128, epochs=1)
        _, st = train_classifier(data, cls_cfg, Path(tmp) / "cls", device, False, compute=compute)
        out["classifier_images_per_s"] = round(st["images_per_s"], 1)

    gen = compute.prepare(create_model("biggan32", num_classes=10, width=16).to(device).eval().requires_grad_(False))
    net = compute.prepare(random_convnet(64, 10, torch.Generator().manual_seed(0), device))
    idx = torch.arange(50)  # one unit: 50 images of class 0
    z0 = torch.randn(50, 128, generator=torch.Generator().manual_seed(1))
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    steps = 3 if quick else 10

    def run_invert() -> None:
        invert_latents(gen, data.images[idx], data.labels[idx], z0, [torch.arange(50)], net,
                       InvertConfig(iterations=steps, batch_size=50), mean, std, device, compute)

    out["invert_steps_per_s_unit50"] = round(steps / timed(run_invert, 1.0, sync, 1), 2)
    sampler = EmbeddingSampler([net], 64, 1.0, 10, 3, 32, device)
    cfg = CondenseConfig(iterations=steps, batch_real=128, batch_syn=500, random_width=64, eval_nets=0)
    reals = data.images[data.class_indices(0)]

    def run_condense() -> None:
        condense_unit(gen, z0[:10], data.images[:10], reals, 0, sampler, cfg, mean, std, 0, device, compute=compute)

    out["condense_steps_per_s_ipc10"] = round(steps / timed(run_condense, 1.0, sync, 1), 2)
    train = TrainSet(images=((data.images[:500].float() / 255 - 0.5) / 0.25), labels=data.labels[:500], classes=CLASSES,
                     mean=mean, std=std, description="synthetic", bytes=0, spec="synthetic", ipc=None,
                     image_shape=(3, 32, 32))
    eval_cfg = EvalConfig(arch="convnet3", epochs=1 if quick else 2, seeds=1, device=str(device))
    test = replace(data, images=data.images[:100], labels=data.labels[:100])
    epochs = eval_cfg.epochs
    t = time.perf_counter()
    train_and_test(train, test, replace(eval_cfg, seeds=1), progress=False)  # the plan's compute, as eval runs
    sync()
    out["eval_images_per_s"] = round(500 * epochs / (time.perf_counter() - t), 1)
    return out


def cpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in text.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/speed-<device type>.json")
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default: 1 16 64 256 (CPU)")
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="shorter timings (a check that the script runs)")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    batches = args.batch_sizes or ([1, 64, 256, 1024, 4096] if cuda else [1, 16, 64, 256])
    command = "python tools/bench_speed.py" + (f" --device {args.device}" if args.device != "cpu" else "")
    torch.manual_seed(0)
    result: dict[str, Any] = {"command": command + (" --quick" if args.quick else ""),
                              "machine": {**machine_info(device), "cpu_model": cpu_model(), "platform": platform.platform()}}
    result["machine"].update(matmul_gflops(device, sync, args.quick))
    print(f"machine: {result['machine']}", flush=True)

    rows, extra = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for width in args.widths:
            g = create_model("biggan32", num_classes=10, width=width).eval()
            path = save_lds(Path(tmp) / f"w{width}.lds", g, torch.randn(8192, 128), torch.arange(8192) % 10, CLASSES, SPEC)
            r, e = decode_rows(path, width, device, sync, batches, args.min_seconds, result["machine"])
            rows += r
            images = 256 * (2 if args.quick else 4 if width >= 64 else 16)
            e["loader_images_per_s"] = loader_rates(path, device, images)
            e["loader_vs_bare"] = {k: round(v / e["bare_best"]["images_per_s"], 2) for k, v in e["loader_images_per_s"].items()}
            print(f"width {width}: {e['bare_best']}, loader {e['loader_images_per_s']} -> {e['loader_vs_bare']}", flush=True)
            extra[f"width_{width}"] = e
    result["decode"] = rows
    result["decode_plan_and_loader"] = extra

    plan = get_plan(device, "auto")
    stages = {"fp32": stage_rates(device, Compute(device), args.quick)}
    print(f"stages fp32: {stages['fp32']}", flush=True)
    stages["plan"] = stage_rates(device, plan.compute(), args.quick)
    print(f"stages plan ({plan.compute().describe()}): {stages['plan']}", flush=True)
    stages["speedup"] = {k: round(stages["plan"][k] / stages["fp32"][k], 2) for k in stages["fp32"]}
    stages["plan_compute"] = plan.compute().describe()
    stages["hardware_class"] = plan.hardware
    result["encode_stages"] = stages
    out = args.out or Path(f"bench/results/speed-{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
