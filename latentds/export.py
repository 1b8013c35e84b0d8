"""Decode a whole .lds into ordinary image data: an ImageFolder tree, a .npz or an HDF5 file; preview grids."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from latentds.common import progress_bar
from latentds.dataset import LatentDataset
from latentds.errors import LatentdsError, UsageError
from latentds.format.staging import replace_staged, staging_dir, staging_file

EXPORT_FORMATS = ("folder", "npz", "h5")


def export_format(out: str | os.PathLike) -> str:
    """The export format implied by an output path's suffix."""
    suffix = Path(out).suffix.lower()
    if suffix == ".npz":
        return "npz"
    if suffix in (".h5", ".hdf5"):
        return "h5"
    if suffix:
        raise LatentdsError(
            f"{out}: unknown export suffix {suffix!r}; use .npz, .h5/.hdf5, or a directory name without a suffix"
        )
    return "folder"


def iter_uint8(
    ds: LatentDataset, batch_size: int = 256, progress: bool = True
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (positions, images (B, H, W, C) uint8, labels (B,)) over the dataset, in order."""
    n = len(ds)
    with progress_bar(None, progress, total=n, desc="decode", unit="img") as bar:
        for lo in range(0, n, batch_size):
            pos = np.arange(lo, min(lo + batch_size, n))
            images, labels = ds.decode(pos)  # [0, 1]
            pixels = (images * 255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            bar.update(len(pos))
            yield pos, pixels, labels.numpy()


def export(
    path: str | os.PathLike,
    out: str | os.PathLike,
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Decode every image of ``path`` into ``out`` (format from its suffix). Returns the output path.

    ``overwrite``: replace an existing .npz/.h5 (atomically: the old file stays until the new one is complete);
    a folder output must be absent or empty either way.

    npz/h5 hold ``images`` (N, H, W, C) uint8, ``labels`` (N,) int64 and ``classes``: the layout
    `latentds encode` reads back. A folder gets ``<class>/<index>.png``.
    """
    fmt = export_format(out)
    out = Path(out)
    ds = LatentDataset(path, device=device, normalize=False)
    empty_dir = fmt == "folder" and out.is_dir() and not any(out.iterdir())
    if out.exists() and not empty_dir and not (overwrite and fmt != "folder" and out.is_file()):
        raise UsageError(f"{out}: already exists; " + ("remove it (a folder is never replaced)" if fmt == "folder"
                                                       else "pass --force (overwrite=True) to replace it") +
                         ", or choose another output path")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "folder":
        return _export_folder(ds, out, batch_size, progress)
    fd, tmp = staging_file(out)
    os.close(fd)
    try:
        if fmt == "npz":
            _export_npz(ds, tmp, batch_size, progress)
        else:
            _export_h5(ds, tmp, batch_size, progress)
        replace_staged(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _export_npz(ds: LatentDataset, tmp: Path, batch_size: int, progress: bool) -> None:
    c, h, w = ds.image_shape
    images = np.empty((len(ds), h, w, c), dtype=np.uint8)
    for pos, pixels, _ in iter_uint8(ds, batch_size, progress):
        images[pos] = pixels
    with open(tmp, "wb") as f:
        np.savez(f, images=images, labels=ds.targets.astype(np.int64), classes=np.array(ds.classes))


def _export_h5(ds: LatentDataset, tmp: Path, batch_size: int, progress: bool) -> None:
    import h5py

    c, h, w = ds.image_shape
    with h5py.File(tmp, "w") as f:
        images = f.create_dataset(
            "images", shape=(len(ds), h, w, c), dtype="uint8", chunks=(min(max(len(ds), 1), 256), h, w, c)
        )
        for pos, pixels, _ in iter_uint8(ds, batch_size, progress):
            images[pos[0] : pos[-1] + 1] = pixels
        f.create_dataset("labels", data=ds.targets.astype(np.int64))
        f.create_dataset("classes", data=np.array(ds.classes, dtype=h5py.string_dtype()))
        f.attrs["source"] = str(ds.path)


def _export_folder(ds: LatentDataset, out: Path, batch_size: int, progress: bool) -> Path:
    from PIL import Image

    tmp = staging_dir(out)
    try:
        folders = _class_folders(ds.classes)
        for folder in folders:
            (tmp / folder).mkdir()
        width = len(str(max(len(ds) - 1, 0)))
        for pos, pixels, labels in iter_uint8(ds, batch_size, progress):
            for p, img, y in zip(pos, pixels, labels):
                Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(
                    tmp / folders[int(y)] / f"{int(p):0{width}d}.png"
                )
        if out.exists():
            out.rmdir()  # empty (checked by the caller)
        replace_staged(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _class_folders(classes: list[str]) -> list[str]:
    """One distinct, file-system-safe folder name per class (names that clean up alike get ``~index``)."""
    out: list[str] = []
    seen: set[str] = set()
    for i, name in enumerate(classes):
        folder = _safe_dirname(name)[:100]
        if folder.lower() in seen:  # also case-insensitive file systems
            folder = f"{folder}~{i}"
        seen.add(folder.lower())
        out.append(folder)
    return out


def _safe_dirname(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "-_. " else "_" for ch in name).strip(" .")
    return cleaned or "_"


def preview(
    path: str | os.PathLike,
    out: str | os.PathLike,
    per_class: int = 10,
    seed: int | None = 0,
    device: str = "cpu",
) -> Path:
    """Save a PNG grid: one row per class, ``per_class`` decoded samples each (random with ``seed``, else first)."""
    from torchvision.utils import save_image

    ds = LatentDataset(path, device=device, normalize=False)
    rng = np.random.default_rng(seed)
    picked = []
    for c in range(len(ds.classes)):
        members = np.flatnonzero(ds.targets == c)
        if seed is not None:
            members = rng.permutation(members)
        row = list(members[:per_class])
        picked.append(row)
    if not any(picked):
        raise LatentdsError(f"{path}: holds no samples to preview")
    positions = [p for row in picked for p in row]
    images, _ = ds.decode(positions)
    grid = torch.ones((len(picked) * per_class, *images.shape[1:]), device=images.device)  # white where a class is short
    k = 0
    for r, row in enumerate(picked):
        for j in range(len(row)):
            grid[r * per_class + j] = images[k]
            k += 1
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, out, nrow=per_class, padding=2, pad_value=1.0)
    return out
