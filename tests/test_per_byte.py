"""The per-byte benchmark's accounting (bench/per_byte.py): what fits in a budget, class balance, lossless tiling."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pb():
    spec = importlib.util.spec_from_file_location("per_byte", REPO / "bench" / "per_byte.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["per_byte"] = mod
    spec.loader.exec_module(mod)
    return mod


def _images(n: int = 200, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n // classes)
    colour = rng.integers(40, 216, (n, 1, 1, 3))  # smooth images (a colour and a ramp each): what JPEG is made for
    ramp = np.linspace(-30, 30, 32)[None, :, None, None] * rng.choice([-1, 1], (n, 1, 1, 1))
    images = np.clip(colour + ramp + rng.normal(0, 2, (n, 32, 32, 3)), 0, 255).astype(np.uint8)
    return images, labels


def test_every_prefix_of_the_order_is_class_balanced(pb):
    _, labels = _images()
    order = pb.class_balanced_order(labels, seed=3)
    assert sorted(order.tolist()) == list(range(len(labels)))
    for k in (10, 50, 200):
        assert np.bincount(labels[order[:k]], minlength=10).tolist() == [k // 10] * 10


def test_files_fill_the_budget_and_count_a_label_byte_each(pb):
    images, labels = _images()
    order = pb.class_balanced_order(labels, seed=0)
    sizes = [len(pb.encode_png(images[i])) + 1 for i in order]
    budget = sum(sizes[:37]) + sizes[37] - 1  # one byte short of the 38th image
    kept, decoded, total = pb.fill_files(images, order, budget, pb.encode_png)
    assert len(kept) == 37 and total == sum(sizes[:37]) <= budget
    assert np.array_equal(decoded, images[kept])  # PNG is lossless


def test_mosaic_tiles_come_back_in_order_and_within_the_budget(pb):
    images, labels = _images()
    order = pb.class_balanced_order(labels, seed=0)
    blobs, counts = pb.mosaic_bytes(images[order[:130]], quality=95)
    back = pb.unmosaic(blobs, counts)
    assert back.shape == (130, 32, 32, 3)
    dist = np.abs(back[:, None].astype(int) - images[order[:130]][None].astype(int)).mean(axis=(2, 3, 4))
    assert (dist.argmin(axis=1) == np.arange(130)).all()  # each tile is its own image, in order
    assert dist.diagonal().max() < 6  # q95 on 16x16-aligned tiles (chroma MCUs too): no tile bleeds into another
    budget = sum(len(b) for b in blobs) + 130
    kept, decoded, total = pb.fill_mosaic(images, order, budget, quality=95)
    assert total <= budget and len(kept) % 10 == 0 and len(kept) >= 120 and len(decoded) == len(kept)


def test_a_budget_nothing_fits_in_is_said_not_rounded_up(pb):
    images, labels = _images()
    order = pb.class_balanced_order(labels, seed=0)
    kept, decoded, total = pb.fill_mosaic(images, order, 100, quality=50)
    assert len(kept) == 0 and total == 0 and decoded.shape[0] == 0
    kept, _, total = pb.fill_files(images, order, 100, pb.encode_png)
    assert len(kept) == 0 and total == 0
