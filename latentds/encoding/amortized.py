"""Amortized inversion: a network E(x, y) -> z trained once against the frozen generator.

Per-image inversion (:mod:`latentds.encoding.invert`) runs hundreds of Adam steps for every latent, each a
forward and backward pass through G and the feature ConvNet: at the ``cpu`` preset's 500 steps the whole of
CIFAR-10 costs about 100 CPU-hours, most of the 545 that made a whole-set encode impossible on a CPU. The
map from an image to its latent is much the same for every image, so it can be learned once: E is trained on
random batches of the real set with the inversion loss itself (Eq. 1),

    loss(E) = MSE(f(norm(G(E(x, y), y))), f(norm(x))) + lambda_pixel * MSE(G(E(x, y), y), x)
              + lambda_prior * (mean(E(x, y)^2) - 1)^2

(the last term keeps predicted latents at the scale of N(0, I), where G was trained), then predicts z0 for
every image in one cheap pass; a few per-image steps of the ordinary inversion refine it
(``invert.iterations``, from z0 = E(x, y) instead of N(0, I)). The method stays IT-GAN's: one latent per
real image, the same inversion loss, the same frozen generator; only the starting point is learned.

E is a small ConvNet (:class:`LatentEncoder`), it lives in the work dir only (never in the .lds), and its
training checkpoints like every stage, so an interrupted run resumes to the same bits.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentds.encoding.config import AmortizedConfig
from latentds.encoding.embed import Normalizer
from latentds.encoding.invert import frozen_params
from latentds.encoding.state import (
    load_module_tensors,
    load_state,
    module_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
    rng_state,
    TrainingInterrupted,
    save_state,
    set_rng_state,
)
from latentds.plan import Compute

__all__ = ["LatentEncoder", "encoder_stage", "encoder_z0", "predict_latents", "train_encoder"]

CHECKPOINT = "encoder_state.safetensors"


class LatentEncoder(nn.Module):
    """(B, C, H, W) normalized images and (B,) labels -> (B, latent_dim) latents; any image size."""

    def __init__(self, channels: int, num_classes: int, latent_dim: int, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels
        for c_out, stride in ((width, 1), (2 * width, 2), (4 * width, 2), (4 * width, 2)):
            layers += [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(c_out, c_out, affine=True), nn.ReLU()]
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.label = nn.Embedding(num_classes, 4 * width)
        self.head = nn.Sequential(nn.Linear(8 * width, 4 * width), nn.ReLU(), nn.Linear(4 * width, latent_dim))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.features(x), self.label(y)], dim=1))


def _batches(labels: torch.Tensor, batch_size: int, steps: int, gen: torch.Generator) -> torch.Tensor:
    """(steps, batch_size) image positions: each batch draws every class in turn, images uniformly within a class."""
    classes = torch.unique(labels)
    members = [torch.nonzero(labels == c).flatten() for c in classes]
    cls = torch.arange(batch_size) % len(classes)  # class-balanced rows
    out = torch.empty(steps, batch_size, dtype=torch.long)
    for k, idx in enumerate(members):
        rows = cls == k
        pick = torch.randint(len(idx), (steps, int(rows.sum())), generator=gen)
        out[:, rows] = idx[pick]
    return out


def train_encoder(
    generator: nn.Module,
    feature_net: nn.Module,
    images_uint8: torch.Tensor,
    labels: torch.Tensor,
    cfg: AmortizedConfig,
    mean: list[float],
    std: list[float],
    seed: int,
    folder: Path,
    device: torch.device,
    compute: Compute | None = None,
    log: Any = None,
    *,
    stop_after: int | None = None,
) -> tuple[LatentEncoder, dict[str, Any]]:
    """Train E on ``images_uint8`` (N, C, H, W) with ``labels`` (N,); checkpoints and resumes in ``folder``.

    ``stop_after`` (tests) raises :class:`TrainingInterrupted` after that many steps of this call, as a kill would.
    """
    compute = compute or Compute(device)
    contract = generator.contract
    c, h, w = images_uint8.shape[1:]
    with torch.random.fork_rng(devices=[]):  # E's init from the seed; the global RNG is left as it was
        torch.manual_seed(seed)
        encoder = LatentEncoder(c, contract.num_classes, contract.latent_dim, cfg.width).to(device)
    compute.prepare(encoder)
    opt = torch.optim.Adam(encoder.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed + 1)
    schedule = _batches(labels, cfg.batch_size, cfg.steps, gen)
    norm = Normalizer(mean, std, device, contract.output_range)
    curve: list[float] = []
    start_step, path = 0, folder / CHECKPOINT
    if path.exists():
        tensors, meta = load_state(path)
        if meta["config"] == asdict(cfg) and meta["seed"] == seed:
            load_module_tensors(encoder, tensors, "encoder.")
            optimizer_from_tensors(opt, tensors, meta["opt"], prefix="opt.")
            set_rng_state(gen, tensors["rng"])
            start_step, curve = int(meta["step"]), list(meta["curve"])
    started = time.perf_counter()
    with frozen_params(generator), frozen_params(feature_net):
        for step in range(start_step, cfg.steps):
            idx = schedule[step]
            x, y = images_uint8[idx], labels[idx].to(device)
            with torch.no_grad(), compute.autocast():
                target_feat = feature_net.embed(norm.real(x)).float()
            target_pix = norm.to_generator_range(x)  # (B, C, H, W) in the generator's output range
            with compute.autocast():
                z = encoder(norm.real(x), y).float()
                out = generator(z, y)
                feat = feature_net.embed(norm.generated(out)).float()
            loss = (F.mse_loss(feat, target_feat) + cfg.lambda_pixel * F.mse_loss(out.float(), target_pix)
                    + cfg.lambda_prior * (z.square().mean() - 1).square())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            curve.append(round(float(loss.detach()), 6))
            done = step + 1
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                opt_t, opt_meta = optimizer_to_tensors(opt, prefix="opt.")
                save_state(path, {**module_tensors(encoder, "encoder."), **opt_t, "rng": rng_state(gen)},
                           {"config": asdict(cfg), "seed": seed, "step": done, "opt": opt_meta, "curve": curve})
                if log is not None:
                    log(f"encoder: step {done}/{cfg.steps}, loss {sum(curve[-50:]) / len(curve[-50:]):.4f}")
            if stop_after is not None and done - start_step >= stop_after:
                raise TrainingInterrupted(f"encoder: stopped after {stop_after} steps (test hook)")
    encoder.eval()
    stats = {"steps": cfg.steps, "resumed_from": start_step, "first_loss": curve[0] if curve else None,
             "final_loss": sum(curve[-50:]) / len(curve[-50:]) if curve else None,
             "seconds_this_run": round(time.perf_counter() - started, 1), "loss_curve": curve[:: max(1, len(curve) // 50)]}
    return encoder, stats


@torch.no_grad()
def predict_latents(encoder: LatentEncoder, images_uint8: torch.Tensor, labels: torch.Tensor, mean: list[float],
                    std: list[float], device: torch.device, batch_size: int = 500) -> torch.Tensor:
    """E's latents (N, latent_dim) float32 on the CPU for every image, in fp32 (deterministic per row)."""
    norm = Normalizer(mean, std, device, output_range=None)  # real images only
    out = [encoder(norm.real(images_uint8[i:i + batch_size]), labels[i:i + batch_size].to(device)).float().cpu()
           for i in range(0, len(labels), batch_size)]
    return torch.cat(out) if out else torch.empty(0, encoder.head[-1].out_features)


