"""Constants of the .lds format (spec/FORMAT.md is normative; this module mirrors it)."""

from __future__ import annotations

import re

import numpy as np
import torch

FORMAT_NAME = "latentds"
FORMAT_VERSION = "1.0"
#: The version a file with int8 latents declares (1.1 added the encoding and ``latents.scale``; a 1.0 reader
#: refuses the encoding by its name).
FORMAT_VERSION_INT8 = "1.1"
#: Major versions this build reads. A file with another major version is refused.
READABLE_MAJOR_VERSIONS = (1,)

#: Metadata keys inside the safetensors ``__metadata__`` map.
META_MANIFEST = "latentds.manifest"
META_MANIFEST_SHA256 = "latentds.manifest_sha256"

#: Bounds checked before anything is allocated.
MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_MANIFEST_BYTES = 8 * 1024 * 1024
#: Header JSON is padded with spaces so the data buffer starts on an 8-byte boundary.
HEADER_ALIGNMENT = 8

LATENTS = "latents"
LABELS = "labels"
GENERATOR_PREFIX = "generator."

#: Rows of latents per integrity chunk (a partial read checks only the chunks it touches).
DEFAULT_CHUNK_ROWS = 4096

#: Latent encodings this build decodes. "raw": the latents tensor holds the vectors as floats.
#: "int8": the latents tensor holds int8 codes; dimension j decodes to ``latents[:, j] * latents.scale[j]``
#: with ``latents.scale`` a list of latent_dim numbers in the manifest.
LATENT_ENCODINGS = ("raw", "int8")
INT8 = "int8"
#: Bounds on a dimension's scale: finite, positive, at most this (a coordinate of 127 x 1e4 is no latent).
MAX_LATENT_SCALE = 1e4

# safetensors dtype names <-> torch dtypes. numpy has no bfloat16: it is read as uint16 and viewed.
ST_TO_TORCH: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
TORCH_TO_ST = {v: k for k, v in ST_TO_TORCH.items()}
ST_TO_NUMPY: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
ITEMSIZE = {k: v.itemsize for k, v in ST_TO_NUMPY.items()}

LATENT_DTYPES = ("F32", "F16", "BF16")  # "raw" latents; "int8" latents are I8
LABEL_DTYPES = ("U8", "I16", "I32", "I64")


_VERSION = re.compile(r"([0-9]{1,9})\.([0-9]{1,9})")  # [0-9], not \d: ASCII digits only (no full-width "１")


def parse_version(text: object) -> tuple[int, int]:
    """Split "MAJOR.MINOR" (ASCII digits, nothing else: no spaces, signs or other digits) into integers;
    raise ValueError on anything else."""
    m = _VERSION.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"format_version must be MAJOR.MINOR in ASCII digits, e.g. {FORMAT_VERSION}")
    return int(m.group(1)), int(m.group(2))
