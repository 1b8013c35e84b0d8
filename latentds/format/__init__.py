"""The .lds container: a safetensors file with a latentds manifest (spec/FORMAT.md).

This package knows nothing of models or training: it reads, writes and verifies bytes. Its names load on first
use, so the torch-free parts (``render``, ``outputs``, ``staging``) cost the command-line parser nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["FORMAT_VERSION", "LdsReader", "TensorInfo", "atomic_write", "file_sha256", "pack", "read_zst", "unpack",
           "write_lds"]

_HOME = {
    "FORMAT_VERSION": "spec", "LdsReader": "reader", "TensorInfo": "header", "file_sha256": "header",
    "read_zst": "compress", "pack": "packing", "unpack": "packing", "atomic_write": "writer", "write_lds": "writer",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(f"latentds.format.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'latentds.format' has no attribute {name!r}")
