"""Tests for latentds.sources: tiny fake datasets written in their real on-disk formats under tmp_path."""

from __future__ import annotations

import pickle
import re
import shutil
import time
import urllib.error
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from latentds.errors import (
    EmptyClassError,
    SourceError,
    SourceMismatchError,
    SourceNotFoundError,
    UnreadableImageError,
    UnsupportedImageError,
)
from latentds.sources import ImageSet, compute_fingerprint, default_root, load_source

SIZE = 8  # tiny images; every load passes image_size=SIZE
CLASSES = ["cat", "dog", "frog"]
PER_CLASS = 2
CIFAR10_JPEG = Path("/work/shared/datasets/cifar10-jpeg")


# --- fixtures ----------------------------------------------------------------------------------------------
def _pixels(seed: int, n: int = PER_CLASS * len(CLASSES)) -> np.ndarray:
    """(n, SIZE, SIZE, 3) uint8, seeded."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, SIZE, SIZE, 3), dtype=np.uint8)


def _labels(n: int = PER_CLASS * len(CLASSES)) -> np.ndarray:
    return np.repeat(np.arange(len(CLASSES)), n // len(CLASSES)).astype(np.int64)


def _write_folder(root: Path, pixels: np.ndarray, labels: np.ndarray, fmt: str = "png") -> None:
    """root/<class>/<i>.<fmt>; alternating PNG/JPEG when fmt == 'mixed'."""
    for i, (img, lab) in enumerate(zip(pixels, labels)):
        d = root / CLASSES[lab]
        d.mkdir(parents=True, exist_ok=True)
        ext = ("png" if i % 2 == 0 else "jpg") if fmt == "mixed" else fmt
        Image.fromarray(img).save(d / f"{i:04d}.{ext}", quality=95)


def _pil_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im.convert("RGB"))


@pytest.fixture
def png_folder(tmp_path: Path) -> tuple[Path, np.ndarray]:
    pixels = _pixels(0)
    _write_folder(tmp_path / "flat", pixels, _labels())
    return tmp_path / "flat", pixels


@pytest.fixture
def split_folder(tmp_path: Path) -> Path:
    root = tmp_path / "splits"
    _write_folder(root / "train", _pixels(1), _labels(), fmt="mixed")
    _write_folder(root / "test", _pixels(2, 3), np.arange(3), fmt="jpg")
    return root


def _load(spec, **kw) -> ImageSet:
    kw.setdefault("image_size", SIZE)
    kw.setdefault("progress", False)
    return load_source(str(spec), **kw)


# --- image folders -----------------------------------------------------------------------------------------
def test_image_folder_png_is_lossless(png_folder):
    root, pixels = png_folder
    s = _load(root)
    assert s.classes == CLASSES
    assert s.images.dtype == torch.uint8 and s.images.shape == (6, 3, SIZE, SIZE)
    assert s.labels.dtype == torch.int64 and s.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(s.images, torch.from_numpy(pixels).permute(0, 3, 1, 2))
    assert s.name == f"imagefolder:{root.absolute()}"
    assert s.num_classes == 3 and s.image_shape == (3, SIZE, SIZE) and len(s) == 6
    assert s.source_bytes == sum(p.stat().st_size for p in root.rglob("*.png"))


def test_image_folder_splits_and_jpeg_match_pil(split_folder):
    train = _load(split_folder)  # split="train" picks DIR/train
    test = _load(split_folder, split="test")
    assert train.name.endswith("/splits/train") and test.name.endswith("/splits/test")
    assert train.classes == test.classes == CLASSES
    assert len(train) == 6 and len(test) == 3 and test.labels.tolist() == [0, 1, 2]
    files = sorted((split_folder / "train").rglob("*.*"))
    assert {f.suffix for f in files} == {".png", ".jpg"}
    expected = np.stack([_pil_rgb(f) for f in files])  # sorted by class then name == load order
    assert torch.equal(train.images, torch.from_numpy(expected).permute(0, 3, 1, 2))


def test_image_folder_grayscale_stays_one_channel(tmp_path):
    gray = np.random.default_rng(3).integers(0, 256, (4, SIZE, SIZE), dtype=np.uint8)
    for i, name in enumerate(("a", "a", "b", "b")):
        (tmp_path / name).mkdir(exist_ok=True)
        Image.fromarray(gray[i], "L").save(tmp_path / name / f"{i}.png")
    Image.fromarray(gray[3], "L").convert("LA").save(tmp_path / "b" / "9.png")  # grey + alpha: alpha dropped
    Image.fromarray(gray[0], "L").save(tmp_path / "a" / "8.bmp")  # PIL path
    s = _load(tmp_path)
    assert s.image_shape == (1, SIZE, SIZE) and len(s) == 6
    assert torch.equal(s.images[:, 0], torch.from_numpy(gray[[0, 1, 0, 2, 3, 3]]))


def test_image_folder_mixed_grayscale_and_palette_become_rgb(tmp_path):
    gray = np.random.default_rng(3).integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(gray, "L").save(tmp_path / "a" / "g.png")
    Image.fromarray(_pixels(4, 1)[0]).convert("P").save(tmp_path / "b" / "p.png")
    Image.fromarray(_pixels(5, 1)[0]).save(tmp_path / "b" / "q.bmp")  # PIL-only path
    s = _load(tmp_path)
    assert s.images.shape == (3, 3, SIZE, SIZE)
    for ch in range(3):
        assert torch.equal(s.images[0, ch], torch.from_numpy(gray))
    assert torch.equal(s.images[1].permute(1, 2, 0), torch.from_numpy(_pil_rgb(tmp_path / "b" / "p.png")))
    assert torch.equal(s.images[2].permute(1, 2, 0), torch.from_numpy(_pixels(5, 1)[0]))


def test_image_folder_ignores_hidden_and_non_images_and_recurses(png_folder):
    root, _ = png_folder
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / "._0000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")
    (root / ".ipynb_checkpoints").mkdir()
    nested = root / "dog" / "more"
    nested.mkdir()
    Image.fromarray(_pixels(9, 1)[0]).save(nested / "x.PNG")
    s = _load(root)
    assert s.classes == CLASSES
    assert s.labels.tolist() == [0, 0, 1, 1, 1, 2, 2]


def test_image_folder_test_split_missing(png_folder):
    root, _ = png_folder
    with pytest.raises(SourceNotFoundError, match="no 'test' split"):
        _load(root, split="test")


def test_image_folder_with_test_but_no_train(tmp_path):
    _write_folder(tmp_path / "test", _pixels(1), _labels())
    with pytest.raises(SourceNotFoundError, match="no .*train"):
        _load(tmp_path)


def test_imagefolder_prefix_reaches_folder_named_like_builtin(tmp_path, monkeypatch):
    _write_folder(tmp_path / "cifar10", _pixels(0), _labels())
    monkeypatch.chdir(tmp_path)
    assert _load("imagefolder:cifar10").classes == CLASSES
    assert _load("./cifar10").classes == CLASSES


# --- arrays: npz and h5 ------------------------------------------------------------------------------------
def test_npz_layouts_give_identical_sets(tmp_path):
    nhwc, labels = _pixels(0), _labels()
    np.savez(tmp_path / "nhwc.npz", images=nhwc, labels=labels, classes=np.array(CLASSES))
    np.savez(tmp_path / "nchw.npz", images=nhwc.transpose(0, 3, 1, 2), labels=labels, classes=np.array(CLASSES))
    np.savez(tmp_path / "float.npz", images=nhwc.astype(np.float32) / 255.0, labels=labels, classes=np.array(CLASSES))
    np.savez(  # keras layout: (N, 1) labels, x_/y_ names, class names as bytes
        tmp_path / "keras.npz", x_train=nhwc, y_train=labels[:, None], classes=np.array([c.encode() for c in CLASSES])
    )
    sets = [_load(tmp_path / f"{n}.npz") for n in ("nhwc", "nchw", "float", "keras")]
    for s in sets:
        assert s.classes == CLASSES and s.labels.tolist() == labels.tolist()
        assert torch.equal(s.images, torch.from_numpy(nhwc).permute(0, 3, 1, 2))
    assert len({s.fingerprint for s in sets}) == 1  # content-addressed: the container does not matter
    assert sets[0].name == f"npz:{(tmp_path / 'nhwc.npz').absolute()}"
    assert sets[0].source_bytes == (tmp_path / "nhwc.npz").stat().st_size


def test_npz_grayscale_and_default_class_names(tmp_path):
    gray = np.random.default_rng(1).integers(0, 256, (4, SIZE, SIZE), dtype=np.uint8)
    np.savez(tmp_path / "g.npz", images=gray, labels=np.array([0, 1, 1, 0]))
    np.savez(tmp_path / "g1.npz", images=gray[:, None], labels=np.array([0, 1, 1, 0]))  # (N, 1, H, W)
    for name in ("g.npz", "g1.npz"):
        s = _load(tmp_path / name)
        assert s.classes == ["0", "1"]
        assert s.images.shape == (4, 1, SIZE, SIZE)  # grayscale stays one channel
        assert torch.equal(s.images, torch.from_numpy(gray)[:, None])


def test_npz_test_split(tmp_path):
    x, y = _pixels(0), _labels()
    np.savez(tmp_path / "a.npz", images=x, labels=y, test_images=x[:3], test_labels=np.array([2, 1, 0]))
    np.savez(tmp_path / "k.npz", x_train=x, y_train=y, x_test=x[:3], y_test=np.array([[2], [1], [0]]))
    for name in ("a.npz", "k.npz"):
        s = _load(tmp_path / name, split="test")
        assert len(s) == 3 and s.labels.tolist() == [2, 1, 0]
    np.savez(tmp_path / "only_train.npz", images=x, labels=y)
    with pytest.raises(SourceNotFoundError, match="test_images"):
        _load(tmp_path / "only_train.npz", split="test")


def test_h5_root_and_groups(tmp_path):
    x, y = _pixels(0), _labels()
    with h5py.File(tmp_path / "flat.h5", "w") as f:
        f["images"] = x
        f["labels"] = y
        f.attrs["classes"] = CLASSES
    with h5py.File(tmp_path / "groups.hdf5", "w") as f:
        f["train/images"] = x.transpose(0, 3, 1, 2)
        f["train/labels"] = y.astype(np.int32)
        f["test/images"] = x[:3]
        f["test/labels"] = np.array([0, 1, 2], dtype=np.uint8)
        f["classes"] = np.array(CLASSES, dtype=h5py.string_dtype())
    flat, grouped = _load(tmp_path / "flat.h5"), _load(tmp_path / "groups.hdf5")
    for s in (flat, grouped):
        assert s.classes == CLASSES and s.labels.tolist() == y.tolist()
        assert torch.equal(s.images, torch.from_numpy(x).permute(0, 3, 1, 2))
    assert flat.fingerprint == grouped.fingerprint
    assert flat.name.startswith("h5:/")
    assert _load(tmp_path / "groups.hdf5", split="test").labels.tolist() == [0, 1, 2]


# --- fingerprint and statistics ----------------------------------------------------------------------------
def test_fingerprint_stable_content_addressed_and_sensitive(png_folder, tmp_path):
    root, pixels = png_folder
    a, b = _load(root), _load(root)
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    copy = tmp_path / "elsewhere"
    shutil.copytree(root, copy)
    time.sleep(0.01)
    (copy / "cat" / "0000.png").touch()  # new path and mtime, same content
    assert _load(copy).fingerprint == a.fingerprint

    changed = pixels[0].copy()
    changed[3, 5, 1] ^= 1  # one channel of one pixel, off by one
    Image.fromarray(changed).save(copy / "cat" / "0000.png")
    assert _load(copy).fingerprint != a.fingerprint

    manual = compute_fingerprint(a.images, a.labels, a.classes)
    assert manual == a.fingerprint
    assert compute_fingerprint(a.images, a.labels, ["cat", "dog", "toad"]) != a.fingerprint
    assert compute_fingerprint(a.images, a.labels.flip(0), a.classes) != a.fingerprint


def test_fingerprint_definition():
    import hashlib

    images = torch.arange(2 * 3 * 2 * 2, dtype=torch.uint8).reshape(2, 3, 2, 2)
    labels = torch.tensor([1, 0])
    h = hashlib.sha256()
    h.update(np.array([1, 0], dtype="<i8").tobytes())
    h.update(bytes(range(24)))
    h.update(b"a\nb")
    assert ImageSet.from_tensors(images, labels, ["a", "b"], "t").fingerprint == h.hexdigest()


def test_mean_std_and_class_indices():
    images = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    images[:, 0] = 255  # channel 0: all ones -> mean 1, std 0
    images[:2, 1] = 255  # channel 1: half ones -> mean 0.5, std 0.5
    images[:, 2, 0, 0] = 51  # channel 2: one pixel in four is 0.2 -> mean 0.05, std sqrt(0.01 - 0.0025)
    s = ImageSet.from_tensors(images, torch.tensor([1, 0, 1, 1]), ["x", "y"], "t")
    mean, std = s.mean_std()
    assert mean == pytest.approx([1.0, 0.5, 0.05])
    assert std == pytest.approx([0.0, 0.5, (0.04 / 4 - 0.05**2) ** 0.5])
    assert s.class_indices(1).tolist() == [0, 2, 3] and s.class_indices(0).tolist() == [1]
    assert s.class_indices(1).dtype == torch.int64
    with pytest.raises(IndexError):
        s.class_indices(2)
    assert "n=4" in repr(s)


def test_mean_std_matches_float_reference():
    images = torch.from_numpy(_pixels(7, 20)).permute(0, 3, 1, 2).contiguous()
    s = ImageSet.from_tensors(images, torch.zeros(20, dtype=torch.int64), ["only"], "t")
    x = images.double() / 255
    mean, std = s.mean_std()
    assert mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(x.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-12)


# --- errors ------------------------------------------------------------------------------------------------
def test_missing_path(tmp_path):
    for missing in (tmp_path / "nope", tmp_path / "nope.npz", tmp_path / "nope.h5"):
        with pytest.raises(SourceNotFoundError, match="not found") as info:
            _load(missing)
        assert str(missing) in str(info.value)
    with pytest.raises(SourceNotFoundError):  # also a FileNotFoundError, and a ValueError via LatentdsError
        _load("imagefolder:" + str(tmp_path / "nope"))
    assert issubclass(SourceNotFoundError, FileNotFoundError) and issubclass(SourceNotFoundError, ValueError)


def test_unknown_spec_lists_accepted_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceNotFoundError, match="unknown dataset 'mnist'") as info:
        _load("mnist")
    for form in ("cifar10", "cifar100", ".npz", ".h5", "<class>"):
        assert form in str(info.value)
    (tmp_path / "data.csv").write_text("1,2,3")
    with pytest.raises(SourceNotFoundError, match="accepted forms"):
        _load(tmp_path / "data.csv")


def test_empty_class_folder_named(png_folder):
    root, _ = png_folder
    (root / "emu").mkdir()
    (root / "emu" / "readme.txt").write_text("no images here")
    with pytest.raises(EmptyClassError, match="emu") as info:
        _load(root)
    assert str(root / "emu") in str(info.value)


def test_no_classes_at_all(tmp_path):
    Image.fromarray(_pixels(0, 1)[0]).save(tmp_path / "loose.png")
    with pytest.raises(EmptyClassError, match="no class folders"):
        _load(tmp_path)
    np.savez(tmp_path / "empty.npz", images=np.zeros((0, SIZE, SIZE, 3), np.uint8), labels=np.zeros(0, np.int64))
    with pytest.raises(EmptyClassError):
        _load(tmp_path / "empty.npz")


def test_array_class_without_samples(tmp_path):
    np.savez(tmp_path / "a.npz", images=_pixels(0), labels=_labels(), classes=np.array(CLASSES + ["emu"]))
    with pytest.raises(EmptyClassError, match="emu"):
        _load(tmp_path / "a.npz")


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.array([0, 1, 2]), "6 images but 3 labels"),
        (np.array([0, 0, 1, 1, 2, 3]), "label 3 is out of range for 3 classes"),
        (np.array([0, 0, 1, -1, 2, 2]), "label -1 is out of range"),
        (np.eye(3)[[0, 0, 1, 1, 2, 2]].astype(np.int64), "argmax"),
        (np.array([0.5, 0, 1, 1, 2, 2]), "must be integers"),
    ],
)
def test_label_mismatches(tmp_path, labels, match):
    path = tmp_path / "bad.npz"
    np.savez(path, images=_pixels(0), labels=labels, classes=np.array(CLASSES))
    with pytest.raises(SourceMismatchError, match=match) as info:
        _load(path)
    assert str(path) in str(info.value)


def test_labels_key_missing(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["images"] = _pixels(0)
    with pytest.raises(SourceMismatchError, match="'labels'"):
        _load(tmp_path / "x.h5")


@pytest.mark.parametrize("content", [b"this is not a jpeg", b"\xff\xd8\xff\xe0 truncated", b""])
def test_unreadable_image_named(png_folder, content):
    root, _ = png_folder
    bad = root / "dog" / "broken.jpg"
    bad.write_bytes(content)
    with pytest.raises(UnreadableImageError, match="broken.jpg") as info:
        _load(root)
    assert str(bad) in str(info.value)


def test_truncated_png_unreadable(png_folder):
    root, _ = png_folder
    good = (root / "cat" / "0000.png").read_bytes()
    (root / "cat" / "0000.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(UnreadableImageError, match="0000.png"):
        _load(root)


def test_unreadable_container_files(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    (tmp_path / "x.h5").write_bytes(b"not hdf5")
    for name in ("x.npz", "x.h5"):
        with pytest.raises(SourceError, match=name):
            _load(tmp_path / name)


def test_native_size_by_default_and_mixed_sizes_refused(png_folder, tmp_path):
    root, pixels = png_folder
    assert load_source(str(root), progress=False).image_shape == (3, SIZE, SIZE)  # native: no image_size needed
    Image.fromarray(np.zeros((SIZE, 2 * SIZE, 3), np.uint8)).save(root / "cat" / "wide.png")
    with pytest.raises(UnsupportedImageError, match=r"wide.png: image is 16x8 \(WxH\) but .* is 8x8.*--image-size"):
        load_source(str(root), progress=False)
    s = load_source(str(root), image_size=4, progress=False)  # resizing makes them agree
    assert s.image_shape == (3, 4, 4) and len(s) == 7
    np.savez(tmp_path / "big.npz", images=np.zeros((2, 16, 12, 3), np.uint8), labels=np.array([0, 1]))
    assert load_source(str(tmp_path / "big.npz")).image_shape == (3, 16, 12)


def test_image_size_resizes_with_antialiasing(tmp_path):
    from torchvision.transforms.v2 import functional as TF

    x = np.random.default_rng(5).integers(0, 256, (3, 20, 20, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=x, labels=np.array([0, 1, 1]))
    s = load_source(str(tmp_path / "a.npz"), image_size=8)
    ref = TF.resize(torch.from_numpy(x).permute(0, 3, 1, 2), [8, 8], antialias=True)
    assert s.image_shape == (3, 8, 8)
    assert (s.images.int() - ref.int()).abs().max() <= 1  # torchvision's uint8 kernel rounds its own way
    assert (s.images.float() - ref.float()).abs().mean() < 0.25  # ~10 % of pixels one level apart
    up = load_source(str(tmp_path / "a.npz"), image_size=40)
    assert up.image_shape == (3, 40, 40)


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.full((2, SIZE, SIZE, 3), 200.0, np.float32), r"\[0, 1\]"),
        (np.full((2, SIZE, SIZE, 3), -0.5, np.float32), r"normalization"),
        (np.zeros((2, SIZE, SIZE, 4), np.uint8), r"channel axis of size 1 or 3"),
        (np.full((2, SIZE, SIZE, 3), 1000, np.uint16), r"uint8"),
    ],
)
def test_unsupported_arrays(tmp_path, images, match):
    np.savez(tmp_path / "x.npz", images=images, labels=np.array([0, 1]))
    with pytest.raises(UnsupportedImageError, match=match):
        _load(tmp_path / "x.npz")


def test_bad_image_rank(tmp_path):
    np.savez(tmp_path / "x.npz", images=np.zeros((2, 64), np.uint8), labels=np.array([0, 1]))
    with pytest.raises(SourceMismatchError, match="shape"):
        _load(tmp_path / "x.npz")


# --- CIFAR through torchvision -----------------------------------------------------------------------------
def test_cifar10_offline_empty_root_says_where(tmp_path):
    with pytest.raises(SourceNotFoundError) as info:
        load_source("cifar10", root=str(tmp_path), progress=False)
    msg = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg
    assert "--no-download" in msg and "image folder" in msg  # says how downloading is allowed
    with pytest.raises(SourceNotFoundError, match="cifar-100-python"):
        load_source("CIFAR-100", root=str(tmp_path), split="test")


def test_cifar_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_root() == tmp_path / "cache" / "latentds" / "datasets"
    with pytest.raises(SourceNotFoundError, match=re.escape(str(default_root() / "cifar-10-batches-py"))):
        load_source("cifar10")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_root() == Path.home() / ".cache" / "latentds" / "datasets"


def test_cifar10_download_failure_is_source_not_found(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(SourceNotFoundError, match="downloading it failed.*name resolution") as info:
        load_source("cifar10", root=str(tmp_path), download=True)
    assert str(tmp_path / "cifar-10-batches-py") in str(info.value)


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch) -> tuple[Path, np.ndarray]:
    """cifar-10-batches-py in torchvision's on-disk layout (pickled dicts); its md5 check is patched out."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    rng = np.random.default_rng(0)
    all_rows = []
    for fname in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = rng.integers(0, 256, (10, 3 * 32 * 32), dtype=np.uint8)  # CIFAR rows: R plane, G plane, B plane
        all_rows.append(rows)
        with open(base / fname, "wb") as fh:
            pickle.dump({"data": rows, "labels": list(range(10))}, fh)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": names}, fh)
    return tmp_path, np.concatenate(all_rows[:5])


