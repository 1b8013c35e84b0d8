"""`latentds import-itgan`: release-format files built here (BigGAN-PyTorch key names, SN u0/sv0 buffers) convert
into a verified .lds that decodes what the release's own forward pass makes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from latentds import errors
from latentds.cli import main
from latentds.dataset import LatentDataset
from latentds.format import LdsReader
from tests.fakedata import create_npz

G_CH, CLASSES, DIM = 4, 3, 128  # a narrow generator (G_ch 4: 16 channels) with the release's layout


def release_state(seed: int = 0, g_ch: int = G_CH, classes: int = CLASSES) -> dict[str, torch.Tensor]:
    """A generator state dict with the release's key names, shapes and SN buffers (random values)."""
    g = torch.Generator().manual_seed(seed)
    ch = 4 * g_ch
    sd: dict[str, torch.Tensor] = {}

    def sn(name: str, shape: tuple[int, ...]) -> None:
        sd[f"{name}.weight"] = torch.randn(*shape, generator=g) * 0.2
        sd[f"{name}.bias"] = torch.randn(shape[0], generator=g) * 0.1
        sd[f"{name}.u0"] = torch.randn(1, shape[0], generator=g)
        sd[f"{name}.sv0"] = torch.rand(1, generator=g) + 1  # the training-time record; decoding ignores it

    def ccbn(name: str) -> None:
        sd[f"{name}.gain.weight"] = torch.randn(classes, ch, generator=g) * 0.1
        sd[f"{name}.bias.weight"] = torch.randn(classes, ch, generator=g) * 0.1
        sd[f"{name}.stored_mean"] = torch.randn(ch, generator=g) * 0.1
        sd[f"{name}.stored_var"] = torch.rand(ch, generator=g) + 0.5

    sn("linear", (ch * 16, DIM))
    for i in range(3):
        ccbn(f"blocks.{i}.0.bn1")
        sn(f"blocks.{i}.0.conv1", (ch, ch, 3, 3))
        ccbn(f"blocks.{i}.0.bn2")
        sn(f"blocks.{i}.0.conv2", (ch, ch, 3, 3))
        sn(f"blocks.{i}.0.conv_sc", (ch, ch, 1, 1))
    sd["output_layer.0.gain"] = torch.rand(ch, generator=g) + 0.5
    sd["output_layer.0.bias"] = torch.randn(ch, generator=g) * 0.1
    sd["output_layer.0.stored_mean"] = torch.randn(ch, generator=g) * 0.1
    sd["output_layer.0.stored_var"] = torch.rand(ch, generator=g) + 0.5
    sn("output_layer.2", (3, ch, 3, 3))
    return sd


