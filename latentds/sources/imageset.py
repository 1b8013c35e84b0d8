"""The in-memory split every stage consumes (:class:`ImageSet`) and the array helpers the loaders share."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from latentds.errors import EmptyClassError, SourceMismatchError, UnsupportedImageError

__all__ = ["CHANNELS", "ImageSet", "compute_fingerprint", "resize_images", "to_nchw_uint8"]

WHOLE = "whole"  # the split name for a source without splits: DIR/<class>/..., an .npz's images/labels
SPLIT_NAMES = ("train", "test", "val", "valid", "validation")  # a folder named so is shown with its parent
CHANNELS = (1, 3)  # grayscale or RGB; alpha is dropped and palettes are expanded when files are decoded
_RESIZE_CHUNK = 1024  # images per interpolation call: bounds the float copy


@dataclass(eq=False, repr=False)
class ImageSet:
    """One split of a labelled image dataset, fully in memory, at its true channel count and size."""

    images: torch.Tensor  # (N, C, H, W) uint8, C in (1, 3), contiguous, on the CPU
    labels: torch.Tensor  # (N,) int64 in [0, num_classes)
    classes: list[str]  # names in label order
    name: str  # e.g. "cifar10", "imagefolder:/abs/path", "npz:/abs/path"
    fingerprint: str  # see compute_fingerprint()
    source_bytes: int | None  # bytes of the files the set was read from; None if unknown

    @classmethod
    def from_tensors(
        cls,
        images: torch.Tensor,
        labels: torch.Tensor,
        classes: Sequence[str],
        name: str,
        source_bytes: int | None = None,
    ) -> ImageSet:
        """Build an ImageSet from uint8 (N, C, H, W) images (C = 1 or 3) and int64 labels, computing its fingerprint."""
        images = images.contiguous()
        labels = labels.to(torch.int64).contiguous()
        classes = [str(c) for c in classes]
        _check_set(images, labels, classes, name)
        return cls(images, labels, classes, name, compute_fingerprint(images, labels, classes), source_bytes)
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        _, c, h, w = self.images.shape
        return (c, h, w)

    def __len__(self) -> int:
        return self.images.shape[0]

    def provenance(self, with_path: bool = False) -> dict[str, Any]:
        """What a .lds records of its source: kind ("imagefolder", "npz", "h5", "named"), name (a folder's or
        file's own name, with its parent for a split folder: "cifar10-jpeg/train"; a named set's name), content
        sha256, image count and bytes. ``path``, the full local path, only ``with_path``: a file shared with
        strangers should not tell them where its sender keeps data."""
        kind, sep, where = self.name.partition(":")
        record: dict[str, Any] = {"kind": kind if sep else "named", "name": self.name}
        if sep:
            path = Path(where)
            split = path.name in SPLIT_NAMES and path.parent.name
            record["name"] = f"{path.parent.name}/{path.name}" if split else path.name
            if with_path:
                record["path"] = where
        return {**record, "fingerprint": self.fingerprint, "num_images": len(self), "bytes": self.source_bytes}

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return (
            f"ImageSet(name={self.name!r}, n={len(self)}, image_shape=({c}, {h}, {w}), "
            f"num_classes={self.num_classes}, fingerprint={self.fingerprint[:12]}...)"
        )

    def mean_std(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and (population) standard deviation on the 0..1 scale."""
        c = self.images.shape[1]
        # Exact: per-channel histograms of the 256 levels (torch.bincount on uint8 is ~30x faster than a float pass).
        hist = torch.zeros(c, 256, dtype=torch.float64)
        for chunk in self.images.split(4096):
            for ch in range(c):
                hist[ch] += torch.bincount(chunk[:, ch].reshape(-1), minlength=256).to(torch.float64)
        levels = torch.arange(256, dtype=torch.float64) / 255.0
        count = hist.sum(dim=1)
        mean = (hist * levels).sum(dim=1) / count
        var = ((hist * levels.square()).sum(dim=1) / count - mean.square()).clamp_min(0.0)
        return mean.tolist(), var.sqrt().tolist()

    def class_indices(self, c: int) -> torch.Tensor:
        """Indices (int64, ascending) of the samples of class ``c``."""
        if not 0 <= c < self.num_classes:
            raise IndexError(f"class {c} out of range: this set has classes 0..{self.num_classes - 1}")
        return torch.nonzero(self.labels == c, as_tuple=False).flatten()