def test_cifar10_root_is_parent_or_folder_or_spec(fake_cifar10):
    parent, rows = fake_cifar10
    a = load_source("cifar10", root=str(parent), image_size=32)
    b = load_source("cifar10", root=str(parent / "cifar-10-batches-py"), image_size=32)
    c = load_source(str(parent / "cifar-10-batches-py"), image_size=32)  # the folder as the spec
    assert a.fingerprint == b.fingerprint == c.fingerprint
    assert a.name == "cifar10" and len(a) == 50 and a.classes[0] == "airplane" and a.classes[-1] == "truck"
    assert torch.equal(a.images, torch.from_numpy(rows).reshape(50, 3, 32, 32))
    assert a.source_bytes == sum((parent / "cifar-10-batches-py" / f).stat().st_size
                                 for f in [f"data_batch_{i}" for i in range(1, 6)] + ["batches.meta"])
    test = load_source("cifar10", root=str(parent), split="test", image_size=32)
    assert len(test) == 10 and test.labels.tolist() == list(range(10))
    big = load_source("cifar10", root=str(parent), split="test", image_size=64)  # resized on request
    assert big.image_shape == (3, 64, 64) and big.fingerprint != test.fingerprint


# --- the real CIFAR-10 JPEG copy ---------------------------------------------------------------------------
@pytest.mark.skipif(not (CIFAR10_JPEG / "test").is_dir(), reason=f"{CIFAR10_JPEG} not present")
def test_real_cifar10_jpeg_test_split():
    start = time.perf_counter()
    s = load_source(str(CIFAR10_JPEG), split="test", progress=False)
    elapsed = time.perf_counter() - start
    assert len(s) == 10_000 and s.image_shape == (3, 32, 32)
    assert s.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert torch.bincount(s.labels).tolist() == [1000] * 10
    mean, _ = s.mean_std()
    assert mean == pytest.approx([0.494, 0.485, 0.450], abs=0.01)
    assert elapsed < 30, f"decoding 10,000 JPEGs took {elapsed:.1f}s"


def test_image_size_is_bounded(png_folder):
    from latentds.errors import ConfigError

    root, _ = png_folder
    for bad in (0, -3, 100_000, True, 2.5):
        with pytest.raises(ConfigError, match="image_size"):
            load_source(str(root), image_size=bad, progress=False)
