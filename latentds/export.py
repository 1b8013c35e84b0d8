"""Decode a whole .lds into the data formats pipelines already read: an ImageFolder tree, a .npz or an HDF5 file,
WebDataset tar shards, a Hugging Face ``datasets`` folder; preview grids.

Every exporter streams: images are decoded in batches and written as they come, so memory stays at one batch
whatever the file's size. Images keep the file's channel count (grey stays one channel).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from latentds.budget import ResourceLimitError, check_budget
from latentds.dataset import LatentDataset
from latentds.errors import LatentdsError, UsageError
from latentds.format.outputs import check_output
from latentds.format.staging import replace_staged, replace_staged_dir, staging_dir, staging_file
from latentds.preview import PREVIEW_FORMATS, PREVIEW_MAX_PIXELS, preview  # noqa: F401 - its home before
from latentds.progress import progress_bar, shows_bar

EXPORT_FORMATS = ("folder", "npz", "h5", "webdataset", "hf")
DIRECTORY_FORMATS = ("folder", "webdataset", "hf")
#: Written into every exported folder: marks it as latentds' own, so that ``overwrite`` may replace it (and no other).
EXPORT_MARKER = ".latentds-export.json"
#: WebDataset shard limits, as webdataset's ShardWriter (maxcount, maxsize): a shard closes at either.
SHARD_IMAGES, SHARD_BYTES = 100_000, 3_000_000_000


def export_format(out: str | os.PathLike, fmt: str | None = None) -> str:
    """The export format: ``fmt`` when given, else the one implied by the output path's suffix."""
    if fmt is not None:
        if fmt not in EXPORT_FORMATS:
            raise UsageError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
        return fmt
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
            yield pos, pixels, labels.cpu().numpy()


def export(
    path: str | os.PathLike,
    out: str | os.PathLike,
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
    fmt: str | None = None,
    shard_size: int = SHARD_IMAGES,
    shard_bytes: int = SHARD_BYTES,
    shuffle: bool = True,
    seed: int = 0,
) -> Path:
    """Decode every image of ``path`` into ``out`` (format ``fmt``, else from its suffix). Returns the output path.

    ``overwrite``: replace an existing output (atomically: the old file or folder stays until the new one is
    complete, then the two are swapped); a folder is replaced only if an export wrote it (it holds
    ``.latentds-export.json``), never another folder. The output path is checked (``format.outputs``: not the
    input, an existing parent folder, a name that fits, no symbolic link) and the generator's memory estimated
    against the budget (``latentds.budget``) before anything is decoded or written; staging files live in the
    output's folder and are removed on an error, Ctrl-C or SIGTERM (the CLI turns it into an exception).

    ``shuffle`` (default): rows in a random order drawn with ``seed`` (a .lds holds them by class), so that
    sequential readers (WebDataset shards, an .h5 read in slices) see mixed classes; every image keeps the index of
    its .lds row (file names, keys, ``rows``). npz/h5 hold ``images`` (N, H, W, C) uint8, ``labels`` (N,) int64,
    ``rows`` (N,) and ``classes``: the layout `latentds encode` reads back. A folder gets
    ``<class>/<index>.png``. ``webdataset``: a folder of tar shards ``<name>-000000.tar``, each closed at
    ``shard_bytes`` bytes or ``shard_size`` images (webdataset ShardWriter's maxsize and maxcount, and its
    defaults: 3 GB, 100,000), holding ``<index>.png`` and ``<index>.cls`` (the label as text), plus
    ``classes.txt`` (one name per line). ``hf``: a Hugging Face ``datasets`` folder
    (``save_to_disk``) with an ``image`` column (``Image``) and a ``label`` column (``ClassLabel`` with the class
    names), for ``datasets.load_from_disk(out)``; needs ``pip install 'latentds[hf]'``.
    """
    fmt = export_format(out, fmt)
    out = Path(out)
    if fmt == "hf":
        _need_datasets()
    if shard_size < 1 or shard_bytes < 1:
        raise UsageError(f"shard_size and shard_bytes must be positive, got {shard_size} and {shard_bytes}")
    is_dir = fmt in DIRECTORY_FORMATS
    check_output(out, [] if _is_url(path) else [path], force=overwrite, folder=is_dir, marker=EXPORT_MARKER)
    ds = _opened(path, device, batch_size)
    if progress:  # one line before the long part; a terminal also gets the bar
        logging.getLogger(__name__).info(f"export: decoding {len(ds):,} images of {path} into {out} ({fmt}"
                                         f"{', shuffled' if shuffle and fmt != 'folder' else ''})")
    if shuffle:
        ds = ds.subset(np.random.default_rng(seed).permutation(len(ds)))
    if is_dir:  # written into a staging folder, swapped with the output when complete (the old one deleted after)
        tmp = staging_dir(out)
        try:
            if fmt == "folder":
                _export_folder(ds, tmp, batch_size, progress)
            elif fmt == "webdataset":
                _export_webdataset(ds, tmp, out.name, batch_size, progress, (shard_size, shard_bytes))
            else:
                _export_hf(ds, tmp, out, batch_size, progress)
            (tmp / EXPORT_MARKER).write_text(json.dumps({"format": fmt, "samples": len(ds)}) + "\n", encoding="utf-8")
            replace_staged_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out
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


def _is_url(path: str | os.PathLike) -> bool:
    from latentds.format.remote import is_url

    return is_url(path)


