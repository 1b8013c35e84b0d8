"""What amortized inversion costs in accuracy: per-image inversion (the paper's) against a trained latent encoder.

    python bench/amortized_ablation.py --ipc 10 --work ../latentds-bench/amortized

At a size where both fit on a CPU (10 images per class by default), the same images of CIFAR-10 are inverted
into the committed benchmark generator's latent space (bench/artifacts/, BigGAN-32 width 16) in several ways:

- ``per_image``: z0 ~ N(0, I), then ``invert.iterations`` Adam steps per unit of 50 (the ``cpu`` preset: 500)
- ``encoder+K``: z0 = E(x, y) from a latent encoder trained once on the whole training set
  (latentds.encoding.amortized), then K of the same per-image steps (K = 0, 20, 100)

Each set of latents is written as a .lds and evaluated like every benchmark cell (ConvNet-3, the CPU schedule,
3 seeds); the record has the inversion's CPU time and reconstruction error next to the accuracy, and what the
whole training set would cost each way. Every step is cached in --work: a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import latentds  # noqa: E402
from latentds.checkpoint import load_model  # noqa: E402
from latentds.encoding import (  # noqa: E402
    AmortizedConfig,
    ClassifierConfig,
    InvertConfig,
    invert_latents,
    predict_latents,
    train_classifier,
    train_encoder,
)
from latentds.plan import get_plan  # noqa: E402
from latentds.sources import load_source  # noqa: E402

GENERATOR = REPO / "bench/artifacts/cifar10-biggan32-w16-2000it.safetensors"
DATA = "../shared/datasets/cifar10-jpeg"


def select(labels: torch.Tensor, ipc: int, seed: int) -> torch.Tensor:
    """``ipc`` image positions per class, drawn with ``seed``, in class order."""
    gen = torch.Generator().manual_seed(seed)
    out = [idx[torch.randperm(len(idx), generator=gen)[:ipc]].sort().values
           for idx in (torch.nonzero(labels == c).flatten() for c in labels.unique())]
    return torch.cat(out)


def invert(generator, feature_net, images, labels, z0, iterations, mean, std, device, compute):
    """invert_latents over units of 50 images of one class, one unit per pass (the CPU default)."""
    cfg = InvertConfig(iterations=iterations, lr=0.1, batch_size=50)
    out, mses = torch.empty_like(z0), []
    for c in labels.unique():
        for part in torch.nonzero(labels == c).flatten().split(cfg.batch_size):
            z, stats = invert_latents(generator, images[part], labels[part], z0[part], [torch.arange(len(part))],
                                      feature_net, cfg, mean, std, device, compute)
            out[part] = z
            mses.append((stats[0]["final_recon_mse"], len(part)))
    return out, sum(m * n for m, n in mses) / sum(n for _, n in mses)


def make_record(args, plan, enc_cfg, enc_stats, encoder_cpu_s: float, results: dict, n_whole: int) -> dict:
    """The committed record: the command, the machine, each variant's accuracy and its whole-set inversion cost."""
    return {
        "command": "python bench/amortized_ablation.py " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}, {plan.hardware}",
        "precision": plan.describe(),
        "ipc": args.ipc,
        "generator": str(GENERATOR.relative_to(REPO)),
        "eval": {"arch": "convnet3", "epochs": args.epochs, "seeds": args.seeds},
        "encoder": {"config": enc_cfg.__dict__, "cpu_s": round(encoder_cpu_s, 1),
                    "final_loss": enc_stats["final_loss"]},
        "results": results,
        "whole_set_inversion_cpu_h": {
            name: round(r["inversion_cpu_s"] / r["latents"] * n_whole / 3600 + (
                0 if name == "per_image" else encoder_cpu_s / 3600), 2)
            for name, r in results.items()},
    }


