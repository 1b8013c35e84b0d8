"""Files from strangers: hand-made hostile .lds files, each refused with one specific library error.

Every file here is re-signed (manifest sha256 and tensor hashes recomputed), as a hostile sender would: the
reader must not rely on the hashes to catch what the values say.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latentds import errors
from latentds.dataset import LatentDataset
from latentds.format import LdsReader, spec
from latentds.lds import open_lds
from tests.conftest import make_lds


def _split(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _write(path: Path, header: dict[str, Any] | str, data: bytes) -> Path:
    text = (header if isinstance(header, str) else json.dumps(header)).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def resign(header: dict[str, Any], manifest: dict[str, Any], data: bytes | None = None) -> dict[str, Any]:
    """Put ``manifest`` into ``header`` with a matching sha256; rehash the tensors if ``data`` is given."""
    if data is not None:
        for name, info in header.items():
            if name != "__metadata__":
                lo, hi = info["data_offsets"]
                manifest["integrity"]["tensors"][name]["sha256"] = hashlib.sha256(data[lo:hi]).hexdigest()
        lat = header[spec.LATENTS]
        lo, hi = lat["data_offsets"]
        rows = int(manifest["integrity"]["latents_chunk_rows"])
        row_bytes = (hi - lo) // max(lat["shape"][0], 1)
        manifest["integrity"]["latents_chunks"] = [
            hashlib.sha256(data[lo + i * row_bytes : min(hi, lo + (i + rows) * row_bytes)]).hexdigest()
            for i in range(0, lat["shape"][0], rows)
        ]
    text = json.dumps(manifest)
    header["__metadata__"] = {spec.META_MANIFEST: text,
                              spec.META_MANIFEST_SHA256: hashlib.sha256(text.encode()).hexdigest()}
    return header


def mutated(src: Path, out: Path, change: Callable[[dict, dict, bytearray], None]) -> Path:
    """A copy of ``src`` with ``change(header, manifest, data)`` applied and everything re-signed."""
    header, data = _split(src)
    manifest = json.loads(header["__metadata__"][spec.META_MANIFEST])
    data = bytearray(data)
    change(header, manifest, data)
    return _write(out, resign(header, manifest, bytes(data)), bytes(data))


@pytest.fixture
def lds(tmp_path: Path) -> Path:
    return make_lds(tmp_path / "good.lds", n=12)


def _poison_latents(header: dict, manifest: dict, data: bytearray) -> None:
    lo, _ = header[spec.LATENTS]["data_offsets"]
    data[lo : lo + 4] = np.float32(np.nan).tobytes()  # row 0, element 0 (stored float32)


def test_nan_latents_are_refused_by_verify_and_decoding(lds: Path, tmp_path: Path) -> None:
    bad = mutated(lds, tmp_path / "nan.lds", _poison_latents)
    with open_lds(bad) as r:  # opening reads no tensor values
        problems = r.verify()
    assert any("NaN or infinite" in p for p in problems)
    ds = LatentDataset(bad, device="cpu")
    with pytest.raises(errors.NonFiniteError, match="latents"):
        ds[0]
    ds[1]  # other rows decode: only the rows read are checked


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_nan_in_half_precision_latents_is_found_by_verify(tmp_path: Path, dtype: str) -> None:
    import torch

    src = make_lds(tmp_path / "half.lds", n=12, latent_dtype=getattr(torch, dtype))

    def poison(header: dict, manifest: dict, data: bytearray) -> None:
        lo, _ = header[spec.LATENTS]["data_offsets"]
        data[lo + 2 : lo + 4] = (b"\x00\x7e" if dtype == "float16" else b"\xc0\x7f")  # row 0, element 1: NaN

    with open_lds(mutated(src, tmp_path / "nan.lds", poison)) as r:
        assert r.verify() == ["tensor 'latents' holds 1 NaN or infinite values"]


def test_nan_generator_weights_are_refused(lds: Path, tmp_path: Path) -> None:
    def poison(header: dict, manifest: dict, data: bytearray) -> None:
        name = next(k for k, v in header.items() if k.startswith(spec.GENERATOR_PREFIX) and v["dtype"] == "F32")
        lo, _ = header[name]["data_offsets"]
        data[lo : lo + 4] = np.float32(np.inf).tobytes()

    bad = mutated(lds, tmp_path / "inf.lds", poison)
    with pytest.raises(errors.NonFiniteError):
        LatentDataset(bad, device="cpu")[0]


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda h, m, d: m["generator"]["args"].update(num_classes=2), errors.GeneratorKeysError, "classes"),
        (lambda h, m, d: m["generator"]["args"].update(latent_dim=64), errors.GeneratorKeysError, "latent"),
        (lambda h, m, d: m["generator"]["args"].update(bottom_width=8), errors.GeneratorKeysError, "64x64"),
        (lambda h, m, d: m["generator"].update(arch="convnet3", args={"num_classes": 3}), errors.GeneratorKeysError,
         "not a generator"),
        (lambda h, m, d: m["generator"]["args"].update(width=10**9), errors.GeneratorKeysError, "cannot be built"),
        (lambda h, m, d: m["image"].update(generator_range=[1.0, 1.0]), errors.ManifestError, "lo < hi"),
        (lambda h, m, d: m["image"].update(height=100_000), errors.ManifestError, "image.height"),
        (lambda h, m, d: m["integrity"].update(latents_chunk_rows=2**63), errors.ManifestError, "latent chunks"),
        (lambda h, m, d: m.update(classes=["cat", "dog", "sh\x1b[2Jip"]), errors.ManifestError, "printable"),
        (lambda h, m, d: m.update(format_version=1.0), errors.ManifestError, "format_version"),
    ],
    ids=["classes", "latent-dim", "image-size", "convnet-as-generator", "width-1e9", "range", "height",
         "chunk-rows", "control-chars", "numeric-version"],
)
def test_files_that_verify_must_decode(lds: Path, tmp_path: Path, change, error, match: str) -> None:
    bad = mutated(lds, tmp_path / "bad.lds", change)
    with pytest.raises(error, match=match):
        open_lds(bad)
    assert issubclass(error, errors.LdsError)


def test_integer_generator_weights_are_refused(lds: Path, tmp_path: Path) -> None:
    def to_int(header: dict, manifest: dict, data: bytearray) -> None:
        name = next(k for k, v in header.items() if k.endswith(".weight") and v["dtype"] == "F32")
        header[name]["dtype"] = "I32"  # same byte size: only the meaning changes
        manifest["integrity"]["tensors"][name]["dtype"] = "I32"

    with pytest.raises(errors.GeneratorKeysError, match="dtype I32"):
        open_lds(mutated(lds, tmp_path / "int.lds", to_int))


def test_slow_open_is_bounded(lds: Path, tmp_path: Path) -> None:
    def deep(header: dict, manifest: dict, data: bytearray) -> None:
        manifest["generator"].update(arch="convnet3", args={"depth": 14_000})

    start = time.perf_counter()
    with pytest.raises(errors.GeneratorKeysError):
        open_lds(mutated(lds, tmp_path / "deep.lds", deep))
    assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize(
    ("header_text", "match"),
    [
        ("[" * 100_000 + "]" * 100_000, "nests too deeply|not valid"),
        ('{"a": ' + "9" * 5000 + "}", "not valid"),
        ('{"latents": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
         '"latents": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', "duplicate"),
        ('{"x": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}', "dtype"),
        ('{"x": {"dtype": "F32", "shape": [true], "data_offsets": [0, 4]}}', "shape"),
        ('{"x": {"dtype": "F32", "shape": [300, 4611686018427387904], "data_offsets": [0, 0]}}', "need"),
    ],
    ids=["deep", "huge-int", "duplicate-keys", "dtype-list", "bool-dim", "size-wraparound"],
)
def test_hostile_headers(tmp_path: Path, header_text: str, match: str) -> None:
    bad = _write(tmp_path / "bad.lds", header_text, b"\0" * 4)
    with pytest.raises(errors.LdsError, match=match):
        LdsReader(bad)


def test_unaligned_header_length_is_refused(lds: Path, tmp_path: Path) -> None:
    header, data = _split(lds)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8 + 3)  # padded to 8k + 3 bytes
    bad = tmp_path / "unaligned.lds"
    bad.write_bytes(struct.pack("<Q", len(text)) + text + data)
    with pytest.raises(errors.HeaderLengthError, match="multiple of 8"):
        LdsReader(bad)


def test_unknown_tensor_is_refused_even_when_listed(lds: Path, tmp_path: Path) -> None:
    def smuggle(header: dict, manifest: dict, data: bytearray) -> None:
        end = len(data)
        data.extend(b"\0" * 8)
        header["payload"] = {"dtype": "U8", "shape": [8], "data_offsets": [end, end + 8]}
        manifest["integrity"]["tensors"]["payload"] = {"dtype": "U8", "shape": [8], "sha256": ""}

    with pytest.raises(errors.TensorMismatchError, match="payload"):
        LdsReader(mutated(lds, tmp_path / "extra.lds", smuggle))


def test_dataset_refuses_a_file_replaced_after_it_was_created(lds: Path, tmp_path: Path) -> None:
    import pickle

    ds = LatentDataset(lds, device="cpu")
    other = make_lds(tmp_path / "other.lds", n=12, seed=5)
    lds.write_bytes(other.read_bytes())  # replaced between the parent's check and a worker's reopen
    worker_copy = pickle.loads(pickle.dumps(ds))
    with pytest.raises(errors.LdsError, match="changed"):
        worker_copy[0]


def test_info_escapes_control_characters_from_provenance(lds: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    def inject(header: dict, manifest: dict, data: bytearray) -> None:
        manifest["provenance"]["source"] = {"name": "evil\x1b]0;pwned\x07", "bytes": 5}
        manifest["provenance"]["tool"] = "\x9b2Jtool"
        manifest["extra\x1b[2J"] = {"unknown": ["\x1b]8;;x\x07", 1e308]}  # unknown fields: allowed, shown escaped

    bad = mutated(lds, tmp_path / "evil.lds", inject)
    out = subprocess.run([sys.executable, "-m", "latentds", "info", str(bad)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout and "\x07" not in out.stdout and "\x9b" not in out.stdout
    assert "evil\\x1b]0;pwned\\x07" in out.stdout and "extra\\x1b[2J" in out.stdout


def test_export_keeps_classes_whose_names_clean_up_alike(tmp_path: Path) -> None:
    from latentds.export import export

    src = make_lds(tmp_path / "names.lds", n=6, classes=["a/b", "a_b", "A_B"])
    out = export(src, tmp_path / "png", progress=False)
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())  # beside them: the export's marker file
    assert len(folders) == 3 and all(len(list((out / f).iterdir())) == 2 for f in folders)


@pytest.mark.parametrize("field", ["channels", "mean", "generator_range"])
def test_huge_integers_in_the_manifest_are_manifest_errors(lds: Path, tmp_path: Path, field: str) -> None:
    """Found by tools/fuzz_lds.py: a 400-digit integer once escaped as OverflowError from float conversions."""
    huge = 10**400

    def change(header: dict, manifest: dict, data: bytearray) -> None:
        manifest["image"][field] = huge if field == "channels" else [huge] * len(manifest["image"][field])

    with pytest.raises(errors.ManifestError):
        open_lds(mutated(lds, tmp_path / "huge.lds", change))


def test_fuzz_smoke(tmp_path: Path) -> None:
    """The fuzzer's first inputs end in the library's own errors (the campaign itself is tools/fuzz_lds.py)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "tools/fuzz_lds.py", "--inputs", "120", "--chunk", "60", "--out", str(tmp_path / "f.json"),
                          "--crashes", str(tmp_path / "crashes")], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent)
    result = json.loads((tmp_path / "f.json").read_text())
    assert out.returncode == 0 and result["failures"] == {} and result["slow_over_5s_cpu"] == 0, out.stdout[-800:]
    assert result["inputs"] == 120 and sum(sum(k.values()) for k in result["by_mutation"].values()) == 120


