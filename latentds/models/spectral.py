"""Spectral normalization helpers: add it for GAN training, remove it before saving a generator.

Removing keeps the normalized weight, so a generator trained with ``spectral_norm=True`` saves with the same
state-dict keys and shapes as one built with ``spectral_norm=False`` and decodes identically.
"""

from __future__ import annotations

from typing import TypeVar

from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["apply_spectral_norm", "remove_spectral_norm"]

M = TypeVar("M", bound=nn.Module)

# BigGAN settings: one power iteration per training forward, eps 1e-8.
SN_POWER_ITERATIONS = 1
SN_EPS = 1e-8


def apply_spectral_norm(
    module: M, types: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)
) -> M:
    """Wrap the ``weight`` of every submodule of the given types with spectral normalization, in place."""
    for m in list(module.modules()):
        if isinstance(m, types) and not parametrize.is_parametrized(m, "weight"):
            spectral_norm(m, n_power_iterations=SN_POWER_ITERATIONS, eps=SN_EPS)
    return module


def remove_spectral_norm(module: M) -> M:
    """Remove every spectral-norm parametrization in place, keeping the current normalized weight."""
    for m in list(module.modules()):
        if parametrize.is_parametrized(m, "weight") and all(
            _is_spectral_norm(p) for p in m.parametrizations["weight"]
        ):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return module


def _is_spectral_norm(p: nn.Module) -> bool:
    # torch's parametrization class is private (torch.nn.utils.parametrizations._SpectralNorm)
    return type(p).__name__ == "_SpectralNorm"
