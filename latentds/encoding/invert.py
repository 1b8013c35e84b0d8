"""GAN inversion (Eq. 1): one latent per real image, so that G(z, y) reproduces the image.

    loss(z) = MSE(f(norm(G(z, y))), f(norm(x))) + lambda_pixel * MSE(G(z, y), x)   (x in G's output range)

with f the 2048-d embedding of a ConvNet trained on the real set. The images of each class are cut into
work units of ``batch_size`` (the reference's batches of 50); each unit's latents are an optimization
problem of their own (their own Adam, their own loss mean), latent i paired with image i, so a unit's
result depends only on its images and its z0, not on which other units run beside it.

Several units can share one forward pass (``units_per_pass``): the loss is the *sum* of the units'
own losses and Adam is elementwise, so each unit gets exactly the updates it would get alone (up to float
rounding of the larger batched kernels). On a GPU this replaces hundreds of small launch-bound passes by a
few large ones; on a CPU small batches run fastest, so the default there is one unit per pass, which keeps
the numbers bit-identical to the one-batch-at-a-time loop. The generator is frozen and in eval mode.
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

from latentds.encoding.config import InvertConfig
from latentds.encoding.embed import Normalizer
from latentds.models import generator_contract
from latentds.plan import Compute
from latentds.progress import progress_bar
from latentds.tensors import by_class

__all__ = ["InvertUnit", "frozen_params", "invert", "invert_batches", "invert_latents", "invert_units",
           "units_per_pass"]

GPU_LATENTS_PER_PASS = 2000  # units_per_pass=0 on a GPU: as many units as make about this many latents


def units_per_pass(cfg: InvertConfig, device: torch.device) -> int:
    """``cfg.units_per_pass``, or the device's default when it is 0."""
    if cfg.units_per_pass > 0:
        return cfg.units_per_pass
    return max(1, GPU_LATENTS_PER_PASS // cfg.batch_size) if torch.device(device).type == "cuda" else 1


@dataclass(frozen=True)
class InvertUnit:
    """One inversion problem: up to ``batch_size`` images of one class, the ``batch``-th of its class."""

    cls: int
    batch: int
    indices: torch.Tensor  # (n,) positions into the label array passed to invert_units, ascending
    offset: int  # position of the unit's first image among its class's images (its rows of the class's z0)

    @property
    def name(self) -> str:
        return f"c{self.cls:05d}_b{self.batch:04d}"


def invert_units(labels: torch.Tensor, batch_size: int) -> list[InvertUnit]:
    """Positions of ``labels`` grouped by class (ascending), cut into units of at most ``batch_size``."""
    units = []
    for c, idx in by_class(labels).items():
        for b, part in enumerate(idx.split(batch_size)):
            units.append(InvertUnit(int(c), b, part.clone(), b * batch_size))
    return units


def invert_batches(labels: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """The units' positions: by class (ascending), then in batches of at most ``batch_size``."""
    return [u.indices for u in invert_units(labels, batch_size)]


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


class _InversionLoss:
    """Eq. 1 for the rows of several units at once: each unit's own mean, summed (one unit: the plain means)."""

    def __init__(self, generator: nn.Module, feature_net: nn.Module, norm: Normalizer, compute: Compute,
                 y: torch.Tensor, target_feat: torch.Tensor, target_pix: torch.Tensor, sizes: list[int],
                 lambda_pixel: float, device: torch.device):
        self.generator, self.feature_net, self.norm, self.compute = generator, feature_net, norm, compute
        self.y, self.target_feat, self.target_pix = y, target_feat, target_pix  # (n,), (n, F), (n, C, H, W)
        self.sizes, self.lambda_pixel, self.device = sizes, lambda_pixel, device
        # Row weights 1 / (its unit's size): the sum of the units' own means.
        self.unit_of_row = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).to(device)
        self.weight = (1.0 / torch.tensor(sizes, dtype=torch.float32, device=device))[self.unit_of_row]

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """G(z, y) (n, C, H, W) and its embedding (n, F), both float32."""
        with self.compute.autocast():
            out = self.generator(z, self.y)
            feat = self.feature_net.embed(self.norm.generated(out)).float()
        return out.float(), feat

    def rows(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row feature and pixel losses, (n,) each."""
        out, feat = self.forward(z)
        return (feat - self.target_feat).square().mean(1), (out - self.target_pix).square().flatten(1).mean(1)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        if len(self.sizes) == 1:  # the one-unit formula, bit for bit as before units were packed
            out, feat = self.forward(z)
            return F.mse_loss(feat, self.target_feat) + self.lambda_pixel * F.mse_loss(out, self.target_pix)
        f, p = self.rows(z)
        return ((f + self.lambda_pixel * p) * self.weight).sum()

    def unit_means(self, z: torch.Tensor) -> tuple[list[float], list[float]]:
        """Each unit's mean feature loss and mean pixel MSE."""
        with torch.no_grad():
            f, p = self.rows(z)
            per_f = torch.zeros(len(self.sizes), device=self.device).index_add_(0, self.unit_of_row, f)
            per_p = torch.zeros(len(self.sizes), device=self.device).index_add_(0, self.unit_of_row, p)
            counts = torch.tensor(self.sizes, dtype=torch.float32, device=self.device)
            return (per_f / counts).tolist(), (per_p / counts).tolist()


def invert_latents(
    generator: nn.Module,
    images_uint8: torch.Tensor,
    labels: torch.Tensor,
    z0: torch.Tensor,
    groups: Sequence[torch.Tensor],
    feature_net: nn.Module,
    cfg: InvertConfig,
    mean: Sequence[float],
    std: Sequence[float],
    device: str | torch.device = "cpu",
    compute: Compute | None = None,
    bar: Any = None,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Invert the units ``groups`` (positions into the n images) together in one pass; latents start at z0.

    images_uint8 (n, C, H, W), labels (n,), z0 (n, D). Returns the latents (n, D) float32 on the CPU and,
    per group, the initial/final feature loss and pixel MSE (generator range) of its latents.
    """
    device = torch.device(device)
    compute = compute or Compute(device)
    n = images_uint8.shape[0]
    if labels.shape != (n,) or z0.shape[0] != n:
        raise ValueError(f"labels {tuple(labels.shape)} and z0 {tuple(z0.shape)} must pair 1:1 with {n} images")
    if cfg.iterations < 0 or cfg.batch_size < 1:
        raise ValueError(f"invert: iterations must be >= 0 and batch_size >= 1, got {cfg.iterations}, {cfg.batch_size}")
    order = torch.cat(list(groups)) if groups else torch.empty(0, dtype=torch.long)
    if sorted(order.tolist()) != list(range(n)):
        raise ValueError("invert_latents: groups must cover every image exactly once")
    sizes = [len(g) for g in groups]
    norm = Normalizer(mean, std, device, generator_contract(generator).output_range)
    x = images_uint8[order]
    with frozen_params(generator), frozen_params(feature_net), torch.no_grad(), compute.autocast():
        target_feat = feature_net.embed(norm.real(x)).float()  # (n, F)
    target_pix = norm.to_generator_range(x)  # (n, C, H, W) in the generator's output range
    loss = _InversionLoss(generator, feature_net, norm, compute, labels[order].to(device), target_feat, target_pix,
                          sizes, cfg.lambda_pixel, device)
    z = z0[order].clone().float().to(device).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=cfg.lr)
    with frozen_params(generator), frozen_params(feature_net):
        f0, p0 = loss.unit_means(z)
        for _ in range(cfg.iterations):
            value = loss(z)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            if bar is not None:
                bar.update(1)
        f1, p1 = loss.unit_means(z)
    latents = torch.empty(n, z.shape[1])
    latents[order] = z.detach().float().cpu()
    stats = [
        {"num_images": b, "initial_feature_loss": a0, "initial_recon_mse": b0, "final_feature_loss": a1,
         "final_recon_mse": b1}
        for b, a0, b0, a1, b1 in zip(sizes, f0, p0, f1, p1)
    ]
    return latents, stats


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
    compute: Compute | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Find latents (n, latent_dim) float32 on the CPU reproducing ``images_uint8`` (n, C, H, W) under G.

    ``labels`` (n,) are the images' classes, cut into units per class. ``generator_seed`` seeds z0 ~ N(0, I)
    (one draw of (n, D), in image order). Units run ``units_per_pass`` at a time. Stats: initial/final
    pixel reconstruction MSE (generator range) and feature loss, averaged over images, and the wall time.
    """
    device = torch.device(device)
    n = images_uint8.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to pair with the images, got {tuple(labels.shape)}")
    if cfg.iterations < 0 or cfg.batch_size < 1:
        raise ValueError(f"invert: iterations must be >= 0 and batch_size >= 1, got {cfg.iterations}, {cfg.batch_size}")
    z0 = torch.randn(n, generator_contract(generator).latent_dim, generator=torch.Generator().manual_seed(int(generator_seed)))
    latents = torch.empty_like(z0)
    units = invert_batches(labels, cfg.batch_size)
    per_pass = units_per_pass(cfg, device)
    sums = {"initial_recon_mse": 0.0, "final_recon_mse": 0.0, "initial_feature_loss": 0.0, "final_feature_loss": 0.0}
    start = time.perf_counter()
    passes = [units[i : i + per_pass] for i in range(0, len(units), per_pass)]
    bar = progress_bar(None, progress, total=len(passes) * cfg.iterations, desc="invert", unit="it", leave=False)
    for group in passes:
        idx = torch.cat(group)
        local = list(torch.arange(len(idx)).split([len(g) for g in group]))
        lat, unit_stats = invert_latents(generator, images_uint8[idx], labels[idx], z0[idx], local, feature_net, cfg,
                                         mean, std, device, compute, bar)
        latents[idx] = lat
        for st in unit_stats:
            for k in sums:
                sums[k] += st[k] * st["num_images"]
    bar.close()
    stats: dict[str, Any] = {k: v / max(n, 1) for k, v in sums.items()}
    stats["num_images"] = n
    stats["seconds"] = time.perf_counter() - start
    return latents, stats
