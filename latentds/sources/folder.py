"""Image-folder sources: ``DIR/<class>/<image>`` or ``DIR/<split>/<class>/<image>``, decoded at their true
channel count (grayscale stays one channel unless the folder mixes grayscale and colour) and size."""

from __future__ import annotations

import functools
import io
import os
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from latentds.errors import (
    EmptyClassError,
    SourceNotFoundError,
    UnreadableImageError,
    UnsupportedImageError,
)
from latentds.progress import progress_bar
from latentds.sources.imageset import WHOLE, ImageSet, resize_images

__all__ = ["IMAGE_EXTENSIONS", "load_image_folder"]

# torchvision's ImageFolder extensions (matched case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# Decoded by torchvision.io (libjpeg-turbo / libpng, several times faster than PIL on small files and
# pixel-identical to PIL's convert("RGB"/"L") for 8-bit files); everything else, and anything it rejects, goes to PIL.
_FAST_EXTENSIONS = (".jpg", ".jpeg", ".png")
_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")  # PIL modes decoded as one channel
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # byte 25, the IHDR colour type, is 3 for palette images
_READ_CHUNK = 256  # files per read task; reads run ahead of decoding in a small thread pool
_READ_WORKERS = 4


def load_image_folder(path: Path, split: str, image_size: int | None, progress: bool) -> ImageSet:
    """The ``split`` of an image folder; every image at ``image_size`` (resized) or all at one native size."""
    split_dir = path / split
    if split == WHOLE:
        found = [s for s in ("train", "test", "val") if (path / s).is_dir()]
        if found:
            raise SourceNotFoundError(f"{path} has split folders ({', '.join(found)}/); name the split to use")
        folder = path
    elif split_dir.is_dir():
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

    images: torch.Tensor | None = None  # (N, C, H, W), allocated from the first image
    first = ""
    source_bytes = 0
    bar = progress_bar(None, progress, total=len(files), desc=f"decoding {folder.name or folder}", unit="img",
                       leave=False, mininterval=0.5)
    with warnings.catch_warnings():
        # torchvision 0.29 warns on every decode call that its decoders are deprecated: noise for users
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")
        try:
            for i, (file, data) in enumerate(_read_ahead(files)):
                source_bytes += len(data)
                img = _decode(file, data)  # (1 or 3, H, W)
                if image_size is not None:
                    img = resize_images(img[None], image_size)[0]
                if images is None:
                    images, first = torch.empty((len(files), *img.shape), dtype=torch.uint8), file
                elif img.shape[1:] != images.shape[2:]:
                    raise UnsupportedImageError(
                        f"{file}: image is {img.shape[2]}x{img.shape[1]} (WxH) but {first} is "
                        f"{images.shape[3]}x{images.shape[2]}; the images of a dataset must share one size: pass "
                        f"--image-size N (image_size=N) to resize every image to NxN"
                    )
                if img.shape[0] > images.shape[1]:  # the first colour image after grayscale ones: widen all
                    images = images.expand(-1, 3, -1, -1).contiguous()
                images[i] = img  # a grayscale image in a colour set broadcasts to 3 equal channels
                bar.update(1)
        finally:
            bar.close()
    assert images is not None  # every class holds at least one file
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
    """Decode one image file to uint8 (1, H, W) grayscale or (3, H, W) RGB, as PIL's convert("L"/"RGB") would."""
    if not data:
        raise UnreadableImageError(f"{file}: empty file, not an image")
    decode = _fast_decoder() if file.lower().endswith(_FAST_EXTENSIONS) else None
    if data[:8] == _PNG_SIGNATURE and len(data) > 25 and data[25] == 3:
        decode = None  # a palette PNG: torchvision would return the palette indices as one channel
    if decode is not None:
        try:
            img = decode(torch.frombuffer(data, dtype=torch.uint8))  # (C, H, W), C in 1..4
            if img.dtype == torch.uint8 and img.ndim == 3 and img.shape[0] in (1, 2, 3, 4):
                return img[:1] if img.shape[0] <= 2 else img[:3]  # drop alpha
        except RuntimeError:
            pass  # let PIL try (and word the error)
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            grey = im.mode in _GREY_MODES
            arr = np.array(im.convert("L" if grey else "RGB"))  # (H, W) or (H, W, 3), writable
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError...
        raise UnreadableImageError(
            f"{file}: cannot decode image ({type(exc).__name__}: {exc}); delete or replace the file"
        ) from exc
    return torch.from_numpy(arr)[None] if grey else torch.from_numpy(arr).permute(2, 0, 1)


@functools.lru_cache(maxsize=1)
def _fast_decoder():
    """torchvision.io's decode_image (channels as stored), or None where it is gone (0.29 deprecated it)."""
    try:
        from torchvision.io import ImageReadMode, decode_image
    except ImportError:  # pragma: no cover
        return None
    return functools.partial(decode_image, mode=ImageReadMode.UNCHANGED)
