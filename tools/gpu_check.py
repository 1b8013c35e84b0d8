#!/usr/bin/env python
"""The Python half of tools/gpu_check.sh: the environment, the check's data, file comparison, speed, estimates.

    python tools/gpu_check.py env --json OUT/env-gpu.json
    python tools/gpu_check.py make-data tests/data/gpu_check.npz      # the smoke encode's input (shipped)
    python tools/gpu_check.py compare ONE.lds TWO.lds --json OUT/torchrun-gpu.json
    python tools/gpu_check.py speed --device cuda --json OUT/speed-gpu.json
    python tools/gpu_check.py estimate OUT/speed-gpu.json --json OUT/estimate-gpu.json

``speed`` measures, fp32 against the plan's precision (``latentds.plan``, "auto" for this device):
- decoding images/s of a BigGAN-32 (random weights; speed does not depend on them) at the paper's width 64,
  batch 256 and 1,024 on a GPU (width 16, batch 16 and 64 on a CPU), and how far the plan's images are
  from fp32's;
- one step of each encode stage and of eval at a preset's sizes (paper and fast on a GPU, smoke on a CPU):
  a GAN iteration (its D steps and G step), a classifier step, an inversion pass (``units_per_pass`` units),
  a condensation step, an eval training step. Each is (time of 1 + N steps - time of 1 step) / N, synced,
  so set-up and first-call costs cancel.
``estimate`` turns the step costs into whole-set CIFAR-10 figures (50,000 images, 10 classes): seconds per
stage and GPU-hours on one device, and with the parallel stages (inversion, condensation) over 8 devices.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

CIFAR10 = (10, 5000)  # classes, training images per class
CHECK_CLASSES = ["red", "green", "blue", "grey"]
# preset -> overrides: whole-set runs of the paper's settings and of the project's fastest path ("fast")
ESTIMATES = {"paper": ["ipc=null"], "fast": ["ipc=null"]}
QUICK = ["gan.batch_size=8", "classifier.batch_size=32", "classifier.width=16", "condense.batch_real=32",
         "condense.batch_syn=8", "invert.batch_size=8"]  # the CPU run: every stage at toy sizes


# --- env, data, compare ---------------------------------------------------------------------------------
def env(device: str) -> dict[str, Any]:
    """torch, CUDA, the device, its bf16 support and the plan latentds chooses for it."""
    from latentds.plan import get_plan, machine_info

    info: dict[str, Any] = {"python": platform.python_version(), "cuda_available": torch.cuda.is_available(),
                            "cuda_devices": torch.cuda.device_count(), "cudnn": torch.backends.cudnn.version()}
    info.update(machine_info(device))
    plan = get_plan(device, "auto")
    info["plan"] = {**plan.to_dict(), "describe": plan.describe()}
    if torch.device(device).type == "cuda":
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
        info["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    try:
        info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                             "--format=csv,noheader"], capture_output=True, text=True,
                                            timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["nvidia_smi"] = None
    return info


def make_data(out: Path, per_class: int = 24, test_per_class: int = 8) -> Path:
    """A small 4-class 32x32 RGB set with a test split: a class-coloured disc on grey, mild noise (compresses
    to well under 300 KB). Deterministic: the same arrays on every machine."""
    rng = np.random.default_rng(2024)
    yy, xx = np.mgrid[0:32, 0:32]
    colours = np.array([[220, 40, 40], [40, 200, 40], [40, 40, 220], [128, 128, 128]], dtype=np.float64)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for c, colour in enumerate(colours):
            for _ in range(n):
                cy, cx, r = rng.integers(8, 24), rng.integers(8, 24), rng.integers(5, 10)
                disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r)[..., None]
                img = np.where(disc, colour, 100.0) + rng.integers(-6, 7, (32, 32, 3))
                images.append(np.clip(img, 0, 255).astype(np.uint8))
                labels.append(c)
        return np.stack(images), np.array(labels, dtype=np.int64)

    x, y = draw(per_class)
    x_test, y_test = draw(test_per_class)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, images=x, labels=y, classes=np.array(CHECK_CLASSES), x_test=x_test, y_test=y_test)
    return out


def compare(a: Path, b: Path) -> dict[str, Any]:
    """Every tensor of two .lds files: bit-equal or not, and the largest absolute difference."""
    from latentds.format import LdsReader

    ra, rb = LdsReader(a, verify=True), LdsReader(b, verify=True)
    if set(ra.tensors) != set(rb.tensors):
        return {"same_names": False, "bitwise_equal": False}
    diffs = {n: float((ra.tensor(n).double() - rb.tensor(n).double()).abs().max()) if ra.tensor(n).numel() else 0.0
             for n in ra.tensors}
    worst = max(diffs, key=diffs.get)
    return {"same_names": True, "bitwise_equal": all(torch.equal(ra.tensor(n), rb.tensor(n)) for n in ra.tensors),
            "max_abs_diff": diffs[worst], "worst_tensor": worst, "tensors": len(diffs),
            "latents_max_abs_diff": diffs.get("latents")}


# --- speed ------------------------------------------------------------------------------------------------
def synced(device: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def step_seconds(run: Callable[[int], Any], sync: Callable[[], None], extra: int) -> float:
    """Seconds per step of ``run(n)`` (which runs n steps): (t(1 + extra) - t(1)) / extra, after a warm-up."""
    run(1)
    times = []
    for n in (1, 1 + extra):
        sync()
        t = time.perf_counter()
        run(n)
        sync()
        times.append(time.perf_counter() - t)
    if times[1] <= times[0]:  # noise larger than the steps (toy sizes on a busy CPU): an upper bound instead
        return times[1] / (1 + extra)
    return (times[1] - times[0]) / extra


def decode_speed(device: torch.device, width: int, batches: list[int], seconds: float) -> list[dict[str, Any]]:
    """Images/s of LatentDataset.decode, fp32 against the plan's precision, and the plan's error."""
    from latentds import LatentDataset, image_spec, save_lds
    from latentds.models import create_model

    sync, rows = synced(device), []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        g = create_model("biggan32", num_classes=10, width=width).eval()
        n = max(batches) * 2
        path = save_lds(Path(tmp) / "g.lds", g, torch.randn(n, 128), torch.arange(n) % 10, [str(i) for i in range(10)],
                        image_spec([0.5] * 3, [0.25] * 3, g.contract.image_shape, g.contract.output_range))
        sets = {p: LatentDataset(path, device=device, precision=p, normalize=False) for p in ("fp32", "auto")}
        for bs in batches:
            idx = np.arange(bs)
            row: dict[str, Any] = {"generator": f"biggan32 width {width}", "batch": bs,
                                   "plan_precision": sets["auto"].plan.precision}
            for name, ds in sets.items():
                ds.decode(idx)  # load the generator, warm the kernels
                reps, start = 0, time.perf_counter()
                while reps < 2 or time.perf_counter() - start < seconds:
                    ds.decode(idx)
                    reps += 1
                sync()
                rate = bs * reps / (time.perf_counter() - start)
                row[f"images_per_s_{'plan' if name == 'auto' else name}"] = round(rate, 1)
            row["plan_over_fp32"] = round(row["images_per_s_plan"] / row["images_per_s_fp32"], 2)
            err = (sets["auto"].decode(idx)[0] - sets["fp32"].decode(idx)[0]).abs()
            row["plan_vs_fp32_max_levels"] = round(float(err.max()) * 255, 3)
            row["plan_vs_fp32_mean_levels"] = round(float(err.mean()) * 255, 4)
            rows.append(row)
            print(row, flush=True)
    return rows


def stage_steps(cfg: Any, device: torch.device, precision: str, extra: int, eval_width: int = 128) -> dict[str, float]:
    """Seconds per step of each stage at ``cfg``'s sizes, under ``precision``'s training compute."""
    from latentds.encoding import (
        EmbeddingSampler,
        condense_unit,
        invert_latents,
        random_convnet,
        train_classifier,
        train_gan,
        units_per_pass,
    )
    from latentds.models import create_model
    from latentds.plan import get_plan

    condense_stage = condense_unit
    compute = get_plan(device, precision).compute()
    sync = synced(device)
    data = _synthetic_set(max(cfg.gan.batch_size, cfg.classifier.batch_size, cfg.condense.batch_real) * 2)
    mean, std = data.mean_std()
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        gan_cfg = replace(cfg.gan, ema_start=0, checkpoint_every=10**9, sample_every=0)
        out["gan_iteration_s"] = step_seconds(lambda n: train_gan(
            data, replace(gan_cfg, iterations=n), tempfile.mkdtemp(dir=tmp), device, False, compute=compute),
            sync, extra)
        cls_cfg = replace(cfg.classifier, snapshot_every=10**6)
        steps_per_epoch = math.ceil(len(data) / cls_cfg.batch_size)
        out["classifier_step_s"] = step_seconds(lambda n: train_classifier(
            data, replace(cls_cfg, epochs=n), tempfile.mkdtemp(dir=tmp), device, False, compute=compute),
            sync, extra) / steps_per_epoch
    gen = compute.prepare(create_model(cfg.gan.arch, num_classes=10, width=cfg.gan.width).to(device).eval()
                          .requires_grad_(False))
    net = compute.prepare(random_convnet(cfg.classifier.width or 128, 10, torch.Generator().manual_seed(0), device))
    per_pass = units_per_pass(cfg.invert, device)
    n_inv = cfg.invert.batch_size * per_pass
    idx = torch.arange(n_inv) % len(data)
    z0 = torch.randn(n_inv, gen.latent_dim, generator=torch.Generator().manual_seed(1))
    groups = list(torch.arange(n_inv).split(cfg.invert.batch_size))
    out["invert_pass_s"] = step_seconds(lambda n: invert_latents(
        gen, data.images[idx], data.labels[idx] * 0, z0, groups, net, replace(cfg.invert, iterations=n), mean, std,
        device, compute), sync, extra)
    out["invert_units_per_pass"] = per_pass
    sampler = EmbeddingSampler([net], cfg.condense.random_width, cfg.condense.pool_prob, 10, 3, 32, device)
    b_syn = min(cfg.condense.batch_syn, cfg.subset_size)
    z = torch.randn(b_syn, gen.latent_dim, generator=torch.Generator().manual_seed(2))
    pair, reals = data.images[torch.arange(b_syn) % len(data)], data.images
    out["condense_step_s"] = step_seconds(lambda n: condense_stage(
        gen, z, pair, reals, 0, sampler, replace(cfg.condense, iterations=n, eval_nets=0), mean, std, 0, device,
        compute=compute), sync, extra)
    out["eval_step_s"] = _eval_step(data, device, precision, sync, extra, eval_width)
    return {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in out.items()}


def _eval_step(data: Any, device: torch.device, precision: str, sync: Callable[[], None], extra: int,
               width: int) -> float:
    """One training step of the eval protocol (ConvNet-3 of ``width``, batch 256, per-image DSA)."""
    from latentds.evaluation import EvalConfig, TrainSet, train_and_test

    mean, std = data.mean_std()
    x = (data.images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    train = TrainSet(images=x, labels=data.labels, classes=data.classes, mean=mean, std=std, description="synthetic",
                     bytes=0, spec="synthetic")
    test = replace(data, images=data.images[:16], labels=data.labels[:16])
    steps_per_epoch = math.ceil(len(data) / 256)

    def run(n: int) -> None:
        train_and_test(train, test, EvalConfig(model_args={"width": width}, epochs=n, seeds=1, device=str(device),
                                               precision=precision, eval_every=0), progress=False)

    return step_seconds(run, sync, extra) / steps_per_epoch


def _synthetic_set(n: int):
    from latentds.sources import ImageSet

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return ImageSet.from_tensors(images, torch.arange(n) % 10, [f"c{i}" for i in range(10)], "synthetic")


def speed(device: torch.device, quick: bool, save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Decoding and stage steps, fp32 against the plan; ``quick``: the CPU's small sizes (a check that it runs).
    ``save`` gets the record after each part, so a run cut short by its time limit keeps what it measured."""
    from latentds.encoding import apply_overrides, load_preset
    from latentds.plan import get_plan

    plan = get_plan(device, "auto")
    result: dict[str, Any] = {"device": str(device), "quick": quick, "plan": plan.to_dict(), "stages": {}}
    result["decode"] = decode_speed(device, 16, [16, 64], 0.2) if quick else decode_speed(device, 64, [256, 1024], 1.0)
    save(result)
    for name in (["smoke"] if quick else list(ESTIMATES)):
        overrides = QUICK if quick else ESTIMATES[name]
        cfg = apply_overrides(load_preset(name), overrides)
        rows = {p: stage_steps(cfg, device, p, 1 if quick else 3, 16 if quick else 128)
                for p in dict.fromkeys(("fp32", plan.train_precision))}
        ratio = {k: round(rows["fp32"][k] / rows[plan.train_precision][k], 2) if rows[plan.train_precision][k] else None
                 for k in rows["fp32"] if k.endswith("_s")}
        result["stages"][name] = {"overrides": overrides, "seconds_per_step": rows, "plan_speedup": ratio,
                                  "plan_train_precision": plan.train_precision}
        print(name, result["stages"][name], flush=True)
        save(result)
    return result


