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
parameters are then moved to the data's device); the global RNG is never used. Drawing and applying are
separate steps (:func:`draw_params`, :func:`augment_with`; :func:`flip_with` for flips), so a training loop can
draw a whole iteration's numbers on the CPU and move them to the GPU in one copy; :func:`diff_augment` and
:func:`random_flip` do both at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from latentds.encoding.config import DEFAULT_POLICY, POLICY_OPS, parse_policy

__all__ = ["DEFAULT_POLICY", "POLICY_OPS", "augment_with", "diff_augment", "draw_params", "flip_with",
           "parse_policy", "random_flip"]

TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def diff_augment(x: Tensor, policy: str, generator: torch.Generator) -> Tensor:
    """Augment each image of ``x`` (B, C, H, W) with its own random parameters; differentiable in ``x``."""
    _check(x, generator)
    b, _, h, w = x.shape
    return augment_with(x, policy, draw_params(policy, b, h, w, generator))


def random_flip(x: Tensor, generator: torch.Generator, p: float = 0.5) -> Tensor:
    """Flip each image of ``x`` (B, C, H, W) horizontally with probability ``p``, independently."""
    _check(x, generator)
    return flip_with(x, torch.rand((x.shape[0], 1, 1, 1), generator=generator, device=generator.device), p)


def flip_with(x: Tensor, u: Tensor, p: float = 0.5) -> Tensor:
    """Flip image i of ``x`` where ``u[i] < p``; ``u`` (B, 1, 1, 1) uniform numbers."""
    flip = u.to(device=x.device, dtype=x.dtype) < p
    return torch.where(flip, x.flip(-1), x)


def draw_params(policy: str, batch: int, height: int, width: int, generator: torch.Generator) -> dict[str, Tensor]:
    """The random numbers :func:`augment_with` needs for a (batch, C, height, width) input, drawn from ``generator``
    on its device in the order the ops apply."""
    g, dev = generator, generator.device
    params: dict[str, Tensor] = {}
    for op in parse_policy(policy):
        if op == "color":  # brightness, saturation, contrast: U[0, 1) each, scaled when applied
            for name in ("brightness", "saturation", "contrast"):
                params[name] = torch.rand((batch, 1, 1, 1), generator=g, device=dev)
        elif op == "translation":
            sh, sw = int(height * TRANSLATION_RATIO + 0.5), int(width * TRANSLATION_RATIO + 0.5)
            params["ty"] = torch.randint(-sh, sh + 1, (batch, 1, 1), generator=g, device=dev)
            params["tx"] = torch.randint(-sw, sw + 1, (batch, 1, 1), generator=g, device=dev)
        else:  # cutout: the square's centre, in [0, H] for an even side
            ch, cw = int(height * CUTOUT_RATIO + 0.5), int(width * CUTOUT_RATIO + 0.5)
            params["cy"] = torch.randint(0, height + (1 - ch % 2), (batch, 1, 1), generator=g, device=dev)
            params["cx"] = torch.randint(0, width + (1 - cw % 2), (batch, 1, 1), generator=g, device=dev)
    return params


def augment_with(x: Tensor, policy: str, params: dict[str, Tensor]) -> Tensor:
    """Apply ``policy`` to ``x`` (B, C, H, W) with numbers from :func:`draw_params` (moved to ``x``'s device here)."""
    p = {name: t.to(x.device) for name, t in params.items()}
    for op in parse_policy(policy):
        x = _OPS[op](x, p)
    return x


def _check(x: Tensor, generator: torch.Generator) -> None:
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"DiffAugment expects a float tensor (B, C, H, W), got {x.dtype} {tuple(x.shape)}")
    if generator.device.type != "cpu" and generator.device != x.device:
        raise ValueError(f"generator on {generator.device} but data on {x.device}; use one on the data's device or the CPU")


def _color(x: Tensor, p: dict[str, Tensor]) -> Tensor:
    x = x + (p["brightness"].to(x.dtype) - 0.5)
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * (p["saturation"].to(x.dtype) * 2) + m
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * (p["contrast"].to(x.dtype) + 0.5) + m


def _translation(x: Tensor, p: dict[str, Tensor]) -> Tensor:
    b, _, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    # Index a 1-px zero border: sources outside the image land on it.
    src_y = (rows + p["ty"] + 1).clamp(0, h + 1)  # (B, H, 1)
    src_x = (cols + p["tx"] + 1).clamp(0, w + 1)  # (B, 1, W)
    padded = F.pad(x, (1, 1, 1, 1))  # (B, C, H+2, W+2)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, src_y, src_x]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def _cutout(x: Tensor, p: dict[str, Tensor]) -> Tensor:
    _, _, h, w = x.shape
    ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    cy, cx = p["cy"], p["cx"]
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= cy - ch // 2) & (rows < cy - ch // 2 + ch) & (cols >= cx - cw // 2) & (cols < cx - cw // 2 + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)  # (B, 1, H, W) mask


_OPS = {"color": _color, "translation": _translation, "cutout": _cutout}
