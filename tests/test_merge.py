"""``latentds merge``: files that share a generator combine into one; files that do not are refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import CLASSES, make_lds

from latentds.cli import main
from latentds.errors import MergeError
from latentds.format import LdsReader
from latentds.lds import load_generator, open_lds, save_lds
from latentds.merge import generator_digest, merge


def split(path: Path, tmp_path: Path, cut: int, dtypes=(None, None)) -> tuple[Path, Path]:
    """Rows [0, cut) and [cut, N) of a file as two files with its generator (rebuilt, so a real round trip)."""
    with open_lds(path) as r:
        gen, lat, lab, m = load_generator(r), r.latents(), r.labels(), r.manifest
        parts = []
        for i, rows in enumerate((slice(0, cut), slice(cut, None))):
            parts.append(save_lds(tmp_path / f"part{i}.lds", gen, lat[rows], lab[rows], m["classes"], m["image"],
                                  {"method": f"part {i}"}, latent_dtype=dtypes[i] or lat.dtype))
    return parts[0], parts[1]


def test_merge_round_trips_a_split_file(tiny_lds, tmp_path):
    a, b = split(tiny_lds, tmp_path, 10)
    out = merge([a, b], tmp_path / "merged.lds")
    orig, merged = LdsReader(tiny_lds), LdsReader(out, verify=True)
    assert torch.equal(merged.latents(), orig.latents()) and torch.equal(merged.labels(), orig.labels())
    assert merged.generator_state().keys() == orig.generator_state().keys()
    for k, v in orig.generator_state().items():
        assert torch.equal(merged.generator_state()[k], v), k
    assert generator_digest(merged.manifest) == generator_digest(orig.manifest)
    prov = merged.manifest["provenance"]
    assert prov["method"] == "merge" and [p["rows"] for p in prov["parts"]] == [[0, 10], [10, 24]]
    assert [p["provenance"]["method"] for p in prov["parts"]] == ["part 0", "part 1"]
    assert all(len(p["sha256"]) == 64 for p in prov["parts"])
    # a merged file merges again with new rows, since its generator is the same
    with open_lds(a) as r:
        m = r.manifest
        new = save_lds(tmp_path / "new.lds", load_generator(r), torch.randn(5, 128), torch.zeros(5, dtype=torch.long),
                       m["classes"], m["image"])
    assert LdsReader(merge([out, new], tmp_path / "again.lds")).num_samples == 29


def test_mixed_latent_dtypes_widen_to_float32(tiny_lds, tmp_path):
    a, b = split(tiny_lds, tmp_path, 5, dtypes=(torch.float16, torch.bfloat16))
    out = merge([a, b], tmp_path / "m.lds")
    r = LdsReader(out)
    assert r.tensors["latents"].dtype == "F32"
    assert torch.equal(r.latents()[:5], LdsReader(a).latents().float())
    h = LdsReader(merge([a, b], tmp_path / "h.lds", latent_dtype=torch.float16))  # asked for: fp16
    assert h.tensors["latents"].dtype == "F16" and torch.equal(h.latents()[:5], LdsReader(a).latents())


def test_different_generators_are_refused(tmp_path):
    a = make_lds(tmp_path / "a.lds", seed=0)
    b = make_lds(tmp_path / "b.lds", seed=1)
    with pytest.raises(MergeError, match="different generators"):
        merge([a, b], tmp_path / "m.lds")
    assert not (tmp_path / "m.lds").exists()


def test_different_classes_are_refused(tiny_lds, tmp_path):
    other = make_lds(tmp_path / "other.lds", classes=[c.upper() for c in CLASSES])
    with pytest.raises(MergeError, match="class lists"):
        merge([tiny_lds, other], tmp_path / "m.lds")


def test_different_image_specs_are_refused(tiny_lds, tmp_path):
    with open_lds(tiny_lds) as r:
        gen, m = load_generator(r), r.manifest
        other = save_lds(tmp_path / "other.lds", gen, r.latents(), r.labels(), m["classes"],
                         {**m["image"], "mean": [0.0, 0.0, 0.0]})
    with pytest.raises(MergeError, match="image specs .*mean"):
        merge([tiny_lds, other], tmp_path / "m.lds")


def test_same_file_twice_and_output_among_inputs_are_refused(tiny_lds, tmp_path):
    copy = tmp_path / "copy.lds"
    copy.write_bytes(tiny_lds.read_bytes())
    with pytest.raises(MergeError, match="given twice"):
        merge([tiny_lds, copy], tmp_path / "m.lds")
    with pytest.raises(MergeError, match="also an input"):
        merge([tiny_lds, copy], copy)
    with pytest.raises(MergeError, match="at least two"):
        merge([tiny_lds], tmp_path / "m.lds")


def test_corrupt_input_is_refused(tiny_lds, tmp_path):
    a, b = split(tiny_lds, tmp_path, 10)
    data = bytearray(b.read_bytes())
    data[-3] ^= 0xFF  # a generator byte near the end
    b.write_bytes(bytes(data))
    with pytest.raises(Exception, match="sha256|checksum|CORRUPT|does not match"):
        merge([a, b], tmp_path / "m.lds")
    assert not (tmp_path / "m.lds").exists()


def test_merge_command(tiny_lds, tmp_path, capsys):
    a, b = split(tiny_lds, tmp_path, 7)
    out = tmp_path / "cli.lds"
    assert main(["merge", str(a), str(b), str(out)]) == 0
    assert "24 latents from 2 files" in capsys.readouterr().out
    assert main(["merge", str(a), str(out)]) == 2  # only one input: a usage error
    assert "at least two inputs" in capsys.readouterr().err
    other = make_lds(tmp_path / "other.lds", seed=5)
    assert main(["merge", str(a), str(other), str(tmp_path / "x.lds")]) == 1
    assert "different generators" in capsys.readouterr().err
    assert main(["merge", str(a), str(tmp_path / "missing.lds"), str(tmp_path / "x.lds")]) == 2
    assert not (tmp_path / "x.lds").exists()


def test_overlapping_parts_are_refused(tiny_lds, tmp_path):
    a, _ = split(tiny_lds, tmp_path, 10)
    with pytest.raises(MergeError, match="overlap"):
        merge([a, tiny_lds], tmp_path / "m.lds")


def test_info_names_the_parts(tiny_lds, tmp_path, capsys):
    a, b = split(tiny_lds, tmp_path, 10)
    merge([a, b], tmp_path / "m.lds")
    assert main(["info", str(tmp_path / "m.lds")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^merged from +2 files: part0.lds \[0:10\], part1.lds \[10:24\]$", out, re.MULTILINE), out