def trained_encoder(generator, feature_net, data, enc_cfg, mean, std, work: Path, device, compute):
    """Train (or resume) the latent encoder; its CPU seconds are summed over the runs that trained it."""
    t0 = time.process_time()
    encoder, enc_stats = train_encoder(generator, feature_net, data.images, data.labels, enc_cfg, mean, std, seed=0,
                                       folder=work / "encoder", device=device, compute=compute,
                                       log=lambda line: print(line, flush=True))
    encoder_cpu_s = time.process_time() - t0
    cost_path = work / "encoder_cost.json"
    if enc_stats["resumed_from"] and not cost_path.exists():
        raise SystemExit(f"{work / 'encoder'} was trained elsewhere: its cost is unknown here; remove it to retrain")
    if enc_stats["resumed_from"] < enc_cfg.steps:
        before = json.loads(cost_path.read_text())["cpu_s"] if enc_stats["resumed_from"] else 0.0
        cost_path.write_text(json.dumps({"cpu_s": before + encoder_cpu_s}))
    return encoder, enc_stats, json.loads(cost_path.read_text())["cpu_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--work", type=Path, default=Path("../latentds-bench/amortized"))
    p.add_argument("--encoder-steps", type=int, default=1000)
    p.add_argument("--refine", type=int, nargs="+", default=[0, 20, 100])
    p.add_argument("--per-image-iterations", type=int, default=500)
    p.add_argument("--epochs", type=int, default=100, help="ConvNet-3 evaluation epochs (CPU schedule at 10/class)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", type=Path, default=REPO / "bench/results/amortized-cpu.json")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu")
    plan = get_plan(device)
    compute = plan.compute()
    data = load_source(DATA, split="train")
    mean, std = data.mean_std()
    generator = load_model(GENERATOR).eval().requires_grad_(False)
    feature_net, _ = train_classifier(data, ClassifierConfig(arch="convnet3", width=64, epochs=4, snapshot_every=1),
                                      args.work / "classifier", device, progress=False, compute=compute)
    feature_net = feature_net.eval().requires_grad_(False)
    idx = select(data.labels, args.ipc, seed=0)
    images, labels = data.images[idx], data.labels[idx]
    results_path = args.work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    variants: dict[str, tuple[torch.Tensor, float, float]] = {}

    if "per_image" not in results:
        z0 = torch.randn(len(idx), generator.contract.latent_dim, generator=torch.Generator().manual_seed(0))
        t0 = time.process_time()
        z, mse = invert(generator, feature_net, images, labels, z0, args.per_image_iterations, mean, std, device, compute)
        variants["per_image"] = (z, mse, time.process_time() - t0)
    enc_cfg = AmortizedConfig(steps=args.encoder_steps)
    encoder, enc_stats, encoder_cpu_s = trained_encoder(generator, feature_net, data, enc_cfg, mean, std, args.work,
                                                        device, compute)
    z_enc = predict_latents(encoder, images, labels, mean, std, device)
    for k in args.refine:
        name = f"encoder+{k}"
        if name in results:
            continue
        t0 = time.process_time()
        z, mse = invert(generator, feature_net, images, labels, z_enc, k, mean, std, device, compute)
        variants[name] = (z, mse, time.process_time() - t0)

    test = f"{DATA}"
    for name, (z, mse, cpu_s) in variants.items():
        lds = args.work / f"{name}.lds"
        spec = latentds.image_spec(mean, std, tuple(images.shape[1:]), generator.contract.output_range)
        latentds.save_lds(lds, generator, z, labels, data.classes, spec, latent_dtype=torch.float16)
        r = latentds.evaluate(lds, test, arch="convnet3", epochs=args.epochs, seeds=args.seeds, device="cpu",
                              progress=False)
        results[name] = {"acc_mean": r.acc_mean, "acc_std": r.acc_std, "accs": r.accs, "recon_mse": mse,
                         "inversion_cpu_s": round(cpu_s, 1), "latents": len(idx)}
        print(name, results[name], flush=True)
        results_path.write_text(json.dumps(results, indent=2))
    record = make_record(args, plan, enc_cfg, enc_stats, encoder_cpu_s, results, len(data.labels))
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
