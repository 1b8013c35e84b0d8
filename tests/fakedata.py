"""Fake datasets in their real on-disk formats, for tests (torchvision's ``create_image_folder`` idea)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def fake_images(n: int, shape: tuple[int, int, int], seed: int = 0, label: int = 0) -> np.ndarray:
    """(n, H, W, C) uint8 with a class-dependent bright band (so classes are learnable) plus noise."""
    c, h, w = shape
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (n, h, w, c), dtype=np.uint8)
    band = (h // 4) * (label % 3)
    x[:, band : band + max(h // 4, 1), :, :] += 150
    return x


def create_image_folder(
    root: Path,
    shape: tuple[int, int, int],
    classes: Sequence[str] = ("a", "b", "c"),
    per_class: int = 6,
    splits: Sequence[str | None] = (None,),
    seed: int = 0,
) -> Path:
    """``root/<split>/<class>/<i>.png`` (or ``root/<class>/`` for split None), grayscale PNGs when C = 1."""
    for s, split in enumerate(splits):
        base = root / split if split else root
        for label, name in enumerate(classes):
            (base / name).mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(fake_images(per_class, shape, seed + 100 * s + label, label)):
                Image.fromarray(img[..., 0] if shape[0] == 1 else img).save(base / name / f"{i:03d}.png")
    return root


def create_npz(
    path: Path, shape: tuple[int, int, int], classes: Sequence[str] = ("a", "b", "c"), per_class: int = 6,
    seed: int = 0, test_per_class: int = 0,
) -> Path:
    """An .npz with ``images`` (N, H, W[, C]) uint8, ``labels``, ``classes`` (+ ``x_test``/``y_test``)."""

    def arrays(n: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([fake_images(n, shape, seed + offset + c, c) for c in range(len(classes))])
        return (x[..., 0] if shape[0] == 1 else x), np.repeat(np.arange(len(classes)), n)

    images, labels = arrays(per_class, 0)
    extra = {}
    if test_per_class:
        extra["x_test"], extra["y_test"] = arrays(test_per_class, 1000)
    np.savez(path, images=images, labels=labels, classes=np.array(classes), **extra)
    return path