# --- whole-set estimates ----------------------------------------------------------------------------------
def estimate(speed_record: dict[str, Any], devices: int = 8) -> dict[str, Any]:
    """Whole-set CIFAR-10 stage times from the measured step costs, at the plan's training precision."""
    from latentds.encoding import apply_overrides, load_preset

    classes, per_class = CIFAR10
    n = classes * per_class
    out: dict[str, Any] = {"dataset": "CIFAR-10 train (50,000 images, 10 classes)", "devices_parallel": devices}
    for name, stages in speed_record["stages"].items():
        cfg = apply_overrides(load_preset(name), stages["overrides"])  # the sizes the steps were measured at
        cost = stages["seconds_per_step"][stages["plan_train_precision"]]
        units = classes * math.ceil(per_class / cfg.subset_size)
        passes = math.ceil(n / (cfg.invert.batch_size * cost["invert_units_per_pass"]))
        cls_steps = math.ceil(n / cfg.classifier.batch_size)
        pool = getattr(cfg, "pool", None)
        pool_steps = (pool.runs * pool.epochs * math.ceil(min(pool.subset, n) / cfg.classifier.batch_size)
                      if pool is not None and getattr(pool, "runs", 0) else 0)
        s = {
            "gan": cfg.gan.iterations * cost["gan_iteration_s"],
            "classifier": cfg.classifier.epochs * cls_steps * cost["classifier_step_s"],
            "pool": pool_steps * cost["classifier_step_s"],
            "invert": passes * cfg.invert.iterations * cost["invert_pass_s"],
            "condense": units * math.ceil(min(cfg.subset_size, per_class) / cfg.condense.batch_syn)
            * cfg.condense.iterations * cost["condense_step_s"],
        }
        shared = s["gan"] + s["classifier"] + s["pool"]
        parallel = s["invert"] + s["condense"]
        out[name] = {
            "overrides": stages["overrides"], "precision": stages["plan_train_precision"],
            "stage_hours": {k: round(v / 3600, 2) for k, v in s.items()},
            "gpu_hours_one_device": round((shared + parallel) / 3600, 1),
            f"wall_hours_{devices}_devices": round((shared + parallel / min(devices, units)) / 3600, 1),
            "eval_convnet3_300_epochs_hours": round(300 * math.ceil(500 / 256) * cost["eval_step_s"] / 3600, 3),
        }
        steps = getattr(getattr(cfg, "amortized", None), "steps", 0)
        if steps:
            out[name]["not_timed"] = f"the latent encoder's training ({steps} steps of amortized.batch_size images)"
        print(name, out[name], flush=True)
    return out


