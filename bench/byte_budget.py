"""What fits in a byte budget: real images as one PNG or JPEG file each, or tiled into JPEG mosaics, taken in an
order whose every prefix is class-balanced; each returns the kept indices, the images a user would decode, and
the bytes spent (one label byte per image). Used by bench/per_byte.py."""

from __future__ import annotations

import io
import math

import numpy as np

MOSAIC = 40  # images per mosaic side: 1280 x 1280 pixels


def encode_png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def class_balanced_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """Every image once, in an order whose every prefix is class-balanced (round robin over shuffled classes)."""
    rng = np.random.default_rng(seed)
    per = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    return np.stack(per, axis=1).reshape(-1)  # (n_per_class * classes,): class 0, 1, ..., 9, 0, 1, ...


def fill_files(images: np.ndarray, order: np.ndarray, budget: int, enc) -> tuple[np.ndarray, np.ndarray, int]:
    """Encode images in ``order`` one file each until the next would pass ``budget`` bytes (a label byte each)."""
    kept, decoded, total = [], [], 0
    for i in order:
        data = enc(images[i])
        if total + len(data) + 1 > budget:
            break
        kept.append(i)
        decoded.append(decode(data))
        total += len(data) + 1
    if not kept:
        return np.asarray([], dtype=np.int64), np.zeros((0, *images.shape[1:]), np.uint8), 0
    return np.asarray(kept), np.stack(decoded), total


def mosaic_bytes(images: np.ndarray, quality: int) -> tuple[list[bytes], list[int]]:
    """Tile images (n, 32, 32, 3) into MOSAIC x MOSAIC JPEGs (the last one partly black); bytes and counts."""
    out, counts, per = [], [], MOSAIC * MOSAIC
    for lo in range(0, len(images), per):
        part = images[lo:lo + per]
        canvas = np.zeros((per, *images.shape[1:]), dtype=np.uint8)
        canvas[: len(part)] = part
        side = int(math.ceil(math.sqrt(len(part))))  # a square just large enough: no bytes for empty rows
        grid = canvas[: side * side].reshape(side, side, 32, 32, 3).transpose(0, 2, 1, 3, 4).reshape(side * 32, side * 32, 3)
        out.append(encode_jpeg(grid, quality))
        counts.append(len(part))
    return out, counts


def unmosaic(blobs: list[bytes], counts: list[int]) -> np.ndarray:
    tiles = []
    for data, n in zip(blobs, counts):
        grid = decode(data)
        side = grid.shape[0] // 32
        tiles.append(grid.reshape(side, 32, side, 32, 3).transpose(0, 2, 1, 3, 4).reshape(-1, 32, 32, 3)[:n])
    return np.concatenate(tiles)


def fill_mosaic(images: np.ndarray, order: np.ndarray, budget: int, quality: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The largest class-balanced prefix of ``order`` whose mosaics (plus a label byte each) fit ``budget``."""
    lo, hi, best = 10, len(order), None
    while lo <= hi:  # bytes grow with the count: bisect on it, in steps of whole classes
        mid = (lo + hi) // 20 * 10
        blobs, counts = mosaic_bytes(images[order[:mid]], quality)
        total = sum(len(b) for b in blobs) + mid
        if total <= budget:
            best, lo = (mid, blobs, counts, total), mid + 10
        else:
            hi = mid - 10
    if best is None:
        return np.asarray([], dtype=np.int64), np.zeros((0, 32, 32, 3), np.uint8), 0
    n, blobs, counts, total = best
    return order[:n], unmosaic(blobs, counts), total


def bytes_per_image(images: np.ndarray, file_qualities, mosaic_qualities) -> dict[str, float]:
    """Mean bytes per image of each way to ship ``images`` (n, 32, 32, 3), a label byte each: one PNG or JPEG file
    per image, or JPEG mosaics (``images`` should fill whole mosaics for a fair figure)."""
    n = len(images)
    out = {"png_file": sum(len(encode_png(im)) for im in images) / n + 1}
    for q in file_qualities:
        out[f"jpeg_file_q{q}"] = sum(len(encode_jpeg(im, q)) for im in images) / n + 1
    for q in mosaic_qualities:
        out[f"jpeg_mosaic_q{q}"] = sum(len(b) for b in mosaic_bytes(images, q)[0]) / n + 1
    out["raw_uint8"] = float(images[0].size + 1)
    return {k: round(v, 1) for k, v in out.items()}