# --- round 2 (issue 26): every field typed, every resource bounded, every output checked -------------------------
RAW_CONTROL = ("\x1b", "\x07", "\x9b", "\x00")


def _resigned_text(lds: Path, out: Path, text: str) -> Path:
    """``lds`` with its manifest replaced by the JSON ``text`` verbatim (e.g. holding 1e400), re-signed."""
    header, data = _split(lds)
    header["__metadata__"] = {spec.META_MANIFEST: text,
                              spec.META_MANIFEST_SHA256: hashlib.sha256(text.encode()).hexdigest()}
    return _write(out, header, data)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m: m["provenance"].update(source={"name": "x", "bytes": 1e-300}), "provenance.source.bytes"),
        (lambda m: m["provenance"].update(source="a string where an object belongs"), "provenance.source"),
        (lambda m: m["provenance"].update(created=["not", "text"]), "provenance.created"),
        (lambda m: m["provenance"].update(parts=[{"file": "a", "rows": "0:5"}]), r"provenance.parts\[0\].rows"),
        (lambda m: m["generator"].update(param_count=-5), "generator.param_count"),
        (lambda m: m["generator"]["args"].update(width=[[[1]]]), "generator.args.width"),
        (lambda m: m["integrity"]["tensors"]["labels"].update(dtype="\x1b]0;x\x07"), "integrity.tensors.labels"),
        (lambda m: m["image"].update(std=[1e-300, 1, 1]), "image.std"),
        (lambda m: m["image"].update(mean=[1e300, 0, 0]), "image.mean"),
        (lambda m: m.update(format_version=" 1 . 0 "), "format_version"),
        (lambda m: m.update(format_version="\uff11.0"), "format_version"),
    ],
    ids=["bytes-1e-300", "source-string", "created-list", "parts-rows", "param-count", "args-nested", "sha-escape",
         "std-1e-300", "mean-1e300", "spaced-version", "fullwidth-version"],
)
def test_every_manifest_field_is_typed_at_open(lds: Path, tmp_path: Path, change, match: str) -> None:
    """Optional and provenance fields reached the printers unchecked; now the schema refuses them at open, in one
    escaped line."""
    bad = mutated(lds, tmp_path / "bad.lds", lambda h, m, d: change(m))
    with pytest.raises((errors.ManifestError, errors.UnsupportedVersionError), match=match) as info:
        open_lds(bad)
    assert not any(c in str(info.value) for c in RAW_CONTROL)


