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

from latentds.augment import DEFAULT_STRATEGY, DSAParams, SiameseAugment, apply_dsa
from latentds.common import by_class, freeze, progress_bar
from latentds.encoding.embed import EmbeddingSampler, Normalizer, random_convnet
from latentds.encoding.invert import frozen_params
from latentds.errors import ConfigError
from latentds.plan import Compute

__all__ = [
    "MATCHING_LOSSES",
    "CondenseConfig",
    "Match",
    "MatchingLoss",
    "Unit",
    "condense",
    "derive_seed",
    "distribution_matching",
    "dm_loss",
    "matching_loss",
    "work_units",
]

PARAMETRIZATIONS = ("latent", "pixel")
PIXEL_INITS = ("real", "noise")


@dataclass
class CondenseConfig:
    """Hyperparameters of the condensation stage (defaults: the paper's released CIFAR-10 run)."""

    iterations: int = 5000  # passes over all latents of a unit; one Adam step each
    lr: float = 0.001  # Adam lr on z (the paper's ablation: 0.001 is best)
    lr_pixel: float = 1.0  # parametrization "pixel": SGD lr on images, momentum 0.5, as DM optimizes its images
    batch_real: int = 500  # real images of the class per L_con term (the released runs)
    batch_syn: int = 500  # latents per forward pass; a unit is covered in ceil(n / batch_syn) batches
    lam: float = 0.0  # weight of the paired regularizer R (paper searched 1e-4..1e-1; released run: 0)
    dsa_strategy: str = DEFAULT_STRATEGY
    random_width: int = 128  # channels of the random ConvNet-3 embedding nets (2048-d feature at 32x32)
    pool_prob: float = 1.0  # chance a draw comes from the pre-trained pool (paper: pool beats random by ~1.5 pt)
    parametrization: str = "latent"  # "latent" (IT-GAN) or "pixel" (DM baseline: images optimized, no G)
    pixel_init: str = "real"  # "pixel" only: start from the paired real images or from N(0, 1) noise
    eval_nets: int = 2  # fixed random nets that measure L_con (no augmentation) before/after; 0 = skip
    curve_points: int = 100  # the loss curve kept in stats is averaged down to this many points
    loss: str = "dm"  # the matching loss, a name in MATCHING_LOSSES ("dm": distribution matching, the paper's)

    def check(self) -> None:
        """Raise ConfigError on values the stage cannot run with."""
        if self.loss not in MATCHING_LOSSES:
            raise ConfigError(f"condense.loss must be one of {sorted(MATCHING_LOSSES)}, got {self.loss!r}")
        if self.parametrization not in PARAMETRIZATIONS:
            raise ConfigError(f"condense.parametrization must be one of {PARAMETRIZATIONS}, got {self.parametrization!r}")
        if self.pixel_init not in PIXEL_INITS:
            raise ConfigError(f"condense.pixel_init must be one of {PIXEL_INITS}, got {self.pixel_init!r}")
        for name in ("batch_real", "batch_syn", "random_width", "curve_points"):
            if getattr(self, name) < 1:
                raise ConfigError(f"condense.{name} must be >= 1, got {getattr(self, name)}")
        if self.iterations < 0 or self.eval_nets < 0:
            raise ConfigError("condense.iterations and condense.eval_nets must be >= 0")
        if not 0.0 <= self.lam <= 1.0 or not 0.0 <= self.pool_prob <= 1.0:
            raise ConfigError(f"condense.lam and condense.pool_prob must lie in [0, 1], got {self.lam}, {self.pool_prob}")


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


# --- losses ----------------------------------------------------------------------------------------------
def dm_loss(feat_real: torch.Tensor, feat_syn: torch.Tensor) -> torch.Tensor:
    """Distribution matching: squared distance of the mean embeddings, (B1, F) and (B2, F) -> scalar."""
    return (feat_real.float().mean(0) - feat_syn.float().mean(0)).square().sum()


@dataclass
class Match:
    """What a matching loss returns: the loss, and the synthetic embeddings (B, F) the paired regularizer
    compares with the paired real images (None if the loss has no embedding; then ``lam`` must be 0)."""

    loss: torch.Tensor
    syn_features: torch.Tensor | None


# A matching loss: (net, real (B1, C, H, W), synthetic (B2, C, H, W), class) -> Match. Both batches arrive
# normalized and augmented with the same DSA transform, inside the compute's autocast. A new condensation
# objective (e.g. gradient matching, which would backpropagate a classification loss through ``net``) is one
# function and one entry here; CondenseConfig.loss picks it.
MatchingLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, int], Match]


def distribution_matching(net: nn.Module, real: torch.Tensor, syn: torch.Tensor, label: int) -> Match:
    """DM (Zhao & Bilen 2023), the loss IT-GAN condenses with: match the mean embeddings of real and synthetic."""
    with torch.no_grad():
        feat_real = net.embed(real)  # (B1, F)
    feat_syn = net.embed(syn)  # (B2, F)
    return Match(dm_loss(feat_real, feat_syn), feat_syn)


MATCHING_LOSSES: dict[str, MatchingLoss] = {"dm": distribution_matching}


def paired_loss(feat_pair: torch.Tensor, feat_syn: torch.Tensor) -> torch.Tensor:
    """The regularizer R: mean over pairs of the squared distance, (B, F) and (B, F) -> scalar."""
    return (feat_pair.float() - feat_syn.float()).square().sum(1).mean()


