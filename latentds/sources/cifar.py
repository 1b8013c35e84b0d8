"""The named datasets torchvision can download: CIFAR-10 and CIFAR-100 (python version)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from latentds.errors import SourceNotFoundError
from latentds.sources.imageset import ImageSet, to_nchw_uint8

__all__ = ["CIFAR", "cifar_in_dir", "default_root", "load_cifar"]

CIFAR = {
    # name: (torchvision class name, extracted folder, pretty name)
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "CIFAR-10"),
    "cifar100": ("CIFAR100", "cifar-100-python", "CIFAR-100"),
}


def default_root() -> Path:
    """Where named datasets live by default: ``$XDG_CACHE_HOME/latentds/datasets`` or ``~/.cache/latentds/datasets``."""
    from latentds.cachedir import cache_home

    return cache_home() / "datasets"


def cifar_in_dir(path: Path, split: str) -> tuple[str, Path] | None:
    """(name, root) if ``path`` is an extracted CIFAR folder (or holds one and no split/class folders)."""
    for key, (_, folder, _) in CIFAR.items():
        if path.name == folder and (path / ("batches.meta" if key == "cifar10" else "meta")).is_file():
            return key, path.parent
        if (path / folder).is_dir() and not (path / split).is_dir():
            others = [e for e in os.scandir(path) if e.is_dir() and e.name != folder and not e.name.startswith(".")]
            if not others:
                return key, path
    return None


def load_cifar(
    key: str, split: str, root: str | os.PathLike[str] | None, download: bool, image_size: int | None
) -> ImageSet:
    """CIFAR-10/100 through torchvision (32x32 RGB; resized if ``image_size`` asks)."""
    import torchvision.datasets as tvd

    cls_name, folder, pretty = CIFAR[key]
    if split not in ("train", "test"):  # (also WHOLE: CIFAR always has splits)
        raise SourceNotFoundError(f"{pretty} has splits 'train' and 'test', not {split!r}")
    root_path = Path(root).expanduser().absolute() if root is not None else default_root()
    if root_path.name == folder:  # pointed straight at the extracted folder
        root_path = root_path.parent
    expected = root_path / folder
    fetch = "" if download else "or allow downloading (download=True; the CLI downloads unless --no-download) when online, "
    help_text = (
        f"put the extracted official archive (the python version) at {expected}, {fetch}"
        f"or pass --root DIR where DIR contains {folder}/. "
        "An image folder (DIR/train/<class>/*.png, DIR/test/<class>/*.png) works as well."
    )
    dataset_cls = getattr(tvd, cls_name)
    train = split == "train"
    if not expected.is_dir():
        if not download:
            raise SourceNotFoundError(f"{pretty} not found at {expected}: {help_text}")
        try:
            dataset = dataset_cls(str(root_path), train=train, download=True)
        except Exception as exc:  # no network, proxy, disk full, bad checksum: all end the same way for the user
            raise SourceNotFoundError(
                f"{pretty} is not at {expected} and downloading it failed ({type(exc).__name__}: {exc}); {help_text}"
            ) from exc
    else:
        try:
            dataset = dataset_cls(str(root_path), train=train, download=False)
        except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
            raise SourceNotFoundError(
                f"{pretty} at {expected} is incomplete or corrupted (md5 check failed: {exc}); delete it and "
                f"{help_text}"
            ) from exc

    data = np.asarray(dataset.data)  # (N, 32, 32, 3) uint8
    files = [f for f, _ in (dataset.train_list if train else dataset.test_list)] + [dataset.meta["filename"]]
    source_bytes = sum((expected / f).stat().st_size for f in files if (expected / f).is_file())
    images = to_nchw_uint8(data, str(expected), image_size)
    labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)
    return ImageSet.from_tensors(images, labels, list(dataset.classes), key, source_bytes)