@pytest.mark.parametrize("literal", ["1e400", "-1e400"])
def test_numbers_beyond_a_float_are_refused_at_parse(lds: Path, tmp_path: Path, literal: str) -> None:
    header, _ = _split(lds)
    manifest = header["__metadata__"][spec.META_MANIFEST]
    bad = _resigned_text(lds, tmp_path / "big.lds", manifest[:-1] + f', "extra": {literal}}}')
    with pytest.raises(errors.HeaderParseError, match="float"):
        open_lds(bad)


@pytest.mark.parametrize("where", ["provenance", "key"])
def test_unpaired_surrogates_are_refused_at_parse(lds: Path, tmp_path: Path, where: str) -> None:
    """A \\ud800 escape is valid JSON but no text: merging such a file crashed the writer with UnicodeEncodeError
    (found by tools/fuzz_lds.py)."""
    def change(h: dict, m: dict, d: bytearray) -> None:
        if where == "key":
            m["provenance"]["\ud800"] = 1
        else:
            m["provenance"]["tool"] = "x\udc00"

    with pytest.raises(errors.HeaderParseError, match="not valid Unicode"):
        open_lds(mutated(lds, tmp_path / "s.lds", change))


def test_nesting_depth_is_bounded(lds: Path, tmp_path: Path) -> None:
    header, _ = _split(lds)
    manifest = header["__metadata__"][spec.META_MANIFEST]
    bad = _resigned_text(lds, tmp_path / "deep.lds", manifest[:-1] + ', "extra": ' + "[" * 100 + "]" * 100 + "}")
    with pytest.raises(errors.HeaderParseError, match="deeper"):
        open_lds(bad)


