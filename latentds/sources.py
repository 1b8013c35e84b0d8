"""Dataset sources: turn what a user names (``cifar10``, an image folder, an .npz or .h5 file) into an ImageSet.

An :class:`ImageSet` is the whole split in memory as uint8 ``(N, 3, H, W)`` images plus int64 labels, class
names and a content fingerprint. :func:`load_source` is the one entry point; every failure caused by the input
raises a :class:`~latentds.errors.SourceError` subclass whose message names the path and what to do.

Spec forms accepted by :func:`load_source`:

- ``cifar10`` / ``cifar100``: torchvision's CIFAR datasets under ``root`` (default :func:`default_root`).
- a directory: ``DIR/<split>/<class>/<image>`` if ``DIR/<split>`` exists, else ``DIR/<class>/<image>``.
- ``*.npz``: arrays ``images`` + ``labels`` (optional ``classes``); ``test_images``/``x_test`` etc. for other splits.
- ``*.h5`` / ``*.hdf5``: the same names as datasets, or ``<split>/images`` + ``<split>/labels`` groups.

A path may be prefixed ``imagefolder:``, ``npz:`` or ``h5:`` to force its kind (and to reach a folder that is
named like a built-in dataset).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import warnings
import zipfile
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latentds.errors import (
    EmptyClassError,
    SourceMismatchError,
    SourceNotFoundError,
    UnreadableImageError,
    UnsupportedImageError,
)

__all__ = ["ImageSet", "compute_fingerprint", "default_root", "is_named", "load_source", "IMAGE_EXTENSIONS"]

# torchvision's ImageFolder extensions (matched case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# Decoded by torchvision.io (libjpeg-turbo / libpng, several times faster than PIL on small files and
# pixel-identical to PIL's convert("RGB") for 8-bit files); everything else, and anything it rejects, goes to PIL.
_FAST_EXTENSIONS = (".jpg", ".jpeg", ".png")

_CIFAR = {
    # name: (torchvision class name, extracted folder, pretty name)
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "CIFAR-10"),
    "cifar100": ("CIFAR100", "cifar-100-python", "CIFAR-100"),
}
_ACCEPTED_FORMS = (
    "accepted forms: 'cifar10' or 'cifar100' (with --root/--download); an image folder DIR laid out as "
    "DIR/<class>/<image> or DIR/train/<class>/<image> + DIR/test/<class>/<image>; a .npz file with arrays "
    "'images' and 'labels'; a .h5/.hdf5 file with datasets 'images' and 'labels'"
)
_READ_CHUNK = 256  # files per read task; reads run ahead of decoding in a small thread pool
_READ_WORKERS = 4


# --------------------------------------------------------------------------------------------------------
@dataclass(eq=False, repr=False)
class ImageSet:
    """One split of a labelled image dataset, fully in memory."""

    images: torch.Tensor  # (N, 3, H, W) uint8, contiguous, on the CPU
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
        """Build an ImageSet from uint8 (N, 3, H, W) images and int64 labels, computing its fingerprint."""
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
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise UnsupportedImageError(
            f"{name}: images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}"
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


# --------------------------------------------------------------------------------------------------------
def default_root() -> Path:
    """Where named datasets live by default: ``$XDG_CACHE_HOME/latentds/datasets`` or ``~/.cache/latentds/datasets``."""
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache) if cache and os.path.isabs(cache) else Path.home() / ".cache"
    return base / "latentds" / "datasets"


def is_named(spec: str) -> bool:
    """Whether ``spec`` names a dataset torchvision can download (cifar10, cifar100) rather than a path."""
    return str(spec).lower().replace("-", "").replace("_", "") in _CIFAR


def load_source(
    spec: str,
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    image_size: int = 32,
    progress: bool = True,
) -> ImageSet:
    """Load the ``split`` of the dataset named by ``spec`` as uint8 images of ``image_size`` x ``image_size``.

    ``root`` and ``download`` apply to the named datasets (cifar10, cifar100) only.
    """
    if not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if not split or os.sep in split or split in (".", ".."):
        raise SourceNotFoundError(f"invalid split {split!r}: use 'train' or 'test'")
    spec = str(spec)
    kind, _, rest = spec.partition(":")
    if kind in ("imagefolder", "npz", "h5") and rest:
        return _load_path(Path(rest).expanduser(), kind, split, image_size, progress)

    if is_named(spec):
        return _load_cifar(spec.lower().replace("-", "").replace("_", ""), split, root, download, image_size)

    path = Path(spec).expanduser()
    if not path.exists():
        if os.sep in spec or spec.startswith((".", "~")) or path.suffix.lower() in (".npz", ".h5", ".hdf5"):
            raise SourceNotFoundError(f"dataset path not found: {path.absolute()}")
        raise SourceNotFoundError(
            f"unknown dataset {spec!r}: not a known name and no such file or folder ({path.absolute()}); "
            + _ACCEPTED_FORMS
        )
    return _load_path(path, None, split, image_size, progress)


def _load_path(path: Path, kind: str | None, split: str, image_size: int, progress: bool) -> ImageSet:
    path = path.absolute()
    if not path.exists():
        raise SourceNotFoundError(f"dataset path not found: {path}")
    suffix = path.suffix.lower()
    if kind is None:
        if path.is_dir():
            kind = "imagefolder"
        elif suffix == ".npz":
            kind = "npz"
        elif suffix in (".h5", ".hdf5"):
            kind = "h5"
        else:
            raise SourceNotFoundError(f"{path}: not a folder and not a .npz/.h5/.hdf5 file; " + _ACCEPTED_FORMS)
    if kind == "imagefolder":
        if not path.is_dir():
            raise SourceNotFoundError(f"{path}: not a folder; an image folder is DIR/<class>/<image>")
        cifar = _cifar_in_dir(path, split)
        if cifar is not None:
            return _load_cifar(cifar[0], split, cifar[1], False, image_size)
        return _load_image_folder(path, split, image_size, progress)
    if not path.is_file():
        raise SourceNotFoundError(f"{path}: not a file")
    if kind == "npz":
        return _load_npz(path, split, image_size)
    return _load_h5(path, split, image_size)


# --- CIFAR (torchvision) ---------------------------------------------------------------------------------
def _cifar_in_dir(path: Path, split: str) -> tuple[str, Path] | None:
    """(name, root) if ``path`` is an extracted CIFAR folder (or holds one and no split/class folders)."""
    for key, (_, folder, _) in _CIFAR.items():
        if path.name == folder and (path / ("batches.meta" if key == "cifar10" else "meta")).is_file():
            return key, path.parent
        if (path / folder).is_dir() and not (path / split).is_dir():
            others = [e for e in os.scandir(path) if e.is_dir() and e.name != folder and not e.name.startswith(".")]
            if not others:
                return key, path
    return None


def _load_cifar(key: str, split: str, root: str | os.PathLike[str] | None, download: bool, image_size: int) -> ImageSet:
    import torchvision.datasets as tvd

    cls_name, folder, pretty = _CIFAR[key]
    if split not in ("train", "test"):
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
    images = _to_nchw_uint8(data, str(expected), image_size)
    labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)
    return ImageSet.from_tensors(images, labels, list(dataset.classes), key, source_bytes)


# --- image folders ---------------------------------------------------------------------------------------
def _load_image_folder(path: Path, split: str, image_size: int, progress: bool) -> ImageSet:
    split_dir = path / split
    if split_dir.is_dir():
        folder = split_dir
    elif split == "train":
        if (path / "test").is_dir() or (path / "val").is_dir():
            raise SourceNotFoundError(
                f"{path} has split folders (test/ or val/) but no {split_dir}; put the training images in "
                f"{split_dir}/<class>/"
            )
        folder = path
    else:
        raise SourceNotFoundError(
            f"no {split!r} split in {path}: expected {split_dir}/<class>/<image> (for split 'train' the folder "
            "itself may be the class root)"
        )

    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise EmptyClassError(
            f"{folder}: no class folders; an image folder is laid out as {folder}/<class>/<image> "
            f"with images ending in {', '.join(IMAGE_EXTENSIONS)}"
        )
    files: list[str] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        found = _scan_class(folder / name)
        if not found:
            raise EmptyClassError(
                f"class folder {folder / name} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)}); "
                "add images or remove the folder"
            )
        files.extend(found)
        labels.extend([index] * len(found))

    images = torch.empty((len(files), 3, image_size, image_size), dtype=torch.uint8)  # (N, 3, S, S)
    source_bytes = 0
    bar = _progress_bar(len(files), f"decoding {folder.name or folder}", progress)
    with warnings.catch_warnings():
        # torchvision 0.29 warns on every decode call that its decoders are deprecated: noise for users
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")
        try:
            for i, (file, data) in enumerate(_read_ahead(files)):
                source_bytes += len(data)
                img = _decode(file, data)  # (3, H, W)
                if img.shape[1] != image_size or img.shape[2] != image_size:
                    raise UnsupportedImageError(
                        f"{file}: image is {img.shape[2]}x{img.shape[1]} (WxH) but {image_size}x{image_size} is "
                        f"required; resize the images to {image_size}x{image_size} first (or pass image_size)"
                    )
                images[i] = img
                bar.update(1)
        finally:
            bar.close()
    labels_t = torch.tensor(labels, dtype=torch.int64)
    return ImageSet.from_tensors(images, labels_t, classes, f"imagefolder:{folder}", source_bytes)


def _scan_class(class_dir: Path) -> list[str]:
    """Image files under ``class_dir`` (recursively, like ImageFolder), sorted, skipping hidden files."""
    found = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in sorted(filenames):
            # hidden files include macOS "._x.jpg" resource forks, which are not images
            if not fname.startswith(".") and fname.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.join(dirpath, fname))
    return found


def _read_file(file: str) -> tuple[str, bytearray]:
    try:
        with open(file, "rb") as fh:
            return file, bytearray(fh.read())
    except OSError as exc:
        raise UnreadableImageError(f"{file}: cannot read file ({exc.strerror or exc})") from exc


def _read_chunk(files: Sequence[str]) -> list[tuple[str, bytearray]]:
    return [_read_file(f) for f in files]


def _read_ahead(files: list[str]) -> Iterator[tuple[str, bytearray]]:
    """Yield (path, bytes) in order; reads run a few chunks ahead in threads so I/O overlaps decoding."""
    chunks = iter([files[i : i + _READ_CHUNK] for i in range(0, len(files), _READ_CHUNK)])
    with ThreadPoolExecutor(_READ_WORKERS) as pool:
        pending = deque(pool.submit(_read_chunk, c) for _, c in zip(range(2 * _READ_WORKERS), chunks))
        try:
            while pending:
                done = pending.popleft().result()
                nxt = next(chunks, None)
                if nxt is not None:
                    pending.append(pool.submit(_read_chunk, nxt))
                yield from done
        finally:
            for fut in pending:
                fut.cancel()


def _decode(file: str, data: bytearray) -> torch.Tensor:
    """Decode one image file to (3, H, W) uint8 RGB, as PIL's ``convert("RGB")`` would."""
    if not data:
        raise UnreadableImageError(f"{file}: empty file, not an image")
    decode = _fast_decoder() if file.lower().endswith(_FAST_EXTENSIONS) else None
    if decode is not None:
        try:
            img = decode(torch.frombuffer(data, dtype=torch.uint8))
            if img.dtype == torch.uint8 and img.ndim == 3 and img.shape[0] == 3:
                return img
        except RuntimeError:
            pass  # let PIL try (and word the error)
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = np.array(im.convert("RGB"))  # (H, W, 3), writable for torch.from_numpy
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError...
        raise UnreadableImageError(
            f"{file}: cannot decode image ({type(exc).__name__}: {exc}); delete or replace the file"
        ) from exc
    return torch.from_numpy(rgb).permute(2, 0, 1)


