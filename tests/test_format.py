"""The .lds container: round trips, the spec byte by byte, and one specific error per kind of damage."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentds import errors
from latentds.format import LdsReader, pack, read_zst, spec, unpack, write_lds
from latentds.lds import open_lds
from tests.conftest import CLASSES, make_lds

IMAGE = {"channels": 3, "height": 32, "width": 32, "mean": [0.5] * 3, "std": [0.25] * 3}


# --- helpers --------------------------------------------------------------------------------------------
def split(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def join(path: Path, header: dict, buffer: bytes) -> None:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + buffer)


def rewrite(path: Path, manifest: Callable[[dict], None] | None = None, header: Callable[[dict], None] | None = None) -> None:
    """Edit a file's manifest (re-signing it, so only the edit is wrong) and/or its raw header."""
    h, buf = split(path)
    if manifest is not None:
        m = json.loads(h["__metadata__"][spec.META_MANIFEST])
        manifest(m)
        text = json.dumps(m)
        h["__metadata__"][spec.META_MANIFEST] = text
        h["__metadata__"][spec.META_MANIFEST_SHA256] = hashlib.sha256(text.encode()).hexdigest()
    if header is not None:
        header(h)
    join(path, h, buf)


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def tensor_offset(path: Path, name: str) -> int:
    with LdsReader(path) as r:
        return r._buffer_start + r.tensors[name].begin


# --- round trips ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_round_trip_every_latent_dtype(tmp_path: Path, dtype: torch.dtype) -> None:
    latents = torch.randn(37, 16, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(37) % 3
    state = {"w": torch.randn(4, 5), "b": torch.zeros(5), "count": torch.tensor(7)}
    path = write_lds(
        tmp_path / "x.lds", latents=latents, labels=labels, classes=CLASSES, generator_arch="any",
        generator_args={"k": 1}, generator_state=state, image=IMAGE, latent_dtype=dtype, chunk_rows=8,
    )
    with LdsReader(path, verify=True) as r:
        assert r.latents().dtype == dtype
        assert torch.equal(r.latents(), latents.to(dtype))
        assert torch.equal(r.latents([36, 0, 9]), latents.to(dtype)[[36, 0, 9]])
        assert torch.equal(r.labels(), labels)
        got = r.generator_state()
        assert set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)
        assert r.classes == CLASSES and r.num_samples == 37 and r.latent_dim == 16
        assert len(r.manifest["integrity"]["latents_chunks"]) == 5  # ceil(37 / 8)
        assert r.verify() == []


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(0, 40),
    d=st.integers(1, 9),
    k=st.sampled_from([1, 2, 255, 256, 257, 40000]),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
    chunk=st.integers(1, 50),
)
def test_round_trip_property(tmp_path_factory, n: int, d: int, k: int, dtype: torch.dtype, chunk: int) -> None:
    path = tmp_path_factory.mktemp("prop") / "p.lds"
    latents = torch.randn(n, d).to(dtype)
    labels = torch.randint(0, k, (n,))
    write_lds(path, latents=latents, labels=labels, classes=[f"c{i}" for i in range(k)], generator_arch="a",
              generator_args={}, generator_state={"w": torch.ones(2)}, image=IMAGE, chunk_rows=chunk)
    with LdsReader(path) as r:
        assert torch.equal(r.latents(), latents) and torch.equal(r.labels(), labels)
        assert r.verify() == []


def test_any_safetensors_reader_lists_it(tiny_lds: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(tiny_lds), "pt") as f:
        assert {"latents", "labels"} <= set(f.keys())
        assert json.loads(f.metadata()[spec.META_MANIFEST])["format"] == "latentds"
        with LdsReader(tiny_lds) as r:
            assert torch.equal(f.get_tensor("latents"), r.latents())


def test_data_buffer_is_8_byte_aligned_and_latents_first(tiny_lds: Path) -> None:
    with LdsReader(tiny_lds) as r:
        assert r._buffer_start % 8 == 0
        assert r.tensors["latents"].begin == 0


