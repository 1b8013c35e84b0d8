"""Embedding functions for inversion and condensation: random ConvNets and a pool of pre-trained ones.

Every random net is initialized from an explicit ``torch.Generator`` exactly as PyTorch's default
``reset_parameters`` would (kaiming-uniform with ``a = sqrt(5)`` and a ``1/sqrt(fan_in)`` bias bound), so a
work unit's embedding nets depend on its seed alone, never on the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from latentds.models import (
    ConvNet,
    create_model,
    input_args,
    output_to_unit,
    uint8_to_output,
)
from latentds.tensors import freeze

__all__ = ["EmbeddingSampler", "Normalizer", "random_convnet"]


def _reset_like_pytorch(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialize conv/linear/norm layers the way their ``reset_parameters`` does, from ``generator``."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()


def random_convnet(
    width: int,
    num_classes: int,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
    channels: int = 3,
    image_size: int = 32,
    depth: int | None = None,
) -> ConvNet:
    """A ConvNet (depth by resolution unless given) with PyTorch-default init drawn from ``generator`` (CPU).

    Built on the meta device first, so construction consumes no global random numbers.
    """
    with torch.device("meta"):
        args = input_args("convnet3", (channels, image_size, image_size))
        if depth is not None:
            args["depth"] = depth
        net = create_model("convnet3", num_classes=num_classes, width=width, **args)
    net = net.to_empty(device="cpu")  # init on the CPU: the same numbers on any device
    with torch.no_grad():
        _reset_like_pytorch(net, generator)
    return net.to(device)


class EmbeddingSampler:
    """Draws the embedding network of one condensation step: random, or one of a pool of pre-trained nets.

    With probability ``pool_prob`` (and a non-empty pool) the draw picks a pool member uniformly; otherwise it
    builds a fresh random ConvNet of width ``random_width``. All randomness comes from the generator passed
    to :meth:`draw`, so a work unit's sequence of nets depends on its own seed only.
    """

    def __init__(
        self,
        pool: Sequence[nn.Module] | None,
        random_width: int = 128,
        pool_prob: float = 1.0,
        num_classes: int = 10,
        channels: int = 3,
        image_size: int = 32,
        device: str | torch.device = "cpu",
    ):
        if not 0.0 <= pool_prob <= 1.0:
            raise ValueError(f"pool_prob must lie in [0, 1], got {pool_prob}")
        self.pool = [freeze(net.to(device)) for net in (pool or [])]
        self.random_width = int(random_width)
        self.pool_prob = float(pool_prob) if self.pool else 0.0
        self.num_classes = num_classes
        self.channels = channels
        self.image_size = image_size
        self.device = torch.device(device)

    def draw(self, generator: torch.Generator) -> nn.Module:
        """One eval-mode, frozen net with ``.embed(x) -> (B, F)``."""
        # Always consume the same numbers per draw so the stream does not depend on the pool's size.
        u = float(torch.rand((), generator=generator))
        pick = int(torch.randint(0, max(len(self.pool), 1), (), generator=generator))
        if u < self.pool_prob:
            return self.pool[pick]
        net = random_convnet(
            self.random_width, self.num_classes, generator, self.device, self.channels, self.image_size
        )
        return freeze(net)


class Normalizer:
    """Maps real uint8 images and generator outputs into the embedding nets' input space.

    Real: ``x / 255``; generated: ``G(z)`` from the generator's ``output_range`` to [0, 1]; both then
    ``(x - mean) / std``. ``output_range`` is the generator's contract's (None: no generator, real images only).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: str | torch.device,
                 output_range: tuple[float, float] | None):
        self.mean = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.output_range = None if output_range is None else tuple(float(v) for v in output_range)

    def real(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) uint8 -> normalized float32 on the normalizer's device."""
        x = images_uint8.to(self.mean.device, non_blocking=True).float().div_(255.0)
        return (x - self.mean) / self.std

    def generated(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in the generator's output range -> normalized (differentiable)."""
        return (output_to_unit(x.float(), self._range()) - self.mean) / self.std

    def to_generator_range(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) uint8 -> float32 in the generator's output range (what inversion's pixel loss compares)."""
        return uint8_to_output(images_uint8.to(self.mean.device, non_blocking=True), self._range())

    def _range(self) -> tuple[float, float]:
        if self.output_range is None:
            raise ValueError("this Normalizer was made without a generator's output_range; pass contract.output_range")
        return self.output_range
