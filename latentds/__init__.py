"""latentds: compressed datasets as a frozen class-conditional generator plus learned latents."""

from __future__ import annotations

__version__ = "0.1.0"

from latentds.errors import LatentdsError, LdsError

__all__ = ["LatentDataset", "LatentdsError", "LdsError", "__version__", "open_lds"]


def __getattr__(name: str):  # lazy: `import latentds` stays cheap for the CLI and format-only users
    if name == "LatentDataset":
        from latentds.dataset import LatentDataset

        return LatentDataset
    if name == "open_lds":
        from latentds.lds import open_lds

        return open_lds
    raise AttributeError(f"module 'latentds' has no attribute {name!r}")