def test_hand_built_file_following_the_spec_is_read(tmp_path: Path) -> None:
    """Golden bytes: build a file from spec/FORMAT.md alone (no writer) and read it back."""
    latents = np.arange(6, dtype="<f4").reshape(3, 2)
    labels = np.array([0, 1, 0], dtype="u1")
    weight = np.array([1.5], dtype="<f4")
    blobs = {"latents": latents.tobytes(), "labels": labels.tobytes(), "generator.w": weight.tobytes()}
    manifest = {
        "format": "latentds", "format_version": "1.0", "num_samples": 3, "latent_dim": 2, "num_classes": 2,
        "classes": ["a", "b"], "latents": {"encoding": "raw"},
        "image": {"channels": 1, "height": 2, "width": 2, "generator_range": [-1, 1], "mean": [0.5], "std": [0.5]},
        "generator": {"arch": "none", "args": {}},
        "provenance": {},
        "integrity": {
            "algorithm": "sha256",
            "tensors": {
                "latents": {"dtype": "F32", "shape": [3, 2], "sha256": hashlib.sha256(blobs["latents"]).hexdigest()},
                "labels": {"dtype": "U8", "shape": [3], "sha256": hashlib.sha256(blobs["labels"]).hexdigest()},
                "generator.w": {"dtype": "F32", "shape": [1], "sha256": hashlib.sha256(blobs["generator.w"]).hexdigest()},
            },
            "latents_chunk_rows": 2,
            "latents_chunks": [hashlib.sha256(blobs["latents"][:16]).hexdigest(), hashlib.sha256(blobs["latents"][16:]).hexdigest()],
        },
    }
    text = json.dumps(manifest)
    header = {
        "__metadata__": {"latentds.manifest": text, "latentds.manifest_sha256": hashlib.sha256(text.encode()).hexdigest()},
        "latents": {"dtype": "F32", "shape": [3, 2], "data_offsets": [0, 24]},
        "labels": {"dtype": "U8", "shape": [3], "data_offsets": [24, 27]},
        "generator.w": {"dtype": "F32", "shape": [1], "data_offsets": [27, 31]},
    }
    path = tmp_path / "hand.lds"
    join(path, header, b"".join(blobs.values()))
    with LdsReader(path, verify=True) as r:
        assert r.latents().tolist() == [[0, 1], [2, 3], [4, 5]]
        assert r.labels().tolist() == [0, 1, 0]
        assert r.generator_state()["w"].tolist() == [1.5]


def test_writer_is_deterministic(tmp_path: Path) -> None:
    prov = {"created": "2026-01-01T00:00:00+00:00"}
    args = dict(latents=torch.ones(4, 3), labels=torch.tensor([0, 1, 2, 0]), classes=CLASSES, generator_arch="a",
                generator_args={}, generator_state={"w": torch.ones(2)}, image=IMAGE, provenance=prov)
    a, b = write_lds(tmp_path / "a.lds", **args), write_lds(tmp_path / "b.lds", **args)
    assert a.read_bytes() == b.read_bytes()


