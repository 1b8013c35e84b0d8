"""Any image size and channel count, end to end: 1x28x28 folders, 3x64x64 arrays and a toy 1x16x16 generator
registered by the test itself (adding a generator = a model file + a registry entry)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from latentds import LatentDataset
from latentds.encoding import pipeline
from latentds.encoding.presets import apply_overrides, load_preset
from latentds.evaluation import EvalConfig, train_and_test, training_set
from latentds.export import export
from latentds.format import LdsReader
from latentds.models import (
    GeneratorContract,
    apply_spectral_norm,
    register_model,
    unregister_model,
)
from latentds.models.registry import check_int
from latentds.sources import load_source, load_test_source
from tests.fakedata import create_image_folder, create_npz

pytestmark = pytest.mark.usefixtures("one_thread")

# The smoke preset, shrunk to seconds: a few GAN steps, one unit per class.
FAST = [
    "gan.iterations=4", "gan.ema_start=2", "gan.checkpoint_every=2", "gan.batch_size=4",
    "classifier.epochs=1", "invert.iterations=2", "condense.iterations=2", "condense.batch_syn=2",
    "condense.batch_real=4", "condense.eval_nets=1", "device=cpu", "ipc=3",
]


def encode(source: Path, out: Path, *extra: str) -> Path:
    cfg = apply_overrides(load_preset("smoke"), FAST + list(extra))
    return pipeline.run(str(source), out, cfg, progress=False, quiet=True)


@pytest.fixture(scope="module")
def grey28(tmp_path_factory) -> Path:
    return create_image_folder(tmp_path_factory.mktemp("g28") / "data", (1, 28, 28), splits=("train", "test"))


@pytest.fixture(scope="module")
def grey28_lds(grey28, tmp_path_factory) -> Path:
    return encode(grey28, tmp_path_factory.mktemp("out") / "g28.lds")


def test_grey_28_encodes_at_its_true_shape(grey28_lds):
    with LdsReader(grey28_lds, verify=True) as r:
        m = r.manifest
        assert (m["image"]["channels"], m["image"]["height"], m["image"]["width"]) == (1, 28, 28)
        assert m["generator"]["arch"] == "biggan" and m["generator"]["args"]["channels"] == 1
        assert len(m["image"]["mean"]) == 1 and m["num_samples"] == 9
    ds = LatentDataset(grey28_lds, device="cpu")
    x, y = ds[0]
    assert ds.image_shape == (1, 28, 28) and x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert torch.isfinite(x).all()


def test_grey_export_round_trip_stays_one_channel(grey28_lds, tmp_path):
    out = export(grey28_lds, tmp_path / "png", progress=False)
    files = sorted(out.rglob("*.png"))
    assert len(files) == 9 and all(Image.open(f).mode == "L" for f in files)
    back = load_source(str(out), progress=False)
    assert back.image_shape == (1, 28, 28) and len(back) == 9
    npz = export(grey28_lds, tmp_path / "x.npz", progress=False)
    assert load_source(str(npz)).image_shape == (1, 28, 28)


def test_cli_info_counts_true_pixels(grey28_lds):
    out = subprocess.run([sys.executable, "-m", "latentds", "info", str(grey28_lds)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "1x28x28" in out.stdout
    raw = 9 * 1 * 28 * 28 / 2**20
    assert f"{raw:.2f} MiB as uint8" in out.stdout  # the true 1x28x28 pixels, not a widened 3x32x32


def test_eval_on_real_grey_data_and_class_root_test(grey28, tmp_path):
    cfg = EvalConfig(epochs=1, seeds=1, batch_size=8, device="cpu", precision="fp32")
    train = training_set(str(grey28), ipc=3)
    assert train.image_shape == (1, 28, 28)
    test = load_test_source(str(grey28), progress=False)  # DIR/test/
    assert train_and_test(train, test, cfg).accs[0] >= 0.0
    class_root = create_image_folder(tmp_path / "flat", (1, 28, 28), per_class=2)  # DIR/<class>/: no splits
    assert len(load_test_source(str(class_root), progress=False)) == 6
    npz = create_npz(tmp_path / "t.npz", (1, 28, 28), per_class=2)  # images/labels only
    assert len(load_test_source(str(npz))) == 6
    both = create_npz(tmp_path / "tt.npz", (1, 28, 28), per_class=2, test_per_class=1)  # has a test split: used
    assert len(load_test_source(str(both))) == 3


def test_rgb_64_npz_encodes_with_a_64px_generator(tmp_path):
    src = create_npz(tmp_path / "c64.npz", (3, 64, 64), per_class=4)
    out = encode(src, tmp_path / "c64.lds")
    with LdsReader(out, verify=True) as r:
        assert r.manifest["generator"]["args"]["image_size"] == 64
    ds = LatentDataset(out, device="cpu")
    assert ds.image_shape == (3, 64, 64) and ds[len(ds) - 1][0].shape == (3, 64, 64)


def test_image_size_resizes_before_encoding(grey28, tmp_path):
    out = encode(grey28, tmp_path / "g32.lds", "image_size=32")
    assert LatentDataset(out, device="cpu").image_shape == (1, 32, 32)


def test_a_fixed_size_generator_refuses_other_data(grey28, tmp_path):
    from latentds.errors import UnsupportedImageError

    with pytest.raises(UnsupportedImageError, match=r"1x28x28 .* biggan32 makes 3x32x32.*gan.arch=biggan"):
        encode(grey28, tmp_path / "x.lds", "gan.arch=biggan32")


# --- a generator added by a user: one class + one registry entry -------------------------------------------
class ToyGenerator(nn.Module):
    """z and a class embedding -> a 1x16x16 image through one linear layer (the smallest contract-keeping G)."""

    def __init__(self, num_classes: int, latent_dim: int, width: int, spectral_norm: bool):
        super().__init__()
        self.contract = GeneratorContract(latent_dim, num_classes, (1, 16, 16))
        self.embed = nn.Embedding(num_classes, latent_dim)
        self.hidden = nn.Linear(latent_dim, width)
        self.out = nn.Linear(width, 16 * 16)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.hidden(z + self.embed(y)))
        return torch.tanh(self.out(h)).view(-1, 1, 16, 16)


def toy16(num_classes: int = 10, latent_dim: int = 32, width: int = 16, spectral_norm: bool = False) -> ToyGenerator:
    return ToyGenerator(check_int("toy16", "num_classes", num_classes), check_int("toy16", "latent_dim", latent_dim),
                        check_int("toy16", "width", width), bool(spectral_norm))


@pytest.fixture
def toy_registered():
    register_model(toy16)
    yield
    unregister_model("toy16")


def test_a_registered_toy_generator_encodes_and_decodes(toy_registered, tmp_path):
    src = create_image_folder(tmp_path / "g16", (1, 16, 16), per_class=5)
    out = encode(src, tmp_path / "toy.lds", "gan.arch=toy16", "gan.width=8")
    with LdsReader(out, verify=True) as r:
        assert r.manifest["generator"]["arch"] == "toy16" and r.latent_dim == 32
    ds = LatentDataset(out, device="cpu")
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    assert images.shape == (9, 1, 16, 16) and torch.isfinite(images).all()
    assert np.unique(ds.targets).tolist() == [0, 1, 2]


class UnitRangeToy(ToyGenerator):
    """The toy generator with outputs in [0, 1] (a sigmoid), as its contract declares: nothing may assume [-1, 1]."""

    def __init__(self, num_classes: int, latent_dim: int, width: int, spectral_norm: bool):
        super().__init__(num_classes, latent_dim, width, spectral_norm)
        self.contract = GeneratorContract(latent_dim, num_classes, (1, 16, 16), output_range=(0.0, 1.0))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.hidden(z + self.embed(y)))
        return torch.sigmoid(self.out(h)).view(-1, 1, 16, 16)


def toy16_unit(num_classes: int = 10, latent_dim: int = 32, width: int = 16, spectral_norm: bool = False) -> UnitRangeToy:
    return UnitRangeToy(num_classes, latent_dim, width, bool(spectral_norm))


@pytest.fixture
def toy_unit_registered():
    register_model(toy16_unit)
    yield
    unregister_model("toy16_unit")


def test_a_generator_in_0_1_is_mapped_through_its_contract(toy_unit_registered, tmp_path):
    """GAN training, inversion, condensation's embeddings and the sample grid map pixels through the contract."""
    from latentds.encoding.config import InvertConfig
    from latentds.encoding.embed import Normalizer
    from latentds.encoding.gan import RealSampler
    from latentds.encoding.gan_samples import sample_grid
    from latentds.encoding.invert import invert_latents
    from latentds.models import create_model, input_args

    src = create_image_folder(tmp_path / "g16", (1, 16, 16), per_class=5)
    data = load_source(str(src), "train")
    reals = RealSampler(data, torch.device("cpu"), (0.0, 1.0))  # what D sees of the real images
    pos, _ = reals.draw(8, torch.Generator().manual_seed(0))
    assert torch.equal(reals.images_at(pos), reals.images[pos].float() / 255)
    norm = Normalizer([0.5], [0.25], "cpu", (0.0, 1.0))  # what the embedding nets and inversion's pixel loss see
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(norm.generated(x), (x - 0.5) / 0.25)
    assert torch.equal(norm.to_generator_range(data.images[:2]), data.images[:2].float() / 255)

    g = create_model("toy16_unit", num_classes=3).eval()
    grid = sample_grid(g, 3, 2, tmp_path / "s.png", seed=0)  # pixels = G's output x 255, not (G + 1) x 127.5
    z = torch.randn(6, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = g(z, torch.arange(3).repeat_interleave(2))
    cells = torch.from_numpy(np.asarray(Image.open(grid))[..., 0].copy()).float()
    shown = torch.stack([cells[1 + 17 * (i // 2): 17 + 17 * (i // 2), 1 + 17 * (i % 2): 17 + 17 * (i % 2)] for i in range(6)])
    assert (shown - out[:, 0] * 255).abs().max() <= 1

    feature_net = create_model("convnet3", num_classes=3, width=8, **input_args("convnet3", (1, 16, 16))).eval()
    images, labels = data.images[:4], data.labels[:4]
    z0 = torch.randn(4, 32, generator=torch.Generator().manual_seed(1))
    _, stats = invert_latents(g, images, labels, z0, [torch.arange(4)], feature_net, InvertConfig(iterations=0),
                              [0.5], [0.25])
    with torch.no_grad():
        expected = float((g(z0, labels) - images.float() / 255).square().mean())
    assert stats[0]["initial_recon_mse"] == pytest.approx(expected, rel=1e-5)

    out_file = encode(src, tmp_path / "unit.lds", "gan.arch=toy16_unit", "gan.width=8")
    with LdsReader(out_file, verify=True) as r:
        assert r.manifest["image"]["generator_range"] == [0.0, 1.0]
    decoded = LatentDataset(out_file, device="cpu", normalize=False).decode(range(9))[0]
    assert decoded.min() >= 0 and decoded.max() <= 1


def test_a_given_generator_of_another_shape_is_refused(grey28, tmp_path):
    from latentds.checkpoint import save_model
    from latentds.errors import ConfigError
    from latentds.models import create_model

    gen = save_model(tmp_path / "g.safetensors", create_model("biggan", num_classes=2, width=1, image_size=32))
    cfg = apply_overrides(load_preset("smoke"), FAST)
    with pytest.raises(ConfigError, match=r"2 classes, the data has 3; it makes 3x32x32 .*the data has 1x28x28"):
        pipeline.run(str(grey28), tmp_path / "x.lds", cfg, generator_path=gen, progress=False, quiet=True)
    assert not (tmp_path / "x.work").exists()  # refused before the work dir is made