def compute_fingerprint(images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> str:
    """sha256 hex over the labels (little-endian int64), the images (uint8 (N, C, H, W), C order) and the
    class names joined by "\\n", in that order: content-addressed, independent of paths and mtimes."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(labels.detach().cpu().numpy(), dtype="<i8"))
    h.update(np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.uint8))
    h.update("\n".join(classes).encode("utf-8"))
    return h.hexdigest()


def _check_set(images: torch.Tensor, labels: torch.Tensor, classes: list[str], name: str) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in CHANNELS:
        raise UnsupportedImageError(
            f"{name}: images must be uint8 (N, C, H, W) with C = 1 (grayscale) or 3 (RGB), "
            f"got {images.dtype} {tuple(images.shape)}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise SourceMismatchError(
            f"{name}: {images.shape[0]} images but labels of shape {tuple(labels.shape)}; "
            "there must be exactly one integer label per image"
        )
    if not classes:
        raise EmptyClassError(f"{name}: no classes")
    if len(set(classes)) != len(classes):
        dupes = sorted({c for c in classes if classes.count(c) > 1})
        raise SourceMismatchError(f"{name}: duplicate class names {dupes}; class names must be unique")
    if images.shape[0] == 0:
        raise EmptyClassError(f"{name}: no images")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= len(classes):
        bad = lo if lo < 0 else hi
        raise SourceMismatchError(
            f"{name}: label {bad} is out of range for {len(classes)} classes (labels must be in 0..{len(classes) - 1})"
        )
    counts = torch.bincount(labels, minlength=len(classes))
    empty = [classes[i] for i in torch.nonzero(counts == 0).flatten().tolist()]
    if empty:
        raise EmptyClassError(
            f"{name}: class(es) {empty[:10]}{' ...' if len(empty) > 10 else ''} have no images; "
            "every class needs at least one image (remove the class or add images)"
        )


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size): bilinear with antialiasing (as torchvision's Resize),
    rounded to the nearest level; images already of that size are returned unchanged."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    out = torch.empty((*images.shape[:-2], size, size), dtype=torch.uint8)
    for i in range(0, images.shape[0], _RESIZE_CHUNK):
        x = images[i : i + _RESIZE_CHUNK].float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[i : i + _RESIZE_CHUNK] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def to_nchw_uint8(arr: np.ndarray, where: str, image_size: int | None) -> torch.Tensor:
    """(N,H,W), (N,H,W,C) or (N,C,H,W) with C in {1, 3}; uint8, integer 0..255 or float 0..1 -> (N, C, H, W) uint8.

    The channel count is kept; ``image_size`` resizes to ``image_size`` x ``image_size`` (None: keep the size).
    """
    if arr.ndim == 3:
        arr = arr[:, None]  # grayscale (N, H, W) -> (N, 1, H, W)
    elif arr.ndim == 4:
        channels_first = arr.shape[1] in CHANNELS
        channels_last = arr.shape[3] in CHANNELS
        if channels_first and channels_last:  # e.g. (N, 3, 32, 3): the reading with square images wins
            channels_last = arr.shape[1] == arr.shape[2]
            channels_first = not channels_last
        if channels_last:
            arr = arr.transpose(0, 3, 1, 2)
        elif not channels_first:
            raise UnsupportedImageError(
                f"{where}: images of shape {arr.shape} have no channel axis of size 1 or 3; expected "
                "(N, H, W, C) or (N, C, H, W) with C = 3 (RGB) or 1 (grayscale), or (N, H, W)"
            )
    else:
        raise SourceMismatchError(
            f"{where}: images have shape {arr.shape}; expected (N, H, W, C), (N, C, H, W) or (N, H, W)"
        )
    images = torch.from_numpy(np.ascontiguousarray(_to_uint8(arr, where)))
    return resize_images(images, image_size) if image_size is not None else images


def _to_uint8(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.size == 0:
        return arr.astype(np.uint8)
    lo, hi = arr.min(), arr.max()
    if arr.dtype.kind == "f":
        if not np.isfinite(lo) or not np.isfinite(hi) or lo < 0 or hi > 1:
            raise UnsupportedImageError(
                f"{where}: float images must lie in [0, 1], found values in [{lo:.4g}, {hi:.4g}]; "
                "undo any normalization, or divide 0..255 data by 255 (or store uint8)"
            )
        return np.rint(arr.astype(np.float32) * 255.0).astype(np.uint8)  # round to nearest level
    if arr.dtype.kind in "iu" and lo >= 0 and hi <= 255:
        return arr.astype(np.uint8)
    raise UnsupportedImageError(
        f"{where}: images must be uint8 (or float in [0, 1]), got {arr.dtype} with values in [{lo}, {hi}]; "
        "convert them to 8-bit first"
    )