# --- writing --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, match",
    [
        ({"latents": torch.full((4, 3), float("nan"))}, "NaN"),
        ({"labels": torch.tensor([0, 1, 2, 3])}, r"\[0, 3\)"),
        ({"labels": torch.tensor([0, 1])}, "shape"),
        ({"latents": torch.ones(4, 3, dtype=torch.int32)}, "float"),
        ({"latents": torch.ones(4)}, "2-D"),
    ],
)
def test_writer_refuses_bad_input(tmp_path: Path, change: dict, match: str) -> None:
    args = dict(latents=torch.ones(4, 3), labels=torch.tensor([0, 1, 2, 0]), classes=CLASSES, generator_arch="a",
                generator_args={}, generator_state={}, image=IMAGE)
    args.update(change)
    with pytest.raises(errors.LatentdsError, match=match):
        write_lds(tmp_path / "x.lds", **args)
    assert not (tmp_path / "x.lds").exists()


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_lds(tmp_path / "x.lds")
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("latentds.format.writer.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        make_lds(path, n=30, seed=3)
    assert path.read_bytes() == before  # the old file survives intact
    assert [p.name for p in tmp_path.iterdir()] == ["x.lds"]  # and no temporary file is left behind


# --- the corruption matrix ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["latents", "labels", "generator.conv_out.weight"])
def test_bit_flip_in_each_tensor_is_reported_by_name(tiny_lds: Path, name: str) -> None:
    with LdsReader(tiny_lds) as r:
        if name not in r.tensors:  # pick a real generator tensor if the name changed
            name = next(t for t in r.tensors if t.startswith("generator.") and t.endswith("weight"))
    flip_bit(tiny_lds, tensor_offset(tiny_lds, name) + 1, bit=0)  # labels: row 1 goes 1 -> 0, still in range
    with LdsReader(tiny_lds) as r:
        problems = r.verify()
    assert any(repr(name) in p for p in problems), problems
    with pytest.raises(errors.ChecksumError, match="sha256"):
        LdsReader(tiny_lds, verify=True)


def test_partial_read_checks_only_the_touched_chunk(tmp_path: Path) -> None:
    path = make_lds(tmp_path / "c.lds", n=24, chunk_rows=8)
    flip_bit(path, tensor_offset(path, "latents") + 8 * 128 * 4 + 5)  # inside rows 8-15
    with LdsReader(path) as r:
        r.latents([0, 1, 23], check=True)  # untouched chunks: fine
        with pytest.raises(errors.ChecksumError, match="rows 8-15"):
            r.latents([3, 9], check=True)


def _boundaries(path: Path) -> dict[str, int]:
    with LdsReader(path) as r:
        start = r._buffer_start
        ends = sorted(info.end for info in r.tensors.values())
        size = r.file_size
    return {
        "empty": 0, "inside length": 4, "after length": 8, "inside header": start // 2, "end of header": start,
        "inside latents": start + 100, "end of latents": start + ends[0], "one byte short": size - 1,
    }


@pytest.mark.parametrize("where", ["empty", "inside length", "after length", "inside header", "end of header",
                                   "inside latents", "end of latents", "one byte short"])
def test_truncation_at_each_section_boundary(tiny_lds: Path, where: str) -> None:
    cut = _boundaries(tiny_lds)[where]
    tiny_lds.write_bytes(tiny_lds.read_bytes()[:cut])
    expected = errors.TruncatedFileError if cut >= _header_end(tiny_lds) else errors.HeaderLengthError
    with pytest.raises(expected, match=str(tiny_lds)):
        LdsReader(tiny_lds)


def _header_end(path: Path) -> int:
    data = path.read_bytes()
    return 8 + struct.unpack("<Q", data[:8])[0] if len(data) >= 8 else 1 << 62


@pytest.mark.parametrize(
    "length, error",
    [(2**40, errors.HeaderTooLargeError), (1, errors.HeaderLengthError), (None, errors.HeaderParseError)],
)
def test_bad_header_length(tiny_lds: Path, length: int | None, error: type) -> None:
    data = bytearray(tiny_lds.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    data[:8] = struct.pack("<Q", n - 8 if length is None else length)  # None: cut the JSON short
    tiny_lds.write_bytes(bytes(data))
    with pytest.raises(error):
        LdsReader(tiny_lds)


def test_not_an_lds_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    plain = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(2)}, str(plain))
    with pytest.raises(errors.NotLdsError, match="not a latentds"):
        LdsReader(plain)
    png = tmp_path / "image.lds"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(errors.HeaderTooLargeError, match="not a .lds file"):
        LdsReader(png)
    text = tmp_path / "notes.lds"
    text.write_bytes(struct.pack("<Q", 8) + b"hello...")
    with pytest.raises(errors.HeaderParseError):
        LdsReader(text)
    text.write_bytes(struct.pack("<Q", 5) + b"hello")
    with pytest.raises(errors.HeaderLengthError, match="multiple of 8"):
        LdsReader(text)


