"""Amortized inversion: the latent encoder's training, its checkpoint and resume, and the pipeline's use of it."""

from __future__ import annotations

import pytest
import torch
from test_pipeline import fast_config, folder  # noqa: F401 (fixture: the tiny PNG folder)

from latentds.encoding import pipeline
from latentds.encoding.amortized import LatentEncoder, predict_latents, train_encoder
from latentds.encoding.config import AmortizedConfig
from latentds.encoding.state import TrainingInterrupted
from latentds.errors import ConfigError
from latentds.format import LdsReader
from latentds.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")

ENCODER = ["amortized.steps=4", "amortized.checkpoint_every=2", "amortized.batch_size=6", "amortized.width=4"]


def test_encoder_maps_any_image_size_to_latents():
    enc = LatentEncoder(channels=1, num_classes=3, latent_dim=16, width=4)
    for size in (16, 28, 32):
        z = enc(torch.randn(5, 1, size, size), torch.tensor([0, 1, 2, 0, 1]))
        assert z.shape == (5, 16) and torch.isfinite(z).all()


def test_training_lowers_the_inversion_loss_and_resumes_to_the_same_bits(tmp_path):
    torch.manual_seed(0)
    g = create_model("biggan32_tiny", num_classes=3, width=4).eval()
    feat = create_model("convnet3", num_classes=3, width=8).eval()
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (30, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.arange(30) % 3
    cfg = AmortizedConfig(steps=6, batch_size=6, width=4, checkpoint_every=3, lr=1e-2)
    args = (g, feat, images, labels, cfg, [0.5] * 3, [0.25] * 3, 0)
    whole, stats = train_encoder(*args, folder=tmp_path / "a", device=torch.device("cpu"))
    assert len(stats["loss_curve"]) == 6 and stats["final_loss"] < stats["first_loss"] * 1.5
    # a run killed after step 4 (its last checkpoint: step 3), then rerun, ends with the same weights
    with pytest.raises(TrainingInterrupted):
        train_encoder(*args, folder=tmp_path / "b", device=torch.device("cpu"), stop_after=4)
    resumed, again = train_encoder(*args, folder=tmp_path / "b", device=torch.device("cpu"))
    assert again["resumed_from"] == 3 and again["loss_curve"] == stats["loss_curve"]
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    z = predict_latents(whole, images, labels, [0.5] * 3, [0.25] * 3, torch.device("cpu"))
    assert z.shape == (30, 128)
    # each row's prediction does not depend on the other rows of its batch
    assert torch.equal(predict_latents(whole, images[:7], labels[:7], [0.5] * 3, [0.25] * 3, torch.device("cpu")),
                       z[:7])


def test_bad_amortized_settings_are_config_errors():
    with pytest.raises(ConfigError, match="amortized.steps"):
        AmortizedConfig(steps=-1)
    with pytest.raises(ConfigError, match="amortized.lr"):
        AmortizedConfig(lr=0)


def test_encode_with_an_encoder_starts_inversion_from_its_predictions(folder, tmp_path, monkeypatch):  # noqa: F811
    plain = pipeline.run(str(folder), tmp_path / "plain.lds", fast_config("condense.iterations=0"), progress=False,
                         quiet=True)
    cfg = fast_config("condense.iterations=0", *ENCODER)
    out = pipeline.run(str(folder), tmp_path / "amortized.lds", cfg, progress=False, quiet=True)
    a, b = LdsReader(plain), LdsReader(out)
    assert not torch.equal(a.latents(), b.latents())  # another starting point
    prov = b.manifest["provenance"]
    assert prov["encode_config"]["amortized"]["steps"] == 4
    assert prov["losses"]["classifier"]["encoder"]["steps"] == 4
    assert (tmp_path / "amortized.work" / "encoder" / "encoder_state.safetensors").is_file()
    assert "encoder: done" in (tmp_path / "amortized.work" / "encode.log").read_text()
    # resumed from its work dir (the encoder's checkpoint and the inversion units): the same file
    again = pipeline.run(str(folder), tmp_path / "again.lds", cfg, work_dir=tmp_path / "amortized.work",
                         progress=False, quiet=True)
    assert torch.equal(LdsReader(again).latents(), b.latents())
