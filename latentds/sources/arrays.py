"""Array sources: ``.npz`` archives and ``.h5``/``.hdf5`` files holding images and integer labels."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from latentds.errors import (
    SourceMismatchError,
    SourceNotFoundError,
    UnreadableImageError,
)
from latentds.sources.imageset import WHOLE, ImageSet, to_nchw_uint8

__all__ = ["load_h5", "load_npz"]


def _array_keys(split: str) -> list[tuple[str, str]]:
    """Candidate (images, labels) names for ``split``, most specific first."""
    if split == WHOLE:  # a file without splits: only the generic names
        return [("images", "labels")]
    keys = [(f"{split}/images", f"{split}/labels"), (f"{split}_images", f"{split}_labels")]
    if split == "train":
        keys += [("images", "labels"), ("x_train", "y_train")]
    elif split == "test":
        keys += [("x_test", "y_test")]
    return keys


def _pick_keys(names: Sequence[str], split: str, where: str) -> tuple[str, str]:
    for img_key, lab_key in _array_keys(split):
        if img_key in names:
            if lab_key not in names:
                raise SourceMismatchError(
                    f"{where}: has {img_key!r} but no {lab_key!r}; store the labels under {lab_key!r}"
                )
            return img_key, lab_key
    expected = ", ".join(f"{i!r}+{lab!r}" for i, lab in _array_keys(split))
    raise SourceNotFoundError(
        f"{where}: no images for split {split!r}: expected one of {expected}; the file holds {sorted(names)}"
    )


def load_npz(path: Path, split: str, image_size: int | None, progress: bool = False) -> ImageSet:
    """The ``split`` of a .npz archive (``images`` + ``labels``, optional ``classes``; see _array_keys)."""
    where = str(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UnreadableImageError(f"{where}: not a readable .npz archive ({exc})") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise UnreadableImageError(f"{where}: is a single .npy array, not a .npz archive of named arrays")
    with npz:
        img_key, lab_key = _pick_keys(npz.files, split, where)
        try:
            raw_images = npz[img_key]
            raw_labels = npz[lab_key]
            raw_classes = npz["classes"] if "classes" in npz.files else None
        except ValueError as exc:  # object arrays need pickle, which we never enable
            raise SourceMismatchError(
                f"{where}: {exc}; store numeric arrays and class names as a fixed-width string array "
                "(np.array(names), not dtype=object)"
            ) from exc
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise UnreadableImageError(f"{where}: corrupt .npz archive ({exc})") from exc
    return _from_arrays(raw_images, raw_labels, raw_classes, f"npz:{path}", where, image_size, path.stat().st_size)


def load_h5(path: Path, split: str, image_size: int | None, progress: bool = False) -> ImageSet:
    """The ``split`` of an HDF5 file (the .npz names as datasets, or ``<split>/images`` groups)."""
    import h5py

    where = str(path)
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise UnreadableImageError(f"{where}: not a readable HDF5 file ({exc})") from exc
    with h5:
        names: list[str] = []
        h5.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
        img_key, lab_key = _pick_keys(names, split, where)
        try:
            raw_images = h5[img_key][()]
            raw_labels = h5[lab_key][()]
        except OSError as exc:
            raise UnreadableImageError(f"{where}: cannot read {img_key!r}/{lab_key!r} ({exc})") from exc
        raw_classes = None
        group = img_key.rpartition("/")[0]
        for cand in ([f"{group}/classes"] if group else []) + ["classes"]:
            if cand in names:
                raw_classes = h5[cand][()]
                break
        else:
            for obj in ([h5[group]] if group else []) + [h5]:
                if "classes" in obj.attrs:
                    raw_classes = obj.attrs["classes"]
                    break
    return _from_arrays(raw_images, raw_labels, raw_classes, f"h5:{path}", where, image_size, path.stat().st_size)


def _from_arrays(
    raw_images: np.ndarray,
    raw_labels: np.ndarray,
    raw_classes: np.ndarray | None,
    name: str,
    where: str,
    image_size: int | None,
    source_bytes: int,
) -> ImageSet:
    images = to_nchw_uint8(np.asarray(raw_images), where, image_size)
    labels = _to_labels(np.asarray(raw_labels), where)
    if labels.shape[0] != images.shape[0]:
        raise SourceMismatchError(
            f"{where}: {images.shape[0]} images but {labels.shape[0]} labels; they must have the same length"
        )
    if raw_classes is not None:
        classes = [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in np.asarray(raw_classes).reshape(-1)]
    else:
        classes = [str(i) for i in range(int(labels.max()) + 1)] if labels.numel() else []
    return ImageSet.from_tensors(images, labels, classes, name, source_bytes)


def _to_labels(arr: np.ndarray, where: str) -> torch.Tensor:
    if arr.ndim == 2 and arr.shape[1] == 1:  # keras stores CIFAR labels as (N, 1)
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise SourceMismatchError(
            f"{where}: labels have shape {arr.shape}; expected (N,) integer class indices "
            "(for one-hot labels store labels.argmax(1))"
        )
    if arr.dtype.kind in "iu":
        return torch.from_numpy(arr.astype(np.int64))
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        return torch.from_numpy(arr.astype(np.int64))
    raise SourceMismatchError(f"{where}: labels must be integers, got dtype {arr.dtype}")
