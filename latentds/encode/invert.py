"""GAN inversion (Eq. 1): one latent per real image, so that G(z, y) reproduces the image.

    loss(z) = MSE(f(norm(G(z, y))), f(norm(x))) + lambda_pixel * MSE(G(z, y), x)      (x in [-1, 1])

with f the 2048-d embedding of a ConvNet trained on the real set. Images are processed one class at a time
in batches of ``batch_size``; each batch's latents are optimized independently (its own Adam), latent i
paired with image i. The generator is frozen and in eval mode, so a batch's result does not depend on the
other images in it beyond the shared optimizer schedule.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from latentds.encode.embed import Normalizer

__all__ = ["InvertConfig", "invert", "invert_batches"]


@dataclass
class InvertConfig:
    """Hyperparameters of the inversion stage (defaults: the paper's)."""

    iterations: int = 5000  # Adam steps per batch of latents
    lr: float = 0.1  # large on purpose: z starts at N(0, I) and must travel far
    batch_size: int = 50  # latents optimized together (one class per batch)
    lambda_pixel: float = 1.0  # weight of the pixel MSE next to the feature MSE
    amp: bool = True  # bf16 autocast for G and f on CUDA (ignored on the CPU)


@contextlib.contextmanager
def frozen_params(module: nn.Module | None) -> Iterator[None]:
    """Turn off gradients of ``module``'s parameters for the block (restored after), in eval mode."""
    if module is None:
        yield
        return
    saved = [p.requires_grad for p in module.parameters()]
    was_training = module.training
    module.eval().requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), saved):
            p.requires_grad_(flag)
        module.train(was_training)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when enabled; a no-op elsewhere (CPU runs stay fp32 and bit-reproducible)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def invert_batches(labels: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Positions of ``labels`` grouped by class (ascending), then cut into batches of at most ``batch_size``."""
    batches = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c, as_tuple=False).flatten()
        batches.extend(idx.split(batch_size))
    return batches


def invert(
    generator: nn.Module,
    images_uint8: torch.Tensor,
    labels: torch.Tensor,
    feature_net: nn.Module,
    cfg: InvertConfig,
    mean: Sequence[float],
    std: Sequence[float],
    generator_seed: int,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Find latents (n, latent_dim) float32 on the CPU reproducing ``images_uint8`` (n, C, H, W) under G.

    ``labels`` (n,) are the images' classes. ``generator_seed`` seeds z0 ~ N(0, I) (one draw of (n, D), in
    image order). Stats: initial/final pixel reconstruction MSE (generator range) and feature loss, averaged
    over images, and the wall time.
    """
    device = torch.device(device)
    n = images_uint8.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to pair with the images, got {tuple(labels.shape)}")
    if cfg.iterations < 0 or cfg.batch_size < 1:
        raise ValueError(f"invert: iterations must be >= 0 and batch_size >= 1, got {cfg.iterations}, {cfg.batch_size}")
    latent_dim = int(generator.latent_dim)
    gen = torch.Generator().manual_seed(int(generator_seed))
    z0 = torch.randn(n, latent_dim, generator=gen)  # (n, D), drawn on the CPU: the same on any device
    latents = torch.empty(n, latent_dim)
    norm = Normalizer(mean, std, device)
    sums = {"initial_recon_mse": 0.0, "final_recon_mse": 0.0, "initial_feature_loss": 0.0, "final_feature_loss": 0.0}
    batches = invert_batches(labels, cfg.batch_size)
    start = time.perf_counter()
    bar = tqdm(total=len(batches) * cfg.iterations, desc="invert", unit="it", disable=not progress, leave=False)
    with frozen_params(generator), frozen_params(feature_net):
        for idx in batches:
            x = images_uint8[idx]
            y = labels[idx].to(device)
            with torch.no_grad(), autocast(device, cfg.amp):
                target_feat = feature_net.embed(norm.real(x)).float()  # (b, F)
            target_pix = norm.to_generator_range(x)  # (b, C, H, W) in [-1, 1]
            z = z0[idx].clone().to(device).requires_grad_(True)
            opt = torch.optim.Adam([z], lr=cfg.lr)

            def losses() -> tuple[torch.Tensor, torch.Tensor]:
                with autocast(device, cfg.amp):
                    out = generator(z, y)
                    feat = feature_net.embed(norm.generated(out)).float()
                feat_loss = F.mse_loss(feat, target_feat)
                pix_loss = F.mse_loss(out.float(), target_pix)
                return feat_loss, pix_loss

            with torch.no_grad():
                f0, p0 = losses()
            for _ in range(cfg.iterations):
                feat_loss, pix_loss = losses()
                loss = feat_loss + cfg.lambda_pixel * pix_loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.update(1)
            with torch.no_grad():
                f1, p1 = losses()
            b = len(idx)
            sums["initial_feature_loss"] += float(f0) * b
            sums["initial_recon_mse"] += float(p0) * b
            sums["final_feature_loss"] += float(f1) * b
            sums["final_recon_mse"] += float(p1) * b
            latents[idx] = z.detach().float().cpu()
    bar.close()
    stats: dict[str, Any] = {k: v / max(n, 1) for k, v in sums.items()}
    stats["num_images"] = n
    stats["seconds"] = time.perf_counter() - start
    return latents, stats
