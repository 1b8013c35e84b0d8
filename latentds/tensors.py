"""Small tensor operations every layer shares: uint8 -> normalized float, per-channel statistics, per-class
positions, freezing a model. Nothing here knows about files, models or encoding."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["by_class", "channel_stats", "freeze", "normalize"]


def normalize(images: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """(B, C, H, W) uint8 (0..255) or float (0..1) images -> float32 ``(x - mean) / std`` per channel."""
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s) if x is not images else (x - m) / s


def channel_stats(
    mean: Sequence[float], std: Sequence[float], device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std as float32 (1, C, 1, 1) tensors on ``device``, made once for many batches."""
    return tuple(torch.tensor([float(v) for v in x], dtype=torch.float32, device=device).view(1, -1, 1, 1)
                 for x in (mean, std))  # type: ignore[return-value]


def by_class(labels: Tensor) -> dict[int, Tensor]:
    """{class: int64 positions of its samples, ascending} for the classes present, in ascending class order."""
    return {int(c): torch.nonzero(labels == c, as_tuple=False).flatten() for c in torch.unique(labels).tolist()}


def freeze(module: nn.Module) -> nn.Module:
    """``module`` in eval mode with gradients off for its parameters (returned for chaining)."""
    return module.eval().requires_grad_(False)
