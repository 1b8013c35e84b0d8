"""latentds: compressed datasets as a frozen class-conditional generator plus learned latents."""

from __future__ import annotations

__version__ = "0.1.0"

import logging

from latentds.errors import LatentdsError, LdsError

# Modules log to logging.getLogger(__name__) under "latentds": records only, no output unless someone listens
# (the CLI installs a stderr handler; in Python: logging.basicConfig(level=logging.INFO)).
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["EncodeResult", "LatentDataset", "LatentdsError", "LdsError", "__version__", "encode", "evaluate",
           "open_lds", "train_gan"]


def __getattr__(name: str):  # lazy: `import latentds` stays cheap for the CLI and format-only users
    if name == "LatentDataset":
        from latentds.dataset import LatentDataset

        return LatentDataset
    if name == "open_lds":
        from latentds.lds import open_lds

        return open_lds
    if name in ("encode", "evaluate"):  # the subpackages, callable as the API functions (see their __init__)
        import importlib

        return importlib.import_module(f"latentds.{name}")
    if name in ("train_gan", "EncodeResult", "EvalResult"):
        from latentds import api

        return getattr(api, name)
    raise AttributeError(f"module 'latentds' has no attribute {name!r}")