def encoder_stage(run: Any, generator: nn.Module, feature_net: nn.Module) -> tuple[LatentEncoder | None, dict[str, Any]]:
    """The pipeline's stage (``run``: workdir.Run): rank 0 trains E in ``work_dir/encoder`` (or loads it when
    finished), the other ranks receive its checkpoint and load it; ``amortized.steps`` 0: no encoder."""
    cfg, group, folder = run.cfg.amortized, run.group, run.work_dir / "encoder"
    if cfg.steps == 0:
        return None, {}
    folder.mkdir(parents=True, exist_ok=True)
    run.log(f"encoder: E(x, y) -> z, width {cfg.width}, {cfg.steps} steps of {cfg.batch_size} images")
    kwargs = dict(cfg=cfg, mean=run.mean, std=run.std, seed=run.cfg.seed, folder=folder, device=run.device,
                  compute=run.compute)
    if group.is_main:
        encoder, stats = train_encoder(generator, feature_net, run.data.images, run.data.labels, log=run.log, **kwargs)
    group.share_dir(folder)
    if not group.is_main:  # the finished checkpoint is here now: this loads it
        encoder, stats = train_encoder(generator, feature_net, run.data.images, run.data.labels, **kwargs)
    run.log(f"encoder: done; loss {stats['first_loss']} -> {stats['final_loss']}")
    return encoder, stats


def encoder_z0(encoder: LatentEncoder, run: Any, selected: torch.Tensor, labels: torch.Tensor,
               cls: int) -> torch.Tensor:
    """E's z0 for every selected image of class ``cls`` (positions into ``selected``, ascending), (n_cls, D)."""
    rows = selected[torch.nonzero(labels == cls).flatten()]
    return predict_latents(encoder, run.data.images[rows], run.data.labels[rows], run.mean, run.std, run.device)
