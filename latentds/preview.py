"""``latentds preview``: a grid of decoded samples, one row per class, each row labelled with its class name.

The grid is drawn with PIL: tiles of ``per_class`` images (scaled 1x, 2x or 4x with nearest-neighbour, so a 32x32
image stays sharp) separated by 2-pixel white lines, and a left margin holding the class names. The path, the
grid's size in pixels and its memory are checked before anything is decoded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from latentds.budget import ResourceLimitError, check_budget
from latentds.dataset import LatentDataset
from latentds.errors import LatentdsError, UsageError
from latentds.format.outputs import check_output
from latentds.format.remote import is_url
from latentds.format.render import safe
from latentds.format.staging import replace_staged, staging_file

__all__ = ["PREVIEW_FORMATS", "PREVIEW_MAX_PIXELS", "PREVIEW_SCALES", "preview"]

PREVIEW_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
PREVIEW_MAX_PIXELS = 89_478_485  # PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS): a grid past it is no preview
PREVIEW_SCALES = (1, 2, 4)
PAD = 2  # white pixels between tiles
LABEL_CHARS = 16  # class names are cut to this many characters in the margin


def preview(
    path: str | os.PathLike,
    out: str | os.PathLike,
    per_class: int = 10,
    seed: int | None = 0,
    device: str = "cpu",
    overwrite: bool = False,
    scale: int = 1,
    names: bool = True,
) -> Path:
    """Save a PNG (or JPEG) grid: one row per class, ``per_class`` decoded samples each (random with ``seed``, else
    first), each image shown ``scale`` times its size (1, 2 or 4), each row labelled with its class name (``names``).
    An existing ``out`` is replaced (atomically) only with ``overwrite``."""
    out = check_output(out, [] if is_url(path) else [path], force=overwrite, suffixes=tuple(PREVIEW_FORMATS))
    if per_class < 1:
        raise UsageError(f"per_class must be a positive number of images, got {per_class}")
    if scale not in PREVIEW_SCALES:
        raise UsageError(f"scale must be one of {', '.join(map(str, PREVIEW_SCALES))}, got {scale}")
    ds = LatentDataset(path, device=device, normalize=False)
    c, h, w = ds.image_shape
    k = len(ds.classes)
    margin = (6 * LABEL_CHARS + 2 * PAD) if names else 0  # the default bitmap font: 6 pixels a character
    width, height = margin + per_class * (w * scale + PAD) + PAD, k * (h * scale + PAD) + PAD
    if width * height > PREVIEW_MAX_PIXELS:
        raise ResourceLimitError(
            f"{path}: a preview grid of {k:,} classes x {per_class} images of {h}x{w} at scale {scale} would be "
            f"{width * height:,} pixels, more than the {PREVIEW_MAX_PIXELS:,} an image viewer (and PIL) opens; use "
            "fewer --per-class, a smaller --scale, or `latentds export` the images")
    check_budget(f"{path}: a preview grid of {k:,} classes x {per_class}", per_class * c * h * w * 4 * 2 + width * height * 3 * 2,
                 f"a row of {per_class} images of {c}x{h}x{w} as float32, the grid as RGB", device)
    ds.decode(np.arange(0))  # the generator's own estimate, before the grid is allocated
    picked = _pick(ds, per_class, seed)
    if not any(picked):
        raise LatentdsError(f"{path}: holds no samples to preview")
    grid = _draw(ds, picked, (width, height), margin, scale, names)
    fd, tmp = staging_file(out)
    os.close(fd)
    try:
        grid.save(tmp, format=PREVIEW_FORMATS[out.suffix.lower()])
        replace_staged(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _pick(ds: LatentDataset, per_class: int, seed: int | None) -> list[list[int]]:
    """Up to ``per_class`` positions of each class: random with ``seed``, else the first ones."""
    rng = np.random.default_rng(seed)
    picked = []
    for k in range(len(ds.classes)):
        members = np.flatnonzero(ds.labels == k)
        if seed is not None:
            members = rng.permutation(members)
        picked.append(members[:per_class].tolist())
    return picked


def _draw(ds: LatentDataset, picked: list[list[int]], size: tuple[int, int], margin: int, scale: int,
          names: bool):  # noqa: ANN202 - a PIL image, imported lazily
    """The grid as a PIL image, decoded one class row at a time (the grid is the only copy of the images)."""
    from PIL import Image, ImageDraw

    _, h, w = ds.image_shape
    grid = Image.new("RGB", size, "white")  # white where a class is short
    draw = ImageDraw.Draw(grid)
    for r, row in enumerate(picked):
        top = PAD + r * (h * scale + PAD)
        if names:
            label = safe(ds.classes[r], LABEL_CHARS)  # escaped: a class name comes from a stranger's file
            draw.text((PAD, top + max(0, (h * scale - 11) // 2)), label[:LABEL_CHARS], fill="black")
        if not row:
            continue
        images = ds.decode(row)[0].cpu()  # (n, C, H, W) in [0, 1]
        pixels = (images * 255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for i, img in enumerate(pixels):
            tile = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).convert("RGB")
            if scale != 1:
                tile = tile.resize((w * scale, h * scale), Image.NEAREST)
            grid.paste(tile, (margin + PAD + i * (w * scale + PAD), top))
    return grid