def test_wrong_format_name(tiny_lds: Path) -> None:
    rewrite(tiny_lds, manifest=lambda m: m.update(format="something-else"))
    with pytest.raises(errors.NotLdsError):
        LdsReader(tiny_lds)


def test_unknown_major_version_names_the_readable_ones(tiny_lds: Path) -> None:
    rewrite(tiny_lds, manifest=lambda m: m.update(format_version="2.0"))
    with pytest.raises(errors.UnsupportedVersionError, match=r"version 2\.0.*reads versions 1\.x"):
        LdsReader(tiny_lds)


def test_newer_minor_version_is_read(tiny_lds: Path) -> None:
    rewrite(tiny_lds, manifest=lambda m: m.update(format_version="1.7", future_field={"x": 1}))
    with LdsReader(tiny_lds) as r:
        assert r.manifest["future_field"] == {"x": 1}


def test_manifest_edit_without_resigning_is_caught(tiny_lds: Path) -> None:
    h, buf = split(tiny_lds)
    h["__metadata__"][spec.META_MANIFEST] = h["__metadata__"][spec.META_MANIFEST].replace('"dog"', '"cow"')
    join(tiny_lds, h, buf)
    with pytest.raises(errors.ChecksumError, match="manifest"):
        LdsReader(tiny_lds)


def test_labels_out_of_range(tiny_lds: Path) -> None:
    off = tensor_offset(tiny_lds, "labels") + 2  # row 2 has label 2 (of 3 classes); 2 ^ 1 << 2 = 6
    flip_bit(tiny_lds, off, bit=2)
    with pytest.raises(errors.LabelRangeError, match=r"label 6 at row 2 is outside \[0, 3\)"):
        LdsReader(tiny_lds)


def test_unknown_architecture(tiny_lds: Path) -> None:
    rewrite(tiny_lds, manifest=lambda m: m["generator"].update(arch="stylegan9"))
    LdsReader(tiny_lds).close()  # the container itself is fine
    with pytest.raises(errors.UnknownArchitectureError, match="stylegan9.*biggan32"):
        open_lds(tiny_lds)


def test_generator_keys_must_match_the_architecture(tiny_lds: Path) -> None:
    rewrite(tiny_lds, manifest=lambda m: m["generator"]["args"].update(width=8))
    with pytest.raises(errors.GeneratorKeysError, match="wrong shape"):
        open_lds(tiny_lds)


def test_header_and_manifest_must_agree_on_dtypes(tiny_lds: Path) -> None:
    rewrite(tiny_lds, manifest=lambda m: m["integrity"]["tensors"]["latents"].update(dtype="F16"))
    with pytest.raises(errors.TensorMismatchError, match="latents"):
        LdsReader(tiny_lds)


def test_overlapping_offsets(tiny_lds: Path) -> None:
    def overlap(h: dict) -> None:
        begin, end = h["labels"]["data_offsets"]
        h["labels"]["data_offsets"] = [begin - 4, end - 4]

    rewrite(tiny_lds, header=overlap)
    with pytest.raises(errors.TensorLayoutError, match="overlaps"):
        LdsReader(tiny_lds)


def test_trailing_bytes(tiny_lds: Path) -> None:
    tiny_lds.write_bytes(tiny_lds.read_bytes() + b"extra")
    with pytest.raises(errors.TensorLayoutError, match="after the last tensor"):
        LdsReader(tiny_lds)


def test_missing_manifest_field(tiny_lds: Path) -> None:
    rewrite(tiny_lds, manifest=lambda m: m["image"].pop("std"))
    with pytest.raises(errors.ManifestError, match="image.std"):
        LdsReader(tiny_lds)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(errors.LdsNotFoundError, match="no such file"):
        LdsReader(tmp_path / "nope.lds")


def test_every_error_is_a_value_error() -> None:
    for name in dir(errors):
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, errors.LatentdsError) and issubclass(obj, ValueError), name


