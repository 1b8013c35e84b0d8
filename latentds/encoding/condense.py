"""Condensation (Eq. 2-4, Algorithm 1): refine latents so G's images match the real class's feature distribution.

Every iteration draws an embedding net f (random or pre-trained) and, per batch, one DSA parameter set A
shared by the real and the synthetic batch (Siamese), then minimizes

    L = (1 - lam) * || mean f(A(x_real)) - mean f(A(G(z))) ||^2  +  lam * mean_i || f(A(x_i)) - f(A(G(z_i))) ||^2

over a work unit's latents. Unlike the public code, the inner loop covers *every* latent of the unit,
including the last partial batch: gradients of all batches are accumulated and one Adam step is taken per
iteration, so each latent gets exactly one update per iteration.

``parametrization="pixel"`` optimizes images directly with the same loss and no generator: the DM baseline.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from latentds.augment import DSAParams, SiameseAugment, apply_dsa
from latentds.encoding.config import CondenseConfig
from latentds.encoding.embed import EmbeddingSampler, Normalizer, random_convnet
from latentds.encoding.invert import frozen_params
from latentds.encoding.losses import (
    MATCHING_LOSSES,
    Match,
    MatchingLoss,
    distribution_matching,
    dm_loss,
    matching_loss,
    paired_loss,
)
from latentds.errors import ConfigError
from latentds.models import generator_contract
from latentds.plan import Compute
from latentds.progress import progress_bar
from latentds.tensors import by_class, freeze

__all__ = [
    "MATCHING_LOSSES",
    "Match",
    "MatchingLoss",
    "Unit",
    "condense",
    "derive_seed",
    "distribution_matching",
    "dm_loss",
    "matching_loss",
    "unit_passes",
    "work_units",
]


# --- work units and seeds --------------------------------------------------------------------------------
def derive_seed(seed: int, stage: str, cls: int = 0, subset: int = 0) -> int:
    """A 63-bit seed for one (stage, class, subset), independent of the order units run in."""
    digest = hashlib.sha256(f"latentds/{int(seed)}/{stage}/{int(cls)}/{int(subset)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class Unit:
    """One independently learned subset of a class's latents ("latent vector ensemble")."""

    cls: int
    subset: int
    indices: torch.Tensor  # (n,) positions into the label array passed to work_units, ascending

    @property
    def name(self) -> str:
        return f"c{self.cls:05d}_s{self.subset:04d}"

    def seed(self, seed: int) -> int:
        return derive_seed(seed, "condense", self.cls, self.subset)


def work_units(labels: torch.Tensor, subset_size: int) -> list[Unit]:
    """Split each class's positions into contiguous, near-equal subsets of at most ``subset_size``.

    Units come by class, then subset; concatenating their indices gives positions ordered by class, then index.
    """
    if subset_size < 1:
        raise ConfigError(f"subset_size must be >= 1, got {subset_size}")
    units = []
    for c, idx in by_class(labels).items():
        parts = math.ceil(len(idx) / subset_size)
        for s, chunk in enumerate(torch.tensor_split(idx, parts)):
            units.append(Unit(int(c), s, chunk.clone()))
    return units


def unit_passes(cfg: CondenseConfig, units: Sequence[Unit], labels: torch.Tensor) -> dict[str, int]:
    """Each unit's condensation passes by name: ``cfg.passes`` of its class's size among ``labels`` (the labels of
    every selected image: ``condense.pass_budget`` divides by the whole class, not the unit)."""
    sizes = {c: len(idx) for c, idx in by_class(labels).items()}
    return {u.name: cfg.passes(sizes[u.cls]) for u in units}


def _curve(values: list[float], points: int) -> tuple[list[float], list[int]]:
    """Average ``values`` into at most ``points`` bins; returns (means, first iteration of each bin)."""
    if not values:
        return [], []
    bins = torch.tensor_split(torch.tensor(values, dtype=torch.float64), min(points, len(values)))
    starts, pos = [], 0
    for b in bins:
        starts.append(pos)
        pos += len(b)
    return [float(b.mean()) for b in bins], starts