def release_forward(sd: dict[str, torch.Tensor], z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The release's eval-mode forward, written from BigGAN-PyTorch's layers (SN recomputed every call)."""

    def weight(name: str) -> torch.Tensor:
        w = sd[f"{name}.weight"]
        w_mat = w.view(w.shape[0], -1)
        u = sd[f"{name}.u0"]
        v = F.normalize(torch.matmul(u, w_mat), eps=1e-8)  # power_iteration(update=False), one step
        u = F.normalize(torch.matmul(v, w_mat.t()), eps=1e-8)
        sv = torch.squeeze(torch.matmul(torch.matmul(v, w_mat.t()), u.t()))
        return w / sv

    def ccbn(x: torch.Tensor, name: str) -> torch.Tensor:
        out = F.batch_norm(x, sd[f"{name}.stored_mean"], sd[f"{name}.stored_var"], None, None, False, 0.1, 1e-5)
        gain = (1 + F.embedding(y, sd[f"{name}.gain.weight"])).view(y.size(0), -1, 1, 1)
        return out * gain + F.embedding(y, sd[f"{name}.bias.weight"]).view(y.size(0), -1, 1, 1)

    h = F.linear(z, weight("linear"), sd["linear.bias"]).view(z.size(0), -1, 4, 4)
    for i in range(3):
        p = f"blocks.{i}.0"
        x = h
        h = F.interpolate(F.relu(ccbn(h, f"{p}.bn1")), scale_factor=2)
        x = F.interpolate(x, scale_factor=2)
        h = F.conv2d(h, weight(f"{p}.conv1"), sd[f"{p}.conv1.bias"], padding=1)
        h = F.conv2d(F.relu(ccbn(h, f"{p}.bn2")), weight(f"{p}.conv2"), sd[f"{p}.conv2.bias"], padding=1)
        h = h + F.conv2d(x, weight(f"{p}.conv_sc"), sd[f"{p}.conv_sc.bias"])
    o = "output_layer"
    h = F.batch_norm(h, sd[f"{o}.0.stored_mean"], sd[f"{o}.0.stored_var"], sd[f"{o}.0.gain"], sd[f"{o}.0.bias"],
                     False, 0.1, 1e-5)
    return torch.tanh(F.conv2d(F.relu(h), weight(f"{o}.2"), sd[f"{o}.2.bias"], padding=1))


class Evil:  # an arbitrary pickled object: torch.load(weights_only=True) refuses to build it
    pass


@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, Path, Path, dict, torch.Tensor]:
    sd = release_state()
    z = torch.randn(12, DIM, generator=torch.Generator().manual_seed(1))
    gpath, zpath = tmp_path / "G_Pretrained_toy_exp0.pth", tmp_path / "EfficientGAN_final_toy_ConvNet_lrz0.001_exp0.pt"
    torch.save(sd, gpath)
    torch.save({"z_eff_all": z}, zpath)
    labels_src = create_npz(tmp_path / "toy.npz", (3, 32, 32), per_class=4)
    return gpath, zpath, labels_src, sd, z


def test_import_round_trip_decodes_what_the_release_makes(release, tmp_path: Path) -> None:
    gpath, zpath, labels_src, sd, z = release
    out = tmp_path / "release.lds"
    assert main(["-q", "import-itgan", str(gpath), str(zpath), str(out), "--labels-from", str(labels_src)]) == 0
    with LdsReader(out, verify=True) as r:
        m = r.manifest
        assert m["num_samples"] == 12 and m["classes"] == ["a", "b", "c"] and m["generator"]["arch"] == "biggan32"
        assert m["provenance"]["release"]["latents_key"] == "z_eff_all"
        labels = r.labels()
    assert labels.tolist() == np.repeat(np.arange(3), 4).tolist()  # the source's order, row for row
    ds = LatentDataset(out, normalize=False, precision="fp32")
    images, _ = ds.decode(range(12))
    with torch.no_grad():
        expected = release_forward(sd, z, labels) * 0.5 + 0.5
    assert (images - expected).abs().max() < 1e-5


def test_cifar_names_get_the_release_normalization(release, tmp_path: Path, monkeypatch) -> None:
    from latentds import itgan, sources

    gpath, zpath, labels_src, _, _ = release
    real = sources.load_source
    monkeypatch.setattr(sources, "load_source", lambda spec, *a, **k: real(str(labels_src), *a, **k))
    out = itgan.import_itgan(gpath, zpath, "cifar10", tmp_path / "c.lds", progress=False)
    with LdsReader(out) as r:
        assert r.manifest["image"]["std"] == pytest.approx([0.2023, 0.1994, 0.2010])


def test_wrong_files_are_one_line_errors(release, tmp_path: Path, capsys) -> None:
    gpath, zpath, labels_src, sd, z = release
    bad_state = dict(sd)
    bad_state["blocks.0.0.attention.theta.weight"] = torch.zeros(1)
    torch.save(bad_state, tmp_path / "attn.pth")
    torch.save({"z_eff_all": z[:5]}, tmp_path / "short.pt")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    torch.save({"z_eff_all": Evil()}, tmp_path / "evil.pt")
    for g, zf, match in (
        (tmp_path / "attn.pth", zpath, "unexpected tensors"),
        (gpath, tmp_path / "short.pt", "5 latents but"),
        (tmp_path / "junk.pth", zpath, "cannot be read"),
        (gpath, tmp_path / "evil.pt", "cannot be read"),
    ):
        code = main(["import-itgan", str(g), str(zf), str(tmp_path / "x.lds"), "--labels-from", str(labels_src)])
        err = capsys.readouterr().err
        assert code == 1 and err.count("\n") == 1 and match in err, err
        assert not (tmp_path / "x.lds").exists()
    with pytest.raises(errors.ReleaseFormatError, match="z_inverse_all"):
        from latentds.itgan import import_itgan

        torch.save({"other": z}, tmp_path / "other.pt")
        import_itgan(gpath, tmp_path / "other.pt", str(labels_src), tmp_path / "y.lds", progress=False)


def test_a_deflated_record_is_refused_before_loading(tmp_path: Path) -> None:
    """torch.save stores records uncompressed; a deflated one is inflated whole by torch.load (a 255 KiB record
    cost +200 MiB), so it is refused from the zip's directory before anything is loaded."""
    import zipfile

    from latentds.itgan import import_itgan

    plain = tmp_path / "plain.pth"
    torch.save({"linear.weight": torch.zeros(1024, 1024)}, plain)  # 4 MiB of zeros
    packed = tmp_path / "G_Pretrained_CIFAR10_exp0.pth"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert packed.stat().st_size < 100_000
    with pytest.raises(errors.ReleaseFormatError, match="compressed and inflates"):
        import_itgan(packed, packed, "cifar10", tmp_path / "out.lds")