def _opened(path: str | os.PathLike, device: str, batch_size: int) -> LatentDataset:
    """The dataset with its generator loaded (memory estimated against the budget first), and one batch of
    decoded uint8 images checked against the budget too: a file too large to decode fails before any output."""
    ds = LatentDataset(path, device=device, normalize=False)
    c, h, w = ds.image_shape
    per_batch = min(batch_size, max(len(ds), 1)) * c * h * w * (4 + 4 + 1)  # float images, their copy, uint8
    check_budget(f"{path}: decoding batches of {batch_size} images", per_batch,
                 f"{batch_size} x {c}x{h}x{w} images per batch", device)
    ds.decode(np.arange(0))  # loads the generator (its own estimate runs before it is built)
    return ds


def _export_npz(ds: LatentDataset, tmp: Path, batch_size: int, progress: bool) -> None:
    """np.savez's layout (one .npy per array in a zip), with ``images.npy`` written batch by batch."""
    import zipfile

    c, h, w = ds.image_shape
    with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
        with zf.open("images.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                    "shape": (len(ds), h, w, c)}
            )
            for _, pixels, _ in iter_uint8(ds, batch_size, progress):
                f.write(np.ascontiguousarray(pixels).tobytes())
        for name, array in (("labels", ds.labels.astype(np.int64)), ("rows", ds.indices),
                            ("classes", np.array(ds.classes))):
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, array, allow_pickle=False)


def _pil(img: np.ndarray):  # noqa: ANN202 - PIL is imported lazily
    """One (H, W, C) uint8 image as a PIL image; one channel becomes greyscale."""
    from PIL import Image

    return Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)


def _png(img: np.ndarray) -> bytes:
    """PNG bytes of one (H, W, C) uint8 image."""
    import io

    buf = io.BytesIO()
    _pil(img).save(buf, format="png")
    return buf.getvalue()


def _export_webdataset(ds: LatentDataset, tmp: Path, stem: str, batch_size: int, progress: bool,
                       limits: tuple[int, int]) -> None:
    import io
    import tarfile

    width = len(str(max(int(ds.indices.max(initial=0)), 0)))
    shard: tarfile.TarFile | None = None
    count = size = shards = 0

    def add(name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0  # reproducible shards
        shard.addfile(info, io.BytesIO(data))  # type: ignore[union-attr]

    try:
        for pos, pixels, labels in iter_uint8(ds, batch_size, progress):
            for row, img, y in zip(ds.indices[pos].tolist(), pixels, labels.tolist()):
                png, cls = _png(img), str(int(y)).encode()
                record = sum(512 + -(-len(b) // 512) * 512 for b in (png, cls))  # tar headers and padded data
                if shard is None or count >= limits[0] or (count and size + record > limits[1]):
                    if shard is not None:
                        shard.close()
                    shard = tarfile.open(tmp / f"{stem}-{shards:06d}.tar", "w", format=tarfile.USTAR_FORMAT)
                    count, size, shards = 0, 0, shards + 1
                key = f"{row:0{width}d}"
                add(f"{key}.png", png)
                add(f"{key}.cls", cls)
                count, size = count + 1, size + record
    finally:
        if shard is not None:
            shard.close()
    (tmp / "classes.txt").write_text("".join(f"{name}\n" for name in ds.classes), encoding="utf-8")


def _need_datasets() -> None:
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise UsageError("exporting to Hugging Face datasets needs the datasets package: "
                         "pip install 'latentds[hf]'") from None


def _export_hf(ds: LatentDataset, tmp: Path, out: Path, batch_size: int, progress: bool) -> None:
    import datasets

    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(ds.classes))}
    )

    def rows(path: str, seed: int) -> Iterator[dict]:  # arguments only make the generator's cache key unique
        for _, pixels, labels in iter_uint8(ds, batch_size, progress):
            for img, y in zip(pixels, labels.tolist()):
                yield {"image": {"bytes": _png(img), "path": None}, "label": int(y)}

    from datasets.utils import logging as hf_logging

    quiet = not shows_bar(progress) and hf_logging.is_progress_bar_enabled()  # its bars, like ours: terminals only
    if quiet:
        hf_logging.disable_progress_bar()
    cache = staging_dir(out)  # the Arrow files are written here first: beside the output, swept like any staging
    try:
        built = datasets.Dataset.from_generator(
            rows, features=features, cache_dir=str(cache), gen_kwargs={"path": str(ds.path), "seed": 0},
            keep_in_memory=False,
        )
        built.save_to_disk(str(tmp))
        del built
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if quiet:
            hf_logging.enable_progress_bar()


def _export_h5(ds: LatentDataset, tmp: Path, batch_size: int, progress: bool) -> None:
    import h5py

    c, h, w = ds.image_shape
    with h5py.File(tmp, "w") as f:
        images = f.create_dataset(
            "images", shape=(len(ds), h, w, c), dtype="uint8", chunks=(min(max(len(ds), 1), 256), h, w, c)
        )
        for pos, pixels, _ in iter_uint8(ds, batch_size, progress):
            images[pos[0] : pos[-1] + 1] = pixels
        f.create_dataset("labels", data=ds.labels.astype(np.int64))
        f.create_dataset("rows", data=ds.indices)  # the .lds row of each image
        f.create_dataset("classes", data=np.array(ds.classes, dtype=h5py.string_dtype()))
        f.attrs["source"] = str(ds.path)


def _export_folder(ds: LatentDataset, tmp: Path, batch_size: int, progress: bool) -> None:
    folders = _class_folders(ds.classes)
    for folder in folders:
        (tmp / folder).mkdir()
    width = len(str(max(len(ds) - 1, 0)))
    for pos, pixels, labels in iter_uint8(ds, batch_size, progress):
        for p, img, y in zip(pos, pixels, labels):
            _pil(img).save(tmp / folders[int(y)] / f"{int(ds.indices[p]):0{width}d}.png")


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