# --- command line -------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("env")
    e.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    e.add_argument("--json", type=Path, required=True)
    m = sub.add_parser("make-data")
    m.add_argument("out", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--json", type=Path, required=True)
    c.add_argument("--atol", type=float, default=1e-2, help="accepted max |difference| where not bit-equal")
    s = sub.add_parser("speed")
    s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    s.add_argument("--json", type=Path, required=True)
    s.add_argument("--quick", action="store_true", help="CPU sizes: width 16, batches 16/64, the smoke preset")
    t = sub.add_parser("estimate")
    t.add_argument("speed", type=Path)
    t.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)
    if args.cmd == "make-data":
        print(f"wrote {make_data(args.out)} ({args.out.stat().st_size:,} bytes)")
        return 0
    command = "python tools/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:])

    def save(record: dict[str, Any]) -> dict[str, Any]:
        record = {"command": command, "torch": torch.__version__, "cuda": torch.version.cuda, **record}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")
        return record

    if args.cmd == "env":
        result = env(args.device)
    elif args.cmd == "compare":
        result = compare(args.a, args.b)
        result["atol"] = args.atol
        result["ok"] = bool(result.get("bitwise_equal") or result.get("max_abs_diff", math.inf) <= args.atol)
    elif args.cmd == "speed":
        device = torch.device(args.device)
        if device.type == "cpu":
            torch.set_num_threads(1)  # a busy 2-core machine: no thread oversubscription
        result = speed(device, args.quick or device.type != "cuda", save)
    else:
        result = estimate(json.loads(args.speed.read_text()))
    result = save(result)
    print(f"wrote {args.json}")
    return 0 if result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
