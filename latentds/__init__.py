"""latentds: compressed datasets as a frozen class-conditional generator plus learned latents.

    from latentds import LatentDataset, encode, evaluate, open_lds, train_gan

Importing the package stays cheap (no torch) for the CLI and format-only users: the API functions import
what they need when called, and ``LatentDataset``/``open_lds``/``save_lds`` are loaded on first use.
"""

from __future__ import annotations

import logging

from latentds.api import EncodeResult, encode, evaluate, train_gan
from latentds.errors import LatentdsError, LdsError
from latentds.evaluation.result import EvalResult
from latentds.version import __version__

# Modules log to logging.getLogger(__name__) under "latentds": records only, no output unless someone listens
# (the CLI installs a stderr handler; in Python: logging.basicConfig(level=logging.INFO)).
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["EncodeResult", "EvalResult", "LatentDataset", "LatentdsError", "LdsError", "__version__", "encode",
           "evaluate", "image_spec", "open_lds", "save_lds", "train_gan"]

_LAZY = {"LatentDataset": "latentds.dataset", "open_lds": "latentds.lds", "save_lds": "latentds.lds",
         "image_spec": "latentds.lds"}


def __getattr__(name: str):  # lazy: these import torch
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'latentds' has no attribute {name!r}")