def test_reader_is_not_picklable(tiny_lds: Path) -> None:
    import pickle

    with LdsReader(tiny_lds) as r, pytest.raises(TypeError, match="pickle its path"):
        pickle.dumps(r)


# --- .lds.zst transport ---------------------------------------------------------------------------------
def test_zst_round_trip_and_transparent_read(tiny_lds: Path, tmp_path: Path) -> None:
    packed = pack(tiny_lds, tmp_path / "t.lds.zst")
    assert read_zst(packed) == tiny_lds.read_bytes()
    with LdsReader(packed, verify=True) as a, LdsReader(tiny_lds) as b:
        assert torch.equal(a.latents(), b.latents())
    out = unpack(packed, tmp_path / "back.lds")
    assert out.read_bytes() == tiny_lds.read_bytes()


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_damaged_zst(tiny_lds: Path, tmp_path: Path, damage: str) -> None:
    packed = pack(tiny_lds, tmp_path / "t.lds.zst")
    data = bytearray(packed.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = bytearray(b"not zstd at all" * 10)
    packed.write_bytes(bytes(data))
    with pytest.raises(errors.CompressionError):
        LdsReader(packed)
    with pytest.raises(errors.CompressionError):
        unpack(packed, tmp_path / "out.lds")
    assert not (tmp_path / "out.lds").exists()


def test_zst_unpack_size_bound(tiny_lds: Path, tmp_path: Path) -> None:
    packed = pack(tiny_lds, tmp_path / "t.lds.zst")
    with pytest.raises(errors.CompressionError, match="more than the 1,000"):
        read_zst(packed, max_bytes=1000)
    with pytest.raises(errors.CompressionError, match="more than the 1,000-byte limit"):
        unpack(packed, tmp_path / "x.lds", max_bytes=1000)


# --- hostile .lds.zst files: refused before inflating, the output left as it was ---------------------------
def _zst(data: bytes, checksum: bool = True, content_size: bool = True) -> bytes:
    import zstandard

    cctx = zstandard.ZstdCompressor(level=3, write_checksum=checksum, write_content_size=content_size)
    if content_size:
        return cctx.compress(data)
    obj = cctx.compressobj()  # streaming: no content size in the header
    return obj.compress(data) + obj.flush()


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda lds: _zst(lds) + b"junk", "after the zstd frame"),
        (lambda lds: _zst(lds) + _zst(lds), "after the zstd frame"),
        (lambda lds: _zst(lds, checksum=False), "no content checksum"),
        (lambda lds: _zst(lds, content_size=False), "content size"),
        (lambda lds: b"\x28\xb5\x2f\xfd\x00", "corrupt|truncated"),
    ],
    ids=["trailing", "second-frame", "no-checksum", "no-size", "header-only"],
)
def test_hostile_zst_refused_up_front(tiny_lds: Path, tmp_path: Path, make, match: str) -> None:
    bad = tmp_path / "bad.lds.zst"
    bad.write_bytes(make(tiny_lds.read_bytes()))
    with pytest.raises(errors.CompressionError, match=match):
        LdsReader(bad)
    good = tmp_path / "good.lds"
    good.write_bytes(tiny_lds.read_bytes())
    with pytest.raises(errors.CompressionError, match=match):
        unpack(bad, good)
    assert good.read_bytes() == tiny_lds.read_bytes()  # untouched


