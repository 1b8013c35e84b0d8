"""DiffAugment for GAN training (Zhao et al., 2020): differentiable augmentation of D's inputs.

Unlike DSA (:mod:`latentds.augment`), every *sample* gets its own random parameters and the real and fake
batches are not paired (not Siamese): D sees augmented reals and augmented fakes, and the generator's
gradient flows back through the augmentation. The BigGAN-CIFAR recipe uses the policy
``"translation,cutout"``, plus random horizontal flips of the real images (:func:`random_flip`).

Ops (ranges of the DiffAugment reference code):

===========  ==========================================================================================
translation  integer shift by up to ``round(1/8 * size)`` px per axis (+-4 at 32x32), zero fill
cutout       one zero square of ``round(1/2 * size)`` px (16x16 at 32x32), centre anywhere in the image
color        brightness ``+ U(-0.5, 0.5)``, saturation ``x U(0, 2)``, contrast ``x U(0.5, 1.5)``
===========  ==========================================================================================

Random numbers come from an explicit ``torch.Generator``, either on the data's device or on the CPU (the
parameters are then moved to the data's device); the global RNG is never used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from latentds.errors import ConfigError

__all__ = ["DEFAULT_POLICY", "POLICY_OPS", "diff_augment", "parse_policy", "random_flip"]

DEFAULT_POLICY = "translation,cutout"
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5
POLICY_OPS = ("color", "translation", "cutout")  # the order DiffAugment applies them in


def parse_policy(policy: str) -> tuple[str, ...]:
    """Validate a comma-separated policy; returns its ops in application order. ``""``/``"none"`` -> ``()``."""
    if policy.strip().lower() in ("", "none"):
        return ()
    tokens = [t.strip() for t in policy.split(",")]
    bad = [t for t in tokens if t not in POLICY_OPS]
    if bad:
        raise ConfigError(
            f"unknown DiffAugment op(s) {bad} in policy {policy!r}; valid ops are {', '.join(POLICY_OPS)} "
            f"joined by ',' (e.g. {DEFAULT_POLICY!r}), or 'none'"
        )
    return tuple(op for op in POLICY_OPS if op in tokens)


def diff_augment(x: Tensor, policy: str, generator: torch.Generator) -> Tensor:
    """Augment each image of ``x`` (B, C, H, W) with its own random parameters; differentiable in ``x``."""
    _check(x, generator)
    for op in parse_policy(policy):
        x = _OPS[op](x, generator)
    return x


def random_flip(x: Tensor, generator: torch.Generator, p: float = 0.5) -> Tensor:
    """Flip each image of ``x`` (B, C, H, W) horizontally with probability ``p``, independently."""
    _check(x, generator)
    flip = _rand((x.shape[0], 1, 1, 1), generator, x) < p
    return torch.where(flip, x.flip(-1), x)


def _check(x: Tensor, generator: torch.Generator) -> None:
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"DiffAugment expects a float tensor (B, C, H, W), got {x.dtype} {tuple(x.shape)}")
    if generator.device.type != "cpu" and generator.device != x.device:
        raise ValueError(f"generator on {generator.device} but data on {x.device}; use one on the data's device or the CPU")


def _rand(shape: tuple[int, ...], g: torch.Generator, like: Tensor) -> Tensor:
    return torch.rand(shape, generator=g, device=g.device).to(device=like.device, dtype=like.dtype)


def _randint(low: int, high: int, shape: tuple[int, ...], g: torch.Generator, like: Tensor) -> Tensor:
    """Integers in [low, high) on ``like``'s device."""
    return torch.randint(low, high, shape, generator=g, device=g.device).to(like.device)


def _color(x: Tensor, g: torch.Generator) -> Tensor:
    b = x.shape[0]
    x = x + (_rand((b, 1, 1, 1), g, x) - 0.5)
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * (_rand((b, 1, 1, 1), g, x) * 2) + m
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * (_rand((b, 1, 1, 1), g, x) + 0.5) + m


def _translation(x: Tensor, g: torch.Generator) -> Tensor:
    b, _, h, w = x.shape
    sh, sw = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    ty = _randint(-sh, sh + 1, (b, 1, 1), g, x)
    tx = _randint(-sw, sw + 1, (b, 1, 1), g, x)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    # Index a 1-px zero border: sources outside the image land on it.
    src_y = (rows + ty + 1).clamp(0, h + 1)  # (B, H, 1)
    src_x = (cols + tx + 1).clamp(0, w + 1)  # (B, 1, W)
    padded = F.pad(x, (1, 1, 1, 1))  # (B, C, H+2, W+2)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, src_y, src_x]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def _cutout(x: Tensor, g: torch.Generator) -> Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    cy = _randint(0, h + (1 - ch % 2), (b, 1, 1), g, x)  # centre in [0, H] for an even side
    cx = _randint(0, w + (1 - cw % 2), (b, 1, 1), g, x)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= cy - ch // 2) & (rows < cy - ch // 2 + ch) & (cols >= cx - cw // 2) & (cols < cx - cw // 2 + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)  # (B, 1, H, W) mask


_OPS = {"color": _color, "translation": _translation, "cutout": _cutout}
