"""Spectral normalization helpers: add it for GAN training, remove it before saving a generator.

Removing keeps the normalized weight, so a generator trained with ``spectral_norm=True`` saves with the same
state-dict keys and shapes as one built with ``spectral_norm=False`` and decodes identically.

The power iteration and sigma always run in fp32, also inside a bf16/fp16 autocast region: CUDA's autocast
runs ``mv`` in the low dtype, which would round ``u``, ``v`` and sigma to 8 bits of mantissa at every step
(and torch 2.3.0's bf16 ``vdot`` was wrong on CUDA). Only the conv or linear layer that uses the normalized
weight runs in the autocast dtype.
"""

from __future__ import annotations

import contextlib
from typing import TypeVar

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm  # torch's class; stable since torch 1.11

__all__ = ["apply_spectral_norm", "remove_spectral_norm"]

M = TypeVar("M", bound=nn.Module)

# BigGAN settings: one power iteration per training forward, eps 1e-8.
SN_POWER_ITERATIONS = 1
SN_EPS = 1e-8


_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu")


class _FP32SpectralNorm(_SpectralNorm):
    """torch's spectral norm (same buffers ``_u``, ``_v``, same state-dict keys) with autocast off inside."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        off = (torch.autocast(weight.device.type, enabled=False) if weight.device.type in _AUTOCAST_DEVICES
               else contextlib.nullcontext())  # e.g. "meta" (parameter counts) has no autocast to leave
        with off:
            return super().forward(weight.float()).to(weight.dtype)


def apply_spectral_norm(
    module: M, types: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)
) -> M:
    """Wrap the ``weight`` of every submodule of the given types with spectral normalization, in place."""
    for m in list(module.modules()):
        if isinstance(m, types) and not parametrize.is_parametrized(m, "weight"):
            dim = 1 if isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0  # as torch's
            sn = _FP32SpectralNorm(m.weight, n_power_iterations=SN_POWER_ITERATIONS, dim=dim, eps=SN_EPS)
            parametrize.register_parametrization(m, "weight", sn)
    return module


def remove_spectral_norm(module: M) -> M:
    """Remove every spectral-norm parametrization in place, keeping the current normalized weight."""
    for m in list(module.modules()):
        if parametrize.is_parametrized(m, "weight") and all(
            isinstance(p, _SpectralNorm) for p in m.parametrizations["weight"]
        ):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return module
