"""Which device a run uses: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` resolved and checked once."""

from __future__ import annotations

import torch

from latentds.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> cuda if available, else cpu; anything else as ``torch.device`` (ConfigError if unusable:
    CUDA asked for on a machine without it, or a ``cuda:N`` beyond the machine's devices)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()  # checked here: CUDA would only fail later, at the first allocation
        have = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise ConfigError(f"device {str(dev)!r} requested but this machine has {count} CUDA device"
                          f"{'s' if count != 1 else ''} ({have}); use one of them, or 'cuda'")
    return dev
