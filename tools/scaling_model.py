#!/usr/bin/env python
"""How `latentds encode` scales over ranks: work units per dataset, work per unit, and the time at N ranks.

    python tools/scaling_model.py                       # cpu preset, measured on this machine
    python tools/scaling_model.py --preset paper --device cuda --ranks 1 8 64
    python tools/scaling_model.py --json bench/results/scaling-cpu.json

What runs in parallel under torchrun is inversion (one item per unit of ``invert.batch_size`` images of a
class; ``units_per_pass`` of a rank's units share a forward pass) and condensation (one item per (class,
subset) work unit); the generator and the feature ConvNet are trained once, by rank 0, before.
This script times a few iterations of inversion and condensation on random weights and random images of the
preset's sizes (the cost does not depend on the values), builds the items of three dataset shapes, deals them
to N ranks exactly as the encode does (:func:`latentds.encoding.distributed.assign`) and prints the busiest
rank's time. It assumes ranks as fast as this process and no other load; data loading and the shared stages
are listed, not modelled.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from latentds.encoding import (
    EmbeddingSampler,
    apply_overrides,
    assign,
    condense_unit,
    invert_images,
    load_preset,
    units_per_pass,
    work_units,
)
from latentds.models import create_model

# (name, classes, training images per class): the CIFAR sets, and ImageNet's size at 32x32 (ImageNet32).
DATASETS = (("CIFAR-10", 10, 5000), ("CIFAR-100", 100, 500), ("ImageNet-size (1.28 M, 1000 classes)", 1000, 1281))
PROBE_ITERATIONS = 3


def per_iteration(fn, iterations: int) -> float:
    fn(1)  # warm-up: first calls pay one-off costs
    t = time.perf_counter()
    fn(iterations)
    return (time.perf_counter() - t) / iterations


def measure(cfg, device: torch.device) -> dict[str, float]:
    """Seconds per optimizer step: inversion of one pass (``units_per_pass`` units), condensation of one batch."""
    g = torch.Generator().manual_seed(0)
    gen = create_model(cfg.gan.arch, num_classes=10, width=cfg.gan.width).to(device).eval().requires_grad_(False)
    net = create_model(cfg.classifier.arch, num_classes=10, width=cfg.classifier.width).to(device).eval()
    net.requires_grad_(False)
    mean, std = [0.5] * 3, [0.25] * 3

    def images(n: int) -> torch.Tensor:
        return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)

    per_pass = units_per_pass(cfg.invert, device)
    b_inv = cfg.invert.batch_size * per_pass
    inv_imgs, inv_labels = images(b_inv), torch.arange(b_inv) // cfg.invert.batch_size % 10
    inv = per_iteration(lambda it: invert_images(gen, inv_imgs, inv_labels, net, replace(cfg.invert, iterations=it), mean, std,
                                          0, device), PROBE_ITERATIONS)
    b_syn = cfg.condense.batch_syn
    z = torch.randn(b_syn, gen.latent_dim, generator=g)
    pair, reals = images(b_syn), images(max(cfg.condense.batch_real, 1000))
    sampler = EmbeddingSampler([net], cfg.condense.random_width, cfg.condense.pool_prob, 10, 3, 32, device)
    con = per_iteration(lambda it: condense_unit(gen, z, pair, reals, 0, sampler,
                                            replace(cfg.condense, iterations=it, eval_nets=0), mean, std, 0, device),
                        PROBE_ITERATIONS)
    return {"invert_pass_s": inv, "units_per_pass": per_pass, "condense_batch_s": con}


def model(cfg, cost: dict[str, float], classes: int, per_class: int, ranks: list[int]) -> dict:
    labels = torch.arange(classes).repeat_interleave(per_class)
    units = work_units(labels, cfg.subset_size)
    # one item per inversion unit, costed as its share of a pass
    inv_units = classes * math.ceil(per_class / cfg.invert.batch_size)
    inv_items = [cfg.invert.iterations * cost["invert_pass_s"] / cost["units_per_pass"]] * inv_units
    con_items = [cfg.condense.passes(per_class) * math.ceil(len(u.indices) / cfg.condense.batch_syn)
                 * cost["condense_batch_s"] for u in units]

    def makespan(items: list[float], n: int) -> float:
        owner = assign(items, n)
        return max(sum(c for c, o in zip(items, owner) if o == r) for r in range(n))

    return {
        "classes": classes, "images": classes * per_class, "units": len(units), "invert_units": inv_units,
        "unit_size": [min(len(u.indices) for u in units), max(len(u.indices) for u in units)],
        "invert_per_class_s": inv_items[0] * inv_units / classes, "condense_per_unit_s": max(con_items),
        "serial_s": sum(inv_items) + sum(con_items),
        "by_ranks": {n: makespan(inv_items, n) + makespan(con_items, n) for n in ranks},
    }


def hours(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h" if s < 172800 \
        else f"{s / 86400:.1f} d"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--ranks", nargs="+", type=int, default=[1, 2, 8, 64])
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = apply_overrides(load_preset(args.preset), list(args.set))
    device = torch.device(args.device)
    cost = measure(cfg, device)
    print(f"preset {args.preset}{' ' + ' '.join(args.set) if args.set else ''}; {device}, {torch.get_num_threads()} "
          f"threads: inversion {cost['invert_pass_s'] * 1000:.0f} ms per step of {cfg.invert.batch_size * cost['units_per_pass']} "
          f"latents ({cost['units_per_pass']} unit{'s' if cost['units_per_pass'] > 1 else ''} per pass), "
          f"condensation {cost['condense_batch_s'] * 1000:.0f} ms per step of {cfg.condense.batch_syn} latents "
          f"({cfg.invert.iterations} and {cfg.condense.iterations} steps"
          f"{f', at most, {cfg.condense.pass_budget:,} latent-passes per class' if cfg.condense.pass_budget else ''}"
          f", subsets of {cfg.subset_size})")
    print("shared stages, once, on rank 0 (not modelled): loading the source on every rank, "
          f"GAN {cfg.gan.iterations} iterations, ConvNet {cfg.classifier.epochs} epochs")
    rows = {}
    head = "".join(f"{f'{n} rank' + ('s' if n > 1 else ''):>12}" for n in args.ranks)
    print(f"{'dataset':38} {'inv units':>9} {'cond units':>10} {'per class inv':>14} {'per unit cond':>14}{head}")
    for name, k, per_class in DATASETS:
        r = model(cfg, cost, k, per_class, args.ranks)
        rows[name] = r
        cols = "".join(f"{hours(r['by_ranks'][n]):>12}" for n in args.ranks)
        print(f"{name:38} {r['invert_units']:>9} {r['units']:>10} {hours(r['invert_per_class_s']):>14} "
              f"{hours(r['condense_per_unit_s']):>14}{cols}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"command": "python tools/scaling_model.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "preset": args.preset, "overrides": args.set, "device": str(device),
                  "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "cost_s": cost, "datasets": rows}
        args.json.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
