"""latentds: compressed datasets as a frozen class-conditional generator plus learned latents."""

from __future__ import annotations

__version__ = "0.1.0"

from latentds.errors import LatentdsError, LdsError  # noqa: E402

__all__ = ["LatentdsError", "LdsError", "__version__"]
