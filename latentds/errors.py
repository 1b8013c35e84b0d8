"""The project's exception types.

Every error that bad input can cause is a :class:`LatentdsError` (a ``ValueError``), with one subclass per
cause, so callers can catch the family or one precise problem. Messages name the file or value at fault,
what was expected, and what to do. The CLI prints them as one line.
"""

from __future__ import annotations

__all__ = [
    "ChecksumError",
    "CompressionError",
    "ConfigError",
    "EmptyClassError",
    "GeneratorKeysError",
    "HeaderLengthError",
    "HeaderParseError",
    "HeaderTooLargeError",
    "LabelRangeError",
    "LatentdsError",
    "LdsError",
    "LdsNotFoundError",
    "ManifestError",
    "MergeError",
    "NonFiniteError",
    "NotLdsError",
    "ReleaseFormatError",
    "RemoteReadError",
    "RemoteRefusedError",
    "RemoteUnreachableError",
    "SourceError",
    "SourceMismatchError",
    "SourceNotFoundError",
    "TensorLayoutError",
    "TensorMismatchError",
    "TruncatedFileError",
    "UnknownArchitectureError",
    "UnknownModelError",
    "UnreadableImageError",
    "UnsupportedImageError",
    "UnsupportedVersionError",
    "UsageError",
]

class LatentdsError(ValueError):
    """Root of every error latentds raises on bad input."""


# --- .lds files -------------------------------------------------------------------------------------
class LdsError(LatentdsError):
    """A .lds file cannot be read, or is not what it claims to be."""


class LdsNotFoundError(LdsError, FileNotFoundError):
    """The path does not exist or is not a regular file."""


class HeaderTooLargeError(LdsError):
    """The declared header length exceeds the format's bound."""


class HeaderLengthError(LdsError):
    """The declared header length is impossible for this file (larger than the file, or too small)."""


class HeaderParseError(LdsError):
    """The header is not valid UTF-8 JSON of the expected shape."""


class NotLdsError(LdsError):
    """A readable safetensors file, but without a latentds manifest (wrong magic)."""


class UnsupportedVersionError(LdsError):
    """The file's format major version is not one this build reads."""


class ManifestError(LdsError):
    """The manifest is missing a field or a field has an invalid value."""


class TensorLayoutError(LdsError):
    """Tensor offsets are out of order, overlapping, leave gaps or point outside the data buffer."""


class TruncatedFileError(LdsError):
    """The file is shorter (or longer) than its header says."""


class TensorMismatchError(LdsError):
    """A tensor's dtype, shape or byte length disagrees with the header or the manifest."""


class LabelRangeError(LdsError):
    """A label is negative or not smaller than the number of classes."""


class UnknownArchitectureError(LdsError):
    """The generator architecture named in the file is not registered in this build."""


class GeneratorKeysError(LdsError):
    """The stored generator tensors do not match the named architecture's parameters and buffers."""


class ChecksumError(LdsError):
    """A stored sha256 does not match the data: the file is corrupt."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []


class NonFiniteError(LdsError):
    """Latents or generator weights hold NaN or infinity: they would decode to garbage images."""


# --- remote files (format/remote.py): each cause its own exit code in the CLI ---------------------------
class RemoteReadError(LdsError):
    """A remote file could not be read: a protocol error, a server failure (HTTP 5xx), a broken answer. The file
    itself is not judged (exit code 3, as for an unreachable server)."""


class RemoteUnreachableError(RemoteReadError):
    """No server answered in time: connection refused or reset, an unknown host, a deadline passed (exit code 3)."""


class RemoteRefusedError(RemoteReadError):
    """The server answered but would not serve the file as asked (HTTP 401, 403 and other 4xx), or latentds will
    not follow where it points (a redirect to another origin; ranges ignored with the cache turned off): exit 4."""


class UsageError(LatentdsError):
    """A command that cannot run as asked (an output that already exists, a missing argument): exit code 2."""


class CompressionError(LdsError):
    """A .lds.zst transport file is corrupt, truncated or too large to unpack."""


# --- models -----------------------------------------------------------------------------------------
class UnknownModelError(LatentdsError, KeyError):
    """create_model() was given a name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


# --- dataset sources (encode inputs) ----------------------------------------------------------------
class SourceError(LatentdsError):
    """A dataset given as input to encode/eval cannot be used."""


class SourceNotFoundError(SourceError, FileNotFoundError):
    """The dataset path does not exist, or the named dataset is not present and cannot be downloaded."""


class EmptyClassError(SourceError):
    """A class folder holds no images."""


class SourceMismatchError(SourceError):
    """Images and labels disagree (different lengths, labels out of range, wrong array shapes)."""


class UnreadableImageError(SourceError):
    """An image file could not be decoded."""


class UnsupportedImageError(SourceError):
    """Images of a size or channel count the pipeline does not handle."""


# --- configuration ----------------------------------------------------------------------------------
class ConfigError(LatentdsError):
    """An unknown preset, an unknown config field, or a value of the wrong type."""


# --- merge -------------------------------------------------------------------------------------------------
class MergeError(LatentdsError):
    """.lds files that cannot be merged: different generators, classes or image specs, or a file given twice."""


class ReleaseFormatError(LatentdsError):
    """A file given to ``import-itgan`` is not what the official IT-GAN release ships."""