def test_unknown_fields_of_any_shape_are_shown_escaped(lds: Path, tmp_path: Path, capsys) -> None:
    """Extra fields stay allowed (forward compatibility) and every printer renders them whatever they hold."""
    from latentds.cli import main

    def extra(h: dict, m: dict, d: bytearray) -> None:
        m.update({"x\x1b[2J": 1e308, "tiny": 5e-324, "empty": [], "obj": {}, "text": "\x1b]0;t\x07",
                  "long": list(range(1000)), "big": 10**300})
        m["image"]["note\x9b"] = "\x1b[31m"
        m["provenance"]["losses"] = {"curve": []}

    bad = mutated(lds, tmp_path / "extra.lds", extra)
    for argv in (["info", str(bad)], ["info", "--json", str(bad)], ["verify", str(bad)]):
        assert main(argv) == 0
        out, err = capsys.readouterr()
        assert not any(c in out + err for c in RAW_CONTROL), argv
    assert main(["info", str(bad)]) == 0 and "x\\x1b[2J" in capsys.readouterr().out


def test_decode_refuses_non_finite_output(lds: Path, tmp_path: Path) -> None:
    """Finite weights can still decode to NaN (a negative batch-norm variance): refused, not returned."""
    def negative_var(header: dict, manifest: dict, data: bytearray) -> None:
        lo, hi = header["generator.out_bn.running_var"]["data_offsets"]
        data[lo:hi] = np.full((hi - lo) // 4, -1.0, dtype=np.float32).tobytes()

    bad = mutated(lds, tmp_path / "nan.lds", negative_var)
    ds = LatentDataset(bad, device="cpu")
    with pytest.raises(errors.NonFiniteError, match="NaN or infinite"):
        ds[0]


def test_memory_budget_is_checked_before_anything_is_built(lds: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from latentds.budget import ResourceLimitError
    from latentds.cli import main

    monkeypatch.setenv("LATENTDS_MAX_MEMORY", "64K")
    with pytest.raises(ResourceLimitError, match="LATENTDS_MAX_MEMORY"):
        LatentDataset(lds)
    assert main(["-q", "export", str(lds), str(tmp_path / "x.npz")]) == 1
    assert not list(tmp_path.glob("*x.npz*")) and "GiB" in capsys.readouterr().err
    monkeypatch.delenv("LATENTDS_MAX_MEMORY")
    assert main(["-q", "preview", str(lds), str(tmp_path / "p.png"), "--max-memory", "64K"]) == 1
    assert main(["-q", "preview", str(lds), str(tmp_path / "p.png"), "--max-memory", "lots"]) == 2
    assert main(["-q", "preview", str(lds), str(tmp_path / "p.png")]) == 0


def test_estimate_counts_weights_and_activations() -> None:
    """A 65,536-class BigGAN is 1.5 GiB of embeddings; a 1024x1024 one has 1 GiB activations per image."""
    import torch

    from latentds.budget import estimate_decode, largest_activation
    from latentds.models import create_model

    with torch.device("meta"):
        wide = create_model("biggan", num_classes=65536, width=64)
    est = estimate_decode(sum(p.numel() for p in wide.parameters()), None, (3, 32, 32), 16)
    assert est.weight_bytes > 1.5 * 2**30
    tall = largest_activation(lambda: create_model("biggan", num_classes=10, width=64, image_size=1024), 128)
    assert tall == 256 * 1024 * 1024  # the last block's output: 256 channels at 1024x1024


def _zst_with_inner(header_change: Callable[[dict], None], src: Path, out: Path) -> Path:
    import zstandard

    header, data = _split(src)
    header_change(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    raw = struct.pack("<Q", len(text)) + text + data
    out.write_bytes(zstandard.ZstdCompressor(write_checksum=True, write_content_size=True).compress(raw))
    return out


@pytest.mark.parametrize("offset", [float("inf"), 1e300, "12", -8])
def test_zst_inner_header_is_parsed_strictly(lds: Path, tmp_path: Path, offset) -> None:
    """An infinite offset gave OverflowError in info, verify and unpack."""
    from latentds.cli import main
    from latentds.format import unpack

    bad = _zst_with_inner(lambda h: h[spec.LABELS]["data_offsets"].__setitem__(1, offset), lds, tmp_path / "b.lds.zst")
    with pytest.raises(errors.CompressionError):
        LdsReader(bad)
    with pytest.raises(errors.CompressionError):
        unpack(bad, tmp_path / "u.lds")
    assert main(["-q", "verify", str(bad)]) == 1


def test_large_zst_is_inflated_to_a_temporary_file(lds: Path, tmp_path: Path, monkeypatch) -> None:
    import mmap

    from latentds.format import compress, pack

    packed = pack(lds, tmp_path / "a.lds.zst")
    monkeypatch.setattr(compress, "IN_MEMORY_BYTES", 1024)
    with LdsReader(packed) as r, LdsReader(lds) as plain:
        assert isinstance(r._data, mmap.mmap) and r.verify() == []
        assert np.array_equal(r.array(spec.LATENTS), plain.array(spec.LATENTS))


def test_a_preview_of_65536_classes_is_refused_before_decoding(tmp_path: Path) -> None:
    """A 65,536-class file made preview grow past 3 GiB: its grid is refused from the class count alone."""
    import torch

    from latentds.budget import ResourceLimitError
    from latentds.export import preview
    from latentds.lds import image_spec, save_lds
    from latentds.models import create_model

    k = 65_536
    g = create_model("biggan", num_classes=k, width=1, image_size=16, channels=1).eval()
    src = save_lds(tmp_path / "k.lds", g, torch.zeros(2, 128), torch.arange(2), [f"c{i}" for i in range(k)],
                   image_spec([0.5], [0.25], (1, 16, 16), (-1.0, 1.0)))
    start = time.monotonic()
    with pytest.raises(ResourceLimitError, match="pixels"):
        preview(src, tmp_path / "grid.png")
    assert time.monotonic() - start < 20 and not (tmp_path / "grid.png").exists()