@functools.lru_cache(maxsize=1)
def _fast_decoder():
    """torchvision.io's decode_image (RGB mode), or None where it is gone (0.29 deprecated it for torchcodec)."""
    try:
        from torchvision.io import ImageReadMode, decode_image
    except ImportError:  # pragma: no cover
        return None
    return functools.partial(decode_image, mode=ImageReadMode.RGB)


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False, mininterval=0.5)


# --- arrays (.npz, .h5) ----------------------------------------------------------------------------------
def _array_keys(split: str) -> list[tuple[str, str]]:
    """Candidate (images, labels) names for ``split``, most specific first."""
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


def _load_npz(path: Path, split: str, image_size: int) -> ImageSet:
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


def _load_h5(path: Path, split: str, image_size: int) -> ImageSet:
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
    image_size: int,
    source_bytes: int,
) -> ImageSet:
    images = _to_nchw_uint8(np.asarray(raw_images), where, image_size)
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


def _to_nchw_uint8(arr: np.ndarray, where: str, image_size: int) -> torch.Tensor:
    """(N,H,W), (N,H,W,C) or (N,C,H,W) with C in {1, 3}; uint8, integer 0..255 or float 0..1 -> (N, 3, H, W) uint8."""
    if arr.ndim == 3:
        arr = arr[:, None]  # grayscale (N, H, W) -> (N, 1, H, W)
    elif arr.ndim == 4:
        channels_first = arr.shape[1] in (1, 3)
        channels_last = arr.shape[3] in (1, 3)
        if channels_first and channels_last:  # e.g. (N, 3, 32, 3): go by which reading gives square image_size
            channels_last = arr.shape[1] == arr.shape[2] == image_size
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
    n, c, h, w = arr.shape
    if (h, w) != (image_size, image_size):
        raise UnsupportedImageError(
            f"{where}: images are {w}x{h} (WxH) but {image_size}x{image_size} is required; resize them to "
            f"{image_size}x{image_size} first (or pass image_size)"
        )
    arr = _to_uint8(arr, where)
    images = torch.from_numpy(np.ascontiguousarray(arr))
    if c == 1:
        images = images.expand(n, 3, h, w)
    return images.contiguous()


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
