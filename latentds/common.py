"""One home for the low-level helpers every layer uses: devices, uint8 -> normalized float, per-class
selection, freezing a model, the library's logger and progress bars. Nothing here knows about files,
models or encoding."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from latentds.errors import ConfigError

__all__ = ["by_class", "channel_stats", "freeze", "normalize", "progress_bar", "resolve_device"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> cuda if available, else cpu; anything else as ``torch.device`` (ConfigError if unusable)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return dev


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


def progress_bar(iterable: Any = None, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar over ``iterable``: hidden when not ``enabled``, and when stderr is not a terminal (a log file
    or CI gets the log lines, not carriage-return debris); notebooks keep their widget. tqdm is imported only
    when used."""
    from tqdm.auto import tqdm

    notebook = any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)  # tqdm.auto picked the widget
    if enabled and not notebook:  # a console bar: only on a terminal
        stream = kwargs.get("file") or sys.stderr
        enabled = bool(getattr(stream, "isatty", lambda: False)())
    return tqdm(iterable, disable=not enabled, **kwargs)
