"""Exports that other pipelines read: WebDataset shards, Hugging Face datasets, and .npz written as a stream."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentds import errors
from latentds.dataset import LatentDataset
from latentds.export import export
from tests.conftest import make_lds


def _grey_lds(tmp: Path) -> Path:
    """A 1x16x16 file (grey, another size) with 7 rows in 3 classes."""
    from latentds.lds import image_spec, save_lds
    from latentds.models import create_model

    torch.manual_seed(0)
    g = create_model("biggan", num_classes=3, width=2, latent_dim=8, image_size=16, channels=1).eval()
    return save_lds(tmp / "grey.lds", g, torch.randn(7, 8), torch.arange(7) % 3, ["zero", "one", "two"],
                    image_spec([0.5], [0.25], (1, 16, 16), (-1.0, 1.0)))


def _decoded_uint8(path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = LatentDataset(path, normalize=False, precision="fp32").decode(range(7))
    return (images * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy(), labels.numpy()


def test_webdataset_shards_hold_png_and_cls_in_order(tmp_path: Path) -> None:
    src = _grey_lds(tmp_path)
    out = export(src, tmp_path / "wds", fmt="webdataset", shard_size=3, progress=False, shuffle=False)
    shards = sorted(p.name for p in out.glob("*.tar"))
    assert shards == ["wds-000000.tar", "wds-000001.tar", "wds-000002.tar"]
    assert (out / "classes.txt").read_text().splitlines() == ["zero", "one", "two"]
    pixels, labels = _decoded_uint8(src)
    seen = []
    for shard in shards:
        with tarfile.open(out / shard) as tar:
            names = tar.getnames()
            for key in sorted({n.split(".")[0] for n in names}):
                img = np.array(Image.open(io.BytesIO(tar.extractfile(f"{key}.png").read())))
                cls = int(tar.extractfile(f"{key}.cls").read())
                assert img.shape == (16, 16)  # grey stays one channel
                assert np.array_equal(img, pixels[int(key), ..., 0]) and cls == labels[int(key)]
                seen.append(int(key))
    assert seen == list(range(7))


def test_webdataset_package_reads_the_shards(tmp_path: Path) -> None:
    wds = pytest.importorskip("webdataset")
    out = export(make_lds(tmp_path / "a.lds", n=6), tmp_path / "wds", fmt="webdataset", progress=False, shuffle=False)
    samples = list(wds.WebDataset(str(out / "wds-000000.tar"), shardshuffle=False).decode("pil").to_tuple("png", "cls"))
    assert len(samples) == 6 and samples[0][0].size == (32, 32) and [s[1] for s in samples] == [0, 1, 2, 0, 1, 2]


def test_hugging_face_export_loads_with_class_names(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    src = _grey_lds(tmp_path)
    out = export(src, tmp_path / "hf", fmt="hf", progress=False, shuffle=False)
    loaded = datasets.load_from_disk(str(out))
    assert loaded.features["label"].names == ["zero", "one", "two"] and len(loaded) == 7
    pixels, labels = _decoded_uint8(src)
    assert np.array_equal(np.array(loaded[4]["image"]), pixels[4, ..., 0]) and loaded[4]["label"] == labels[4]
    as_torch = loaded.with_format("torch")
    assert tuple(as_torch[0]["image"].shape) in ((1, 16, 16), (16, 16)) and int(as_torch[0]["label"]) == 0


def test_streamed_npz_equals_what_np_load_expects(tmp_path: Path) -> None:
    src = _grey_lds(tmp_path)
    out = export(src, tmp_path / "x.npz", progress=False, batch_size=3, shuffle=False)
    pixels, labels = _decoded_uint8(src)
    with np.load(out, allow_pickle=False) as z:
        assert z["images"].shape == (7, 16, 16, 1) and np.array_equal(z["images"], pixels)
        assert z["labels"].tolist() == labels.tolist() and z["classes"].tolist() == ["zero", "one", "two"]


def test_directory_exports_refuse_to_overwrite_and_unknown_formats(tmp_path: Path) -> None:
    src = make_lds(tmp_path / "a.lds", n=6)
    (tmp_path / "wds").mkdir()
    (tmp_path / "wds" / "keep.txt").write_text("mine")
    with pytest.raises(errors.UsageError, match="already exists"):
        export(src, tmp_path / "wds", fmt="webdataset", progress=False, overwrite=True)
    assert (tmp_path / "wds" / "keep.txt").read_text() == "mine"
    with pytest.raises(errors.UsageError, match="unknown export format"):
        export(src, tmp_path / "x", fmt="parquet", progress=False)


@pytest.mark.parametrize("fmt", ["folder", "webdataset"])
def test_force_replaces_an_exported_folder_only_once_the_new_one_is_complete(tmp_path: Path, monkeypatch,
                                                                               fmt: str) -> None:
    from latentds import export as export_module
    from latentds.cli import main

    small, large = make_lds(tmp_path / "a.lds", n=6), make_lds(tmp_path / "b.lds", n=9, seed=1)
    out = tmp_path / "out"
    export(small, out, fmt=fmt, progress=False)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert main(["-q", "export", str(large), str(out), "--format", fmt]) == 2  # without --force: refused

    def broken(*args, **kwargs) -> None:
        raise KeyboardInterrupt  # the new export dies halfway

    monkeypatch.setattr(export_module, f"_export_{fmt}", broken)
    with pytest.raises(KeyboardInterrupt):
        export(large, out, fmt=fmt, progress=False, overwrite=True)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # the old folder, untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []  # no staging left
    monkeypatch.undo()
    assert main(["-q", "export", str(large), str(out), "--format", fmt, "--force"]) == 0
    if fmt == "folder":
        assert len(list(out.rglob("*.png"))) == 9
    else:
        with tarfile.open(next(out.glob("*.tar"))) as tar:
            assert len([n for n in tar.getnames() if n.endswith(".cls")]) == 9
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []  # the old one deleted


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_replace_staged_dir_swaps_then_deletes_the_old_folder(tmp_path: Path, monkeypatch, exchange: bool) -> None:
    from latentds.format import staging

    if not exchange:
        monkeypatch.setattr(staging, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    (out / "old").mkdir(parents=True)
    new = staging.staging_dir(out)
    (new / "new").mkdir()
    staging.replace_staged_dir(new, out)
    assert [p.name for p in out.iterdir()] == ["new"] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_webdataset_export_is_shuffled_with_a_seed_into_shards_sized_in_bytes(tmp_path: Path) -> None:
    src = make_lds(tmp_path / "a.lds", n=30)  # rows by class in the file: 0, 1, 2, 0, ...

    def keys(out: Path) -> list[list[int]]:
        shards = []
        for shard in sorted(out.glob("*.tar")):
            with tarfile.open(shard) as tar:
                shards.append([int(n.split(".")[0]) for n in tar.getnames() if n.endswith(".cls")])
        return shards

    one = keys(export(src, tmp_path / "a", fmt="webdataset", progress=False, shard_bytes=8 * 1024))
    assert len(one) > 2 and all(len(s) > 0 for s in one)  # closed by size, as ShardWriter's maxsize
    # the records stay under the size; tar's end blocks pad a file to its 10 KiB record (ShardWriter counts alike)
    assert all(p.stat().st_size <= 8 * 1024 + 10240 for p in (tmp_path / "a").glob("*.tar"))
    rows = [k for s in one for k in s]
    assert sorted(rows) == list(range(30)) and rows != list(range(30))  # every row once, in a random order
    assert keys(export(src, tmp_path / "b", fmt="webdataset", progress=False, shard_bytes=8 * 1024)) == one  # seeded
    other = keys(export(src, tmp_path / "c", fmt="webdataset", progress=False, shard_bytes=8 * 1024, seed=1))
    assert [k for s in other for k in s] != rows