# --- the stage -------------------------------------------------------------------------------------------
@dataclass
class _Streams:
    """Independent random streams of one unit, all drawn from its seed."""

    nets: torch.Generator  # the embedding net of each iteration
    aug: torch.Generator  # DSA parameters, shared by the real and the synthetic batch
    real: torch.Generator  # the real batches
    eval: torch.Generator  # the fixed evaluation nets and their real batch
    init: torch.Generator  # the noise init of pixel parametrization

    @classmethod
    def from_seed(cls, seed: int) -> _Streams:
        root = torch.Generator().manual_seed(int(seed))
        return cls(*(torch.Generator().manual_seed(int(torch.randint(0, 2**62, (), generator=root))) for _ in range(5)))


@dataclass
class _Synthetic:
    """What condensation optimizes (latents (n, D) or normalized images (n, C, H, W)) and how it becomes images."""

    init: torch.Tensor
    param: torch.Tensor  # the leaf the optimizer updates
    decode: Callable[[slice], torch.Tensor]  # rows of param -> normalized images (B, C, H, W)
    optimizer: torch.optim.Optimizer


def _synthetic(
    generator: nn.Module | None, latents_init: torch.Tensor | None, pair_images: torch.Tensor, label: int,
    cfg: CondenseConfig, norm: Normalizer, init_gen: torch.Generator, compute: Compute, device: torch.device,
) -> _Synthetic:
    """Latents under G (Adam, the paper), or pixels (DM's SGD with momentum 0.5; Adam at DM's lr 1.0 wrecks them)."""
    if cfg.parametrization == "pixel":
        if cfg.pixel_init == "real":
            init = norm.real(pair_images)
        else:
            init = torch.randn(pair_images.shape, generator=init_gen).to(device)
        param = init.clone().requires_grad_(True)  # (n, C, H, W), normalized space

        def decode(sl: slice) -> torch.Tensor:
            return param[sl]

        return _Synthetic(init, param, decode, torch.optim.SGD([param], lr=cfg.lr_pixel, momentum=0.5))
    init = latents_init.detach().float()
    param = init.clone().to(device).requires_grad_(True)  # (n, D)
    y_all = torch.full((init.shape[0],), int(label), dtype=torch.long, device=device)

    def decode(sl: slice) -> torch.Tensor:
        with compute.autocast():
            return norm.generated(generator(param[sl], y_all[sl]))

    return _Synthetic(init, param, decode, torch.optim.Adam([param], lr=cfg.lr))


