"""Dataset sources: turn what a user names (``cifar10``, an image folder, an .npz or .h5 file) into an ImageSet.

An :class:`ImageSet` is the whole split in memory as uint8 ``(N, C, H, W)`` images (C = 1 grayscale or 3 RGB,
as stored) plus int64 labels, class names and a content fingerprint. :func:`load_source` is the one entry point;
every failure caused by the input raises a :class:`~latentds.errors.SourceError` subclass whose message names
the path and what to do. Images keep their native size unless ``image_size`` asks for a square resize
(bilinear with antialiasing).

Spec forms accepted by :func:`load_source`:

- ``cifar10`` / ``cifar100``: torchvision's CIFAR datasets under ``root`` (default :func:`default_root`).
- a directory: ``DIR/<split>/<class>/<image>`` if ``DIR/<split>`` exists, else ``DIR/<class>/<image>``.
- ``*.npz``: arrays ``images`` + ``labels`` (optional ``classes``); ``test_images``/``x_test`` etc. for other splits.
- ``*.h5`` / ``*.hdf5``: the same names as datasets, or ``<split>/images`` + ``<split>/labels`` groups.

A path may be prefixed ``imagefolder:``, ``npz:`` or ``h5:`` to force its kind (and to reach a folder that is
named like a built-in dataset). A new kind of file is one loader in :data:`LOADERS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from latentds.errors import ConfigError, SourceNotFoundError
from latentds.sources.arrays import load_h5, load_npz
from latentds.sources.cifar import CIFAR, cifar_in_dir, default_root, load_cifar
from latentds.sources.folder import IMAGE_EXTENSIONS, load_image_folder
from latentds.sources.imageset import (
    CHANNELS,
    WHOLE,
    ImageSet,
    compute_fingerprint,
    resize_images,
)

__all__ = [
    "CHANNELS",
    "IMAGE_EXTENSIONS",
    "LOADERS",
    "ImageSet",
    "Loader",
    "compute_fingerprint",
    "default_root",
    "is_named",
    "load_source",
    "load_test_source",
    "resize_images",
]

MAX_IMAGE_SIZE = 4096  # a resize target: every image becomes C x N x N uint8 in memory

_ACCEPTED_FORMS = (
    "accepted forms: 'cifar10' or 'cifar100' (with --root/--download); an image folder DIR laid out as "
    "DIR/<class>/<image> or DIR/train/<class>/<image> + DIR/test/<class>/<image>; a .npz file with arrays "
    "'images' and 'labels'; a .h5/.hdf5 file with datasets 'images' and 'labels'"
)


@dataclass(frozen=True)
class Loader:
    """One kind of source on disk: how to recognise it and how to read a split of it."""

    load: Callable[[Path, str, int | None, bool], ImageSet]  # (path, split, image_size, progress)
    suffixes: tuple[str, ...] = ()  # file suffixes that select it; () = a folder
    is_dir: bool = False


LOADERS: dict[str, Loader] = {
    "imagefolder": Loader(load_image_folder, is_dir=True),
    "npz": Loader(load_npz, (".npz",)),
    "h5": Loader(load_h5, (".h5", ".hdf5")),
}


def is_named(spec: str) -> bool:
    """Whether ``spec`` names a dataset torchvision can download (cifar10, cifar100) rather than a path."""
    return _named_key(spec) in CIFAR


def _named_key(spec: str) -> str:
    return str(spec).lower().replace("-", "").replace("_", "")


def load_source(
    spec: str,
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    image_size: int | None = None,
    progress: bool = True,
) -> ImageSet:
    """Load the ``split`` of the dataset named by ``spec`` as uint8 (N, C, H, W) images.

    ``image_size``: resize every image to ``image_size`` x ``image_size`` (None: keep the native size, which all
    images must then share). ``root`` and ``download`` apply to the named datasets (cifar10, cifar100) only.
    """
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or not 0 < image_size <= MAX_IMAGE_SIZE):
        raise ConfigError(f"image_size must be an integer in 1..{MAX_IMAGE_SIZE} or None (native size), "
                          f"got {image_size!r}")
    if not split or os.sep in split or split in (".", ".."):
        raise SourceNotFoundError(f"invalid split {split!r}: use 'train' or 'test'")
    spec = str(spec)
    kind, _, rest = spec.partition(":")
    if kind in LOADERS and rest:
        return _load_path(Path(rest).expanduser(), kind, split, image_size, progress)
    if is_named(spec):
        return load_cifar(_named_key(spec), split, root, download, image_size)

    path = Path(spec).expanduser()
    if not path.exists():
        suffixes = {s for loader in LOADERS.values() for s in loader.suffixes}
        if os.sep in spec or spec.startswith((".", "~")) or path.suffix.lower() in suffixes:
            raise SourceNotFoundError(f"dataset path not found: {path.absolute()}")
        raise SourceNotFoundError(
            f"unknown dataset {spec!r}: not a known name and no such file or folder ({path.absolute()}); "
            + _ACCEPTED_FORMS
        )
    return _load_path(path, None, split, image_size, progress)


def load_test_source(
    spec: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    image_size: int | None = None,
    progress: bool = True,
) -> ImageSet:
    """Test images: the ``test`` split of ``spec``, or the whole of a source that has no splits (a class-root
    folder ``DIR/<class>/``, an .npz/.h5 with ``images``/``labels``), as a user naming test data means it."""
    try:
        return load_source(spec, "test", root, download, image_size, progress)
    except SourceNotFoundError as exc:
        if is_named(spec):
            raise
        try:
            return load_source(spec, WHOLE, root, download, image_size, progress)
        except SourceNotFoundError:
            raise exc from None


def _load_path(path: Path, kind: str | None, split: str, image_size: int | None, progress: bool) -> ImageSet:
    path = path.absolute()
    if not path.exists():
        raise SourceNotFoundError(f"dataset path not found: {path}")
    if kind is None:
        suffix = path.suffix.lower()
        found = [k for k, loader in LOADERS.items() if (loader.is_dir and path.is_dir()) or suffix in loader.suffixes]
        if not found:
            raise SourceNotFoundError(f"{path}: not a folder and not a .npz/.h5/.hdf5 file; " + _ACCEPTED_FORMS)
        kind = found[0]
    loader = LOADERS[kind]
    if loader.is_dir:
        if not path.is_dir():
            raise SourceNotFoundError(f"{path}: not a folder; an image folder is DIR/<class>/<image>")
        cifar = cifar_in_dir(path, split)
        if cifar is not None:
            return load_cifar(cifar[0], split, cifar[1], False, image_size)
    elif not path.is_file():
        raise SourceNotFoundError(f"{path}: not a file")
    return loader.load(path, split, image_size, progress)
