"""int8 latents (encoding "int8", a scale per dimension): round trip, error bound, hostile scales, merge, size."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import CLASSES, MEAN, STD

from latentds import LatentDataset
from latentds.errors import HeaderParseError, ManifestError
from latentds.format import LdsReader
from latentds.format import writer as writer_mod
from latentds.format.writer import quantize
from latentds.lds import image_spec, save_lds
from latentds.merge import merge
from latentds.models import create_model


def write(path: Path, latents: torch.Tensor, dtype: torch.dtype = torch.int8, **kwargs) -> Path:
    torch.manual_seed(0)
    g = create_model("biggan32_tiny", num_classes=len(CLASSES), width=4).eval()
    labels = torch.arange(len(latents)) % len(CLASSES)
    return save_lds(path, g, latents, labels, CLASSES, image_spec(MEAN, STD, g.contract.image_shape, g.contract.output_range), latent_dtype=dtype, **kwargs)


def test_quantize_error_is_half_a_step_and_requantizing_is_exact():
    z = torch.randn(200, 128, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.1, 3, 128)
    codes, scale = quantize(z)
    step = torch.tensor(scale)
    assert codes.dtype == torch.int8 and len(scale) == 128 and int(codes.abs().max()) == 127
    decoded = codes.float() * step
    assert ((decoded - z).abs() <= step / 2 + 1e-6).all()
    again, again_scale = quantize(decoded)
    assert torch.equal(again, codes) and again_scale == scale
    zero_codes, zero_scale = quantize(torch.zeros(2, 4))  # a dimension of zeros keeps a positive scale
    assert min(zero_scale) > 0 and not zero_codes.any()


def test_int8_file_round_trip_size_and_decoding(tmp_path):
    z = torch.randn(300, 128, generator=torch.Generator().manual_seed(1))
    fp16, int8 = write(tmp_path / "a.lds", z, torch.float16), write(tmp_path / "b.lds", z)
    r = LdsReader(int8, verify=True)
    assert r.manifest["format_version"] == "1.1" and r.manifest["latents"]["encoding"] == "int8"
    assert r.tensors["latents"].dtype == "I8" and set(r.tensors) == set(LdsReader(fp16).tensors)  # no new tensor
    assert r.verify() == []
    out = r.latents()
    assert out.dtype == torch.float32 and (out - z).abs().max() <= max(r.manifest["latents"]["scale"]) / 2 + 1e-6
    assert torch.equal(r.latents([5, 2]), out[[5, 2]]) and torch.equal(r.latents(slice(10, 20)), out[10:20])
    # the latents take a byte per value instead of two (the scales: 128 numbers in the manifest)
    saved = (tmp_path / "a.lds").stat().st_size - int8.stat().st_size
    assert saved >= 300 * 128 - 4096
    a = LatentDataset(fp16, normalize=False).decode(range(300))[0]
    b = LatentDataset(int8, normalize=False).decode(range(300))[0]
    assert (a - b).abs().mean() < 0.5 / 255


@pytest.mark.parametrize("bad", [0.0, -0.01, math.nan, math.inf, 1e5, "x", None])
def test_hostile_scales_are_refused_at_open(tmp_path, monkeypatch, bad):
    """A file whose hashes are consistent (written by a patched writer) but whose scales are not usable."""
    def lying(latents):
        codes, scale = quantize(latents)
        scale[7] = bad
        return codes, scale

    monkeypatch.setattr(writer_mod, "quantize", lying)
    monkeypatch.setattr(writer_mod, "validate_manifest", lambda m, where: None)  # a writer that checks nothing
    path = write(tmp_path / "bad.lds", torch.randn(20, 128))
    monkeypatch.undo()
    # NaN and infinity are not JSON: the manifest parser refuses them before the scale check does
    expected = (HeaderParseError, "not valid UTF-8 JSON") if isinstance(bad, float) and not math.isfinite(bad) \
        else (ManifestError, "latents.scale")
    with pytest.raises(expected[0], match=expected[1]):
        LdsReader(path)


def test_short_or_missing_scale_is_refused(tmp_path, monkeypatch):
    for lie in ([1.0] * 5, None):
        monkeypatch.setattr(writer_mod, "quantize", lambda latents, lie=lie: (quantize(latents)[0], lie))
        monkeypatch.setattr(writer_mod, "validate_manifest", lambda m, where: None)
        path = write(tmp_path / "bad.lds", torch.randn(20, 128))
        monkeypatch.undo()
        with pytest.raises(ManifestError, match=r"int8 latents need latents.scale"):
            LdsReader(path)


def test_merging_int8_files_requantizes_on_the_merged_scale(tmp_path):
    z = torch.randn(40, 128, generator=torch.Generator().manual_seed(2))
    z[20:] *= 10  # the second part has the larger range in every dimension: its scale wins
    a, b = write(tmp_path / "a.lds", z[:20]), write(tmp_path / "b.lds", z[20:])
    out = merge([a, b], tmp_path / "ab.lds")
    r, rb = LdsReader(out, verify=True), LdsReader(b)
    assert r.int8 and r.manifest["latents"]["scale"] == rb.manifest["latents"]["scale"]
    assert torch.equal(r.tensor("latents")[20:], rb.tensor("latents"))  # the widest part keeps its codes
    assert (r.latents() - z).abs().max() <= max(r.manifest["latents"]["scale"]) + 1e-6  # two half steps at most


def test_int8_manifest_follows_the_json_schema(tmp_path):
    import json

    import jsonschema

    schema = json.loads((Path(__file__).parent.parent / "spec" / "manifest.schema.json").read_text())
    manifest = LdsReader(write(tmp_path / "a.lds", torch.randn(10, 128))).manifest
    jsonschema.validate(manifest, schema)
    del manifest["latents"]["scale"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest, schema)


def test_info_shows_bytes_per_image_against_the_source(tmp_path, capsys):
    from latentds.cli import main

    torch.manual_seed(0)
    g = create_model("biggan32_tiny", num_classes=len(CLASSES), width=4).eval()
    source = {"name": "folder", "fingerprint": "ab" * 32, "num_images": 100, "bytes": 92_100}
    path = save_lds(tmp_path / "a.lds", g, torch.randn(50, 128), torch.arange(50) % 3, CLASSES,
                    image_spec(MEAN, STD, g.contract.image_shape, g.contract.output_range), provenance={"source": source}, latent_dtype=torch.int8)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    per = round(path.stat().st_size / 50)
    assert f"{per:,} bytes of file per image, generator included; the source: 921 bytes per image" in out
    assert "int8 codes x a scale per dimension" in out