def condense(
    generator: nn.Module | None,
    latents_init: torch.Tensor | None,
    pair_images_uint8: torch.Tensor,
    class_images_uint8: torch.Tensor,
    label: int,
    sampler: EmbeddingSampler,
    cfg: CondenseConfig,
    mean: Sequence[float],
    std: Sequence[float],
    seed: int,
    device: str | torch.device = "cpu",
    progress: bool = False,
    compute: Compute | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Condense one work unit of class ``label``; returns (result on the CPU, float32, stats).

    latents_init (n, D) are the inversion results paired with pair_images_uint8 (n, C, H, W);
    class_images_uint8 (m, C, H, W) are all real images of the class (the L_con targets). For
    ``parametrization="pixel"`` the generator and latents_init may be None and the result is the optimized
    images (n, C, H, W) in the *normalized* space (as DM keeps them). Stats hold the loss curve.
    """
    cfg.check()
    device = torch.device(device)
    compute = compute or Compute(device)
    n = pair_images_uint8.shape[0]
    _check_inputs(generator, latents_init, n, class_images_uint8, label, cfg)
    streams = _Streams.from_seed(seed)
    aug = SiameseAugment(cfg.dsa_strategy, streams.aug, image_size=tuple(pair_images_uint8.shape[-2:]))
    norm = Normalizer(mean, std, device, None if generator is None else generator_contract(generator).output_range)
    class_images = class_images_uint8.to(device)  # uint8 on the device; normalized per batch
    pair_images = pair_images_uint8.to(device)
    syn = _synthetic(generator, latents_init, pair_images, label, cfg, norm, streams.init, compute, device)
    eval_nets = [
        freeze(random_convnet(cfg.random_width, sampler.num_classes, streams.eval, device, sampler.channels,
                              sampler.image_size))
        for _ in range(cfg.eval_nets)
    ]
    eval_idx = torch.randperm(class_images.shape[0], generator=streams.eval)[: cfg.batch_real].to(device)
    eval_real = norm.real(class_images[eval_idx]) if eval_nets else None

    start = time.perf_counter()
    with frozen_params(generator):
        eval_before = matching_loss(syn.decode, n, eval_real, eval_nets, cfg.batch_syn) if eval_nets else None
        curve = _optimize(syn, n, class_images, pair_images, label, sampler, aug, streams, norm, cfg, compute,
                          device, progress)
        eval_after = matching_loss(syn.decode, n, eval_real, eval_nets, cfg.batch_syn) if eval_nets else None
    result = syn.param.detach().float().cpu()
    moved = (result.flatten(1) != syn.init.detach().cpu().flatten(1)).any(1)
    points, starts = _curve(curve, cfg.curve_points)
    k = max(1, len(curve) // 10)
    stats: dict[str, Any] = {
        "label": int(label),
        "num_latents": n,
        "passes": cfg.iterations,
        "parametrization": cfg.parametrization,
        "loss_curve": points,
        "loss_curve_start_iteration": starts,
        "first_loss": sum(curve[:k]) / k if curve else None,  # mean L_con of the first 10 % of iterations
        "last_loss": sum(curve[-k:]) / k if curve else None,
        "eval_loss_before": eval_before,
        "eval_loss_after": eval_after,
        "moved_fraction": float(moved.float().mean()) if n else 1.0,
        "seconds": time.perf_counter() - start,
    }
    return result, stats


def _check_inputs(
    generator: nn.Module | None, latents_init: torch.Tensor | None, n: int, class_images: torch.Tensor, label: int,
    cfg: CondenseConfig,
) -> None:
    if cfg.parametrization != "pixel":
        if generator is None or latents_init is None:
            raise ValueError("parametrization 'latent' needs a generator and latents_init")
        if latents_init.shape[0] != n:
            raise ValueError(f"{latents_init.shape[0]} latents but {n} paired images; they pair 1:1")
    if class_images.shape[0] == 0:
        raise ValueError(f"class {label}: no real images to match")


def _optimize(
    syn: _Synthetic, n: int, class_images: torch.Tensor, pair_images: torch.Tensor, label: int,
    sampler: EmbeddingSampler, aug: SiameseAugment, streams: _Streams, norm: Normalizer, cfg: CondenseConfig,
    compute: Compute, device: torch.device, progress: bool,
) -> list[float]:
    """Algorithm 1's loop: per iteration one embedding net, per batch one shared DSA transform, gradients of every
    batch (the last, partial one included) accumulated into one optimizer step. Returns the mean L_con per
    iteration."""
    match_fn = MATCHING_LOSSES[cfg.loss]
    m = class_images.shape[0]
    batches = [slice(lo, min(lo + cfg.batch_syn, n)) for lo in range(0, n, cfg.batch_syn)]  # last batch included
    curve: list[torch.Tensor] = []  # per-iteration mean L_con, as 0-d tensors until the loop ends
    bar = progress_bar(None, progress, total=cfg.iterations, desc=f"condense class {label}", unit="it", leave=False)
    for _ in range(cfg.iterations):
        net = compute.prepare(sampler.draw(streams.nets))
        syn.optimizer.zero_grad(set_to_none=True)
        con_sum = torch.zeros((), dtype=torch.float64, device=device)  # no host sync per batch
        for sl in batches:
            params: DSAParams = aug.next()
            real_idx = torch.randperm(m, generator=streams.real)[: cfg.batch_real].to(device)
            with torch.no_grad(), compute.autocast():
                real = apply_dsa(norm.real(class_images[real_idx]), params)  # (b_real, C, H, W)
            images = syn.decode(sl)  # (b, C, H, W) normalized
            with compute.autocast():
                match = match_fn(net, real, apply_dsa(images, params), label)
            l_con = match.loss
            loss = (1.0 - cfg.lam) * l_con
            if cfg.lam > 0:
                with torch.no_grad(), compute.autocast():
                    feat_pair = net.embed(apply_dsa(norm.real(pair_images[sl]), params))
                if match.syn_features is None:
                    raise ConfigError(f"condense.lam > 0 needs the synthetic embeddings, which the matching loss "
                                      f"{cfg.loss!r} does not return; set condense.lam=0")
                loss = loss + cfg.lam * paired_loss(feat_pair, match.syn_features)
            loss.backward()
            con_sum += l_con.detach().double()
        syn.optimizer.step()
        curve.append(con_sum / len(batches))  # tensors: read back once, after the loop
        bar.update(1)
    bar.close()
    return torch.stack(curve).tolist() if curve else []
