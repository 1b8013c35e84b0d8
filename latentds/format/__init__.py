"""The .lds container: a safetensors file with a latentds manifest (spec/FORMAT.md).

This package knows nothing of models or training: it reads, writes and verifies bytes.
"""

from latentds.format.compress import pack, read_zst, unpack
from latentds.format.reader import LdsReader, TensorInfo, file_sha256
from latentds.format.spec import FORMAT_VERSION
from latentds.format.writer import atomic_write, write_lds

__all__ = ["FORMAT_VERSION", "LdsReader", "TensorInfo", "atomic_write", "file_sha256", "pack", "read_zst", "unpack", "write_lds"]
