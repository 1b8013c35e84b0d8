"""Memory a file asks for, estimated before anything is built, and refused over a budget.

A 48 KiB file can name a generator whose weights or activations take gigabytes (65,536 classes, a huge width,
a 65,536-pixel image side). Before a generator is built or run, :func:`estimate_decode` works out what decoding
costs from the file's generator contract and arguments alone: the architecture is built on PyTorch's ``meta``
device (shapes, no storage) and run once there on one image, recording every module's output size. The estimate
is the weights (held twice while they load), plus per image in a decode pass ``ACTIVATION_FACTOR`` times the
largest activation (an op's input, its output and a residual branch alive at once). Over the budget, the work
is refused with :class:`ResourceLimitError` naming the figures and how to raise the budget.

The budget: ``LATENTDS_MAX_MEMORY`` (bytes, or with a K/M/G/T suffix: ``8G``), the CLI's ``--max-memory``, else
``DEFAULT_MAX_MEMORY`` (4 GiB, which a laptop with 8 GB survives) on the CPU; on a GPU without an explicit budget,
80 % of the GPU's memory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from latentds.errors import LdsError, UsageError
from latentds.format.render import safe

__all__ = ["ACTIVATION_FACTOR", "DEFAULT_MAX_MEMORY", "ENV_MAX_MEMORY", "Estimate", "ResourceLimitError",
           "check_budget", "estimate_decode", "largest_activation", "max_memory", "parse_size"]

ENV_MAX_MEMORY = "LATENTDS_MAX_MEMORY"
DEFAULT_MAX_MEMORY = 4 * 2**30
#: Live tensors per image at the worst point of a forward pass, in units of the largest activation: the op's
#: input and output plus a residual branch (BigGAN's GBlock keeps its skip path while the main path runs).
ACTIVATION_FACTOR = 3
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(i?b)?", re.IGNORECASE)


class ResourceLimitError(LdsError):
    """Decoding or merging a file would need more memory than the budget allows (``LATENTDS_MAX_MEMORY``)."""


def parse_size(text: str, what: str = ENV_MAX_MEMORY) -> int:
    """'4G', '512M', '1.5GiB', '1000000' -> bytes (K/M/G/T are powers of 1024); UsageError otherwise."""
    m = _SIZE.fullmatch(str(text).strip())
    if m is None:
        raise UsageError(f"{what}={safe(text, 40)}: expected a size such as 4G, 512M or a number of bytes")
    value = float(m.group(1)) * 1024 ** " KMGT".index((m.group(2) or " ").upper())
    if not 1 <= value < 2**63:
        raise UsageError(f"{what}={safe(text, 40)}: expected a size between 1 byte and 8 EiB")
    return int(value)


def max_memory(device: str | torch.device = "cpu") -> int:
    """The budget in bytes: ``$LATENTDS_MAX_MEMORY``, else 4 GiB on the CPU or 80 % of a GPU's memory."""
    text = os.environ.get(ENV_MAX_MEMORY, "")
    if text:
        return parse_size(text)
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(dev).total_memory * 0.8)
    return DEFAULT_MAX_MEMORY


@dataclass(frozen=True)
class Estimate:
    """What decoding ``batch`` images at a time costs, in bytes."""

    weights: int  # parameter and buffer elements
    weight_bytes: int  # held while loading: the stored copy and the model's
    activation_per_image: int  # bytes of the largest activation of one image
    batch: int
    total: int

    def describe(self) -> str:
        gib = 2**30
        return (f"{self.weights:,} weights ({self.weight_bytes / gib:.2f} GiB while loading) + {self.batch} images "
                f"per pass x {ACTIVATION_FACTOR} x {self.activation_per_image / 2**20:,.1f} MiB (largest activation "
                f"per image) = {self.total / gib:.2f} GiB")


def largest_activation(build: Callable[[], nn.Module], latent_dim: int) -> int | None:
    """Elements of the largest tensor any module outputs for one image: the model ``build()`` makes is built and
    run on PyTorch's fake tensors (shapes and dtypes only, no storage; unlike the meta device they keep the CPU
    as their device, so a forward that enters ``torch.autocast("cpu")`` runs). None when it cannot run there."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    largest = 0

    def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal largest
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, torch.Tensor):
                largest = max(largest, t.numel())

    try:
        with FakeTensorMode(), torch.no_grad():
            model = build()
            for m in model.modules():
                m.register_forward_hook(record)
            model.eval()(torch.empty(1, latent_dim), torch.zeros(1, dtype=torch.long))
    except Exception:  # noqa: BLE001 - an architecture that cannot run on fake tensors: the caller falls back
        return None
    return largest


def estimate_decode(weights: int, largest: int | None, image_shape: tuple[int, ...], batch: int = 1,
                    element_bytes: int = 4) -> Estimate:
    """The memory of loading ``weights`` weights and decoding ``batch`` images per pass whose largest activation
    has ``largest`` elements (None: unknown, taken as 64 feature maps of the ``image_shape`` output)."""
    if largest is None:
        c, h, w = (int(v) for v in image_shape)
        largest = 64 * c * h * w
    per_image = largest * element_bytes
    weight_bytes = 2 * weights * 4
    return Estimate(weights, weight_bytes, per_image, batch, weight_bytes + batch * ACTIVATION_FACTOR * per_image)


def check_budget(what: str, needed: int, detail: str, device: str | torch.device = "cpu") -> None:
    """Raise ResourceLimitError when ``needed`` bytes exceed the budget; ``what`` names the file and the work."""
    budget = max_memory(device)
    if needed > budget:
        raise ResourceLimitError(
            f"{what} would need about {needed / 2**30:,.2f} GiB ({detail}), more than the "
            f"{budget / 2**30:,.2f} GiB allowed; the file asks for more than this machine should give it. If you "
            f"trust it, raise the budget: {ENV_MAX_MEMORY}=16G (or --max-memory 16G)")