def matching_loss(
    decode: Callable[[slice], torch.Tensor],
    n: int,
    real: torch.Tensor,
    nets: Sequence[nn.Module],
    batch: int,
) -> float:
    """Mean over ``nets`` of the DM loss between ``real`` (normalized, (m, C, H, W)) and all n decoded images.

    ``decode(slice)`` returns normalized synthetic images for that slice; decoding runs in batches.
    """
    total = 0.0
    with torch.no_grad():
        for net in nets:
            fr = torch.cat([net.embed(x).float() for x in real.split(batch)]).mean(0)
            fs = torch.cat([net.embed(decode(slice(lo, lo + batch))).float() for lo in range(0, n, batch)]).mean(0)
            total += float((fr - fs).square().sum())
    return total / len(nets)


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
    match_fn = MATCHING_LOSSES[cfg.loss]
    pixel = cfg.parametrization == "pixel"
    n = pair_images_uint8.shape[0]
    if not pixel:
        if generator is None or latents_init is None:
            raise ValueError("parametrization 'latent' needs a generator and latents_init")
        if latents_init.shape[0] != n:
            raise ValueError(f"{latents_init.shape[0]} latents but {n} paired images; they pair 1:1")
    if class_images_uint8.shape[0] == 0:
        raise ValueError(f"class {label}: no real images to match")

    # Independent streams for nets, augmentation and real batches, all from this unit's seed.
    root = torch.Generator().manual_seed(int(seed))
    net_gen, aug_seed, real_gen, eval_gen, init_gen = (
        torch.Generator().manual_seed(int(torch.randint(0, 2**62, (), generator=root))) for _ in range(5)
    )
    aug = SiameseAugment(cfg.dsa_strategy, aug_seed, image_size=tuple(pair_images_uint8.shape[-2:]))
    norm = Normalizer(mean, std, device)
    class_images = class_images_uint8.to(device)  # uint8 on the device; normalized per batch
    pair_images = pair_images_uint8.to(device)
    m = class_images.shape[0]
    y_all = torch.full((n,), int(label), dtype=torch.long, device=device)

    if pixel:
        if cfg.pixel_init == "real":
            init = norm.real(pair_images)
        else:
            init = torch.randn(pair_images.shape, generator=init_gen).to(device)
        param = init.clone().requires_grad_(True)  # (n, C, H, W), normalized space
        lr = cfg.lr_pixel

        def decode(sl: slice) -> torch.Tensor:
            return param[sl]
    else:
        init = latents_init.detach().float()
        param = init.clone().to(device).requires_grad_(True)  # (n, D)
        lr = cfg.lr

        def decode(sl: slice) -> torch.Tensor:
            with compute.autocast():
                return norm.generated(generator(param[sl], y_all[sl]))

    eval_nets = [
        freeze(random_convnet(cfg.random_width, sampler.num_classes, eval_gen, device, sampler.channels, sampler.image_size))
        for _ in range(cfg.eval_nets)
    ]
    eval_idx = torch.randperm(m, generator=eval_gen)[: cfg.batch_real].to(device)
    eval_real = norm.real(class_images[eval_idx]) if eval_nets else None

    batches = [slice(lo, min(lo + cfg.batch_syn, n)) for lo in range(0, n, cfg.batch_syn)]  # last batch included
    # Latents: Adam (the paper). Pixels: DM's SGD with momentum 0.5; Adam at DM's lr 1.0 wrecks the images.
    opt = torch.optim.SGD([param], lr=lr, momentum=0.5) if pixel else torch.optim.Adam([param], lr=lr)
    curve: list = []  # per-iteration mean L_con, as 0-d tensors until the loop ends
    start = time.perf_counter()
    bar = progress_bar(None, progress, total=cfg.iterations, desc=f"condense class {label}", unit="it", leave=False)
    with frozen_params(generator):
        eval_before = matching_loss(decode, n, eval_real, eval_nets, cfg.batch_syn) if eval_nets else None
        for _ in range(cfg.iterations):
            net = compute.prepare(sampler.draw(net_gen))
            opt.zero_grad(set_to_none=True)
            con_sum = torch.zeros((), dtype=torch.float64, device=device)  # no host sync per batch
            for sl in batches:
                params: DSAParams = aug.next()
                real_idx = torch.randperm(m, generator=real_gen)[: cfg.batch_real].to(device)
                with torch.no_grad(), compute.autocast():
                    real = apply_dsa(norm.real(class_images[real_idx]), params)  # (b_real, C, H, W)
                syn = decode(sl)  # (b, C, H, W) normalized
                with compute.autocast():
                    match = match_fn(net, real, apply_dsa(syn, params), label)
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
            opt.step()
            curve.append(con_sum / len(batches))  # tensors: read back once, after the loop
            bar.update(1)
        eval_after = matching_loss(decode, n, eval_real, eval_nets, cfg.batch_syn) if eval_nets else None
    bar.close()
    curve = torch.stack(curve).tolist() if curve else []

    result = param.detach().float().cpu()
    moved = (result.flatten(1) != init.detach().cpu().flatten(1)).any(1)
    points, starts = _curve(curve, cfg.curve_points)
    k = max(1, len(curve) // 10)
    stats: dict[str, Any] = {
        "label": int(label),
        "num_latents": n,
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