def test_unpack_of_a_non_lds_keeps_the_output(tiny_lds: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.zst"
    other.write_bytes(_zst(b"not a .lds file at all" * 1000))
    good = tmp_path / "good.lds"
    good.write_bytes(tiny_lds.read_bytes())
    with pytest.raises(errors.CompressionError, match="not a valid .lds|not a .lds"):
        unpack(other, good)
    assert good.read_bytes() == tiny_lds.read_bytes()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging file left


def test_decompression_bomb_is_bounded(tmp_path: Path) -> None:
    """A small frame that declares (and inflates to) 2 GiB of zeros: refused from its header, no inflation."""
    import resource

    import zstandard

    bomb = tmp_path / "bomb.lds.zst"
    with open(bomb, "wb") as f:
        with zstandard.ZstdCompressor(level=19, write_checksum=True).stream_writer(f, size=2 * 1024**3) as w:
            zeros = bytes(1 << 24)
            for _ in range(128):
                w.write(zeros)
    assert bomb.stat().st_size < 1 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(errors.CompressionError, match="header"):
        LdsReader(bomb)  # 2 GiB is under the in-memory limit: the .lds header inside it is what refuses it
    with pytest.raises(errors.CompressionError):
        unpack(bomb, tmp_path / "out.lds")  # streams to disk in 1 MiB chunks, then refuses: not a .lds
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200, grown_mib
    assert not (tmp_path / "out.lds").exists()


def test_pack_and_unpack_refuse_their_own_input(tiny_lds: Path, tmp_path: Path) -> None:
    data = tiny_lds.read_bytes()
    with pytest.raises(errors.CompressionError, match="input file itself"):
        pack(tiny_lds, tiny_lds)
    assert tiny_lds.read_bytes() == data
    packed = pack(tiny_lds, tmp_path / "t.lds.zst")
    with pytest.raises(errors.CompressionError, match="input file itself"):
        unpack(packed, packed)
    not_lds = tmp_path / "notes.txt"
    not_lds.write_text("hello")
    with pytest.raises(errors.LdsError):
        pack(not_lds, tmp_path / "n.lds.zst")  # only .lds files are packed


# --- the spec's JSON schema -----------------------------------------------------------------------------
def test_written_manifests_follow_the_json_schema(tiny_lds: Path) -> None:
    import jsonschema

    schema = json.loads((Path(__file__).parent.parent / "spec" / "manifest.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    with LdsReader(tiny_lds) as r:
        jsonschema.validate(r.manifest, schema)
        broken = json.loads(json.dumps(r.manifest))
    broken["integrity"]["tensors"]["latents"]["sha256"] = "xyz"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


# --- fuzzing --------------------------------------------------------------------------------------------
_FUZZ_BASE: dict[str, bytes] = {}


def _fuzz_base(tmp_path_factory) -> bytes:
    if "lds" not in _FUZZ_BASE:
        _FUZZ_BASE["lds"] = make_lds(tmp_path_factory.mktemp("fuzz") / "base.lds", n=10).read_bytes()
    return _FUZZ_BASE["lds"]


@settings(max_examples=150, deadline=None)
@given(
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.floats(0, 1)),
    header_bias=st.booleans(),
)
def test_fuzzed_files_fail_only_with_lds_errors(tmp_path_factory, edits, cut, header_bias) -> None:
    """Random byte edits and truncations: the reader returns a valid file or raises an LdsError, nothing else."""
    data = bytearray(_fuzz_base(tmp_path_factory))
    header_end = 8 + struct.unpack("<Q", data[:8])[0]
    for where, value in edits:
        span = header_end if header_bias else len(data)  # half the cases aim at the header and length
        data[int(where * span)] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    path = tmp_path_factory.mktemp("fz") / "f.lds"
    path.write_bytes(bytes(data))
    try:
        with open_lds(path) as r:
            r.verify()
            r.latents()
            r.labels()
    except errors.LdsError:
        pass


@pytest.mark.parametrize("text", ["1.0", "1.12", "0.0"])
def test_versions_are_major_dot_minor(text: str) -> None:
    assert spec.parse_version(text) == tuple(int(v) for v in text.split("."))


@pytest.mark.parametrize("text", [" 1 . 0 ", "1.0 ", "\uff11.0", "1.\u0660", "+1.0", "1_0.0", "1.0.0", "1", "", 1.0, None])
def test_version_parser_takes_ascii_digits_only(text) -> None:
    """The spec says MAJOR.MINOR; int() accepted spaces, signs, underscores and any script's digits."""
    with pytest.raises(ValueError):
        spec.parse_version(text)
