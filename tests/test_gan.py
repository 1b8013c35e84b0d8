"""Tests for latentds.encoding.gan (train-gan), latentds.encoding.diffaug and latentds.encoding.state.

A tiny synthetic set (3 classes x 20 images of coloured blobs) and the tiny registered BigGAN pair keep the
whole file to well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn.utils import parametrize

from latentds.checkpoint import load_model, read_model_metadata
from latentds.encoding.config import GANConfig
from latentds.encoding.diffaug import diff_augment, parse_policy, random_flip
from latentds.encoding.gan import (
    CKPT_FILE,
    GENERATOR_FILE,
    TrainingDivergedError,
    gan_quality,
    sample_grid,
    train_gan,
)
from latentds.encoding.state import (
    CheckpointError,
    TrainingInterrupted,
    load_module_tensors,
    load_state,
    module_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
    rng_state,
    save_state,
    set_rng_state,
)
from latentds.errors import ConfigError
from latentds.models import create_model
from latentds.sources import ImageSet
from tests.conftest import blobs

# EMA from iteration 2 with a short memory, so the EMA update itself is exercised (and resumed).
TINY = GANConfig(
    arch="biggan32_tiny", width=4, disc_arch="biggan32_disc_tiny", disc_width=4,
    iterations=6, batch_size=8, ema_start=2, ema_decay=0.9, checkpoint_every=2,
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> ImageSet:
    return blobs()


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> tuple[nn.Module, dict, Path]:
    work = tmp_path_factory.mktemp("gan")
    generator, stats = train_gan(data, TINY, work, progress=False)
    return generator, stats, work


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- train_gan ------------------------------------------------------------------------------------------
def test_train_gan_returns_a_plain_eval_generator(trained):
    generator, stats, _ = trained
    assert not generator.training
    assert generator.arch_args["spectral_norm"] is False
    assert not any(parametrize.is_parametrized(m) for m in generator.modules())
    fresh = create_model(generator.arch_name, **generator.arch_args)
    fresh.load_state_dict(generator.state_dict())  # strict: same keys and shapes as spectral_norm=False
    for key in ("d_loss", "g_loss", "train_seconds", "images_per_s", "iterations_per_s"):
        assert isinstance(stats[key], float) and torch.isfinite(torch.tensor(stats[key])), key
    assert stats["iterations"] == TINY.iterations and stats["cached"] is False


def test_generator_file_is_loadable_and_decodes_the_same(trained):
    generator, _, work = trained
    loaded = load_model(work / GENERATOR_FILE)
    assert same_state(loaded, generator)
    meta = read_model_metadata(work / GENERATOR_FILE)
    assert GANConfig.from_dict(json.loads(meta["latentds.gan_config"])) == TINY
    assert json.loads(meta["latentds.classes"]) == ["red", "green", "blue"]  # so `eval gan:FILE` needs no data
    image = json.loads(meta["latentds.image"])
    assert image["generator_range"] == [-1.0, 1.0] and len(image["mean"]) == 3 and min(image["std"]) > 0
    z, y = torch.randn(6, 128, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        out = loaded(z, y)
        torch.testing.assert_close(out, generator(z, y), rtol=0, atol=0)
    assert out.shape == (6, 3, 32, 32) and out.abs().max() <= 1


def test_training_changes_the_generator(data, trained):
    generator, _, _ = trained
    from latentds.encoding.gan_state import final_generator
    from latentds.models import seeded_model

    init = seeded_model(TINY.seed, TINY.arch, width=TINY.width, num_classes=3, spectral_norm=True)
    assert not same_state(final_generator(init, TINY, 3, data.image_shape), generator)


def test_samples_and_checkpoint_written(trained):
    _, _, work = trained
    with Image.open(work / "samples.png") as im:
        assert im.size == (10 * 33 + 1, 3 * 33 + 1)  # 10 per class, one row per class, 1-px padding
    tensors, meta = load_state(work / CKPT_FILE)
    assert meta["kind"] == "gan" and meta["iteration"] == TINY.iterations
    assert {k.split(".")[0] for k in tensors} >= {"G", "D", "EMA", "optG", "optD", "rng"}


def test_an_iteration_s_random_numbers_are_drawn_in_order_and_moved_in_one_copy_per_dtype():
    """draw_iteration consumes the CPU stream as the steps did one by one; off the CPU they travel packed by dtype."""
    from latentds.encoding import gan
    from latentds.encoding.gan_samples import random_latents
    from latentds.sources import ImageSet

    cfg = replace(TINY, d_steps=2, batch_size=3, diffaug="color,translation,cutout")
    data = ImageSet.from_tensors(torch.zeros(6, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 0, 1, 1, 2, 2]),
                                 ["a", "b", "c"], "zeros")
    reals = gan.RealSampler(data, torch.device("cpu"), (-1.0, 1.0))
    steps = gan.draw_iteration(cfg, reals, 5, (8, 8), torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)  # the same numbers, drawn the way one D step after another drew them
    for step in steps[:-1]:
        pos, y = reals.draw(3, g)
        z, _ = random_latents(3, 5, 3, g, torch.device("cpu"))
        random_flip(torch.zeros(3, 1, 1, 1), g)  # consumes the flip numbers
        diff_augment(torch.zeros(6, 3, 8, 8), cfg.diffaug, g)  # consumes the DiffAugment numbers (fakes + reals)
        assert torch.equal(step.pos, pos) and torch.equal(step.y_real, y) and torch.equal(step.z, z)
    z, _ = random_latents(3, 5, 3, g, torch.device("cpu"))
    assert torch.equal(steps[-1].z, z) and steps[-1].pos is None
    moved = steps[0].to(torch.device("meta"))  # the packing path a GPU takes (shapes and dtypes; meta has no values)
    assert moved.z.device.type == "meta" and moved.z.shape == (3, 5) and moved.pos.dtype == torch.int64
    assert set(moved.aug) == set(steps[0].aug) and moved.aug["ty"].shape == (6, 1, 1)
    assert steps[0].to(torch.device("cpu")).z is steps[0].z  # the CPU: no copy at all


def test_finished_run_is_returned_without_training(data, trained, monkeypatch):
    generator, _, work = trained
    from latentds.encoding import gan

    monkeypatch.setattr(gan, "RealSampler", None)  # training would fail at once
    again, stats = train_gan(data, TINY, work, progress=False)
    assert stats["cached"] is True and same_state(again, generator)


def test_resume_after_interruption_is_bit_identical(data, trained, tmp_path):
    generator, _, _ = trained
    with pytest.raises(TrainingInterrupted):
        train_gan(data, TINY, tmp_path, progress=False, stop_after=3)  # dies after 3; checkpoint at 2
    assert load_state(tmp_path / CKPT_FILE)[1]["iteration"] == 2
    assert not (tmp_path / GENERATOR_FILE).exists()
    lines: list[str] = []
    resumed, _ = train_gan(data, TINY, tmp_path, progress=False, log=lines.append)
    assert any("resuming" in line and "iteration 2/" in line for line in lines)
    assert same_state(resumed, generator)


def test_more_iterations_continue_a_finished_run(data, trained, tmp_path):
    generator, _, _ = trained
    short, stats = train_gan(data, replace(TINY, iterations=4), tmp_path, progress=False)
    assert stats["iterations"] == 4 and not same_state(short, generator)
    longer, stats = train_gan(data, TINY, tmp_path, progress=False)
    assert stats["iterations"] == 6 and stats["cached"] is False
    assert same_state(longer, generator)


def test_changed_config_or_data_is_refused(data, trained, tmp_path):
    _, _, work = trained
    with pytest.raises(ConfigError, match=r"lr_g.*only iterations"):
        train_gan(data, replace(TINY, lr_g=1e-4), work, progress=False)
    with pytest.raises(TrainingInterrupted):  # a checkpoint without a finished generator
        train_gan(data, TINY, tmp_path, progress=False, stop_after=2)
    with pytest.raises(ConfigError, match=r"batch_size: 8 -> 4.*seed: 0 -> 1"):
        train_gan(data, replace(TINY, batch_size=4, seed=1), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="other data"):
        train_gan(blobs(seed=5), TINY, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="beyond iterations=1"):
        train_gan(data, replace(TINY, iterations=1), tmp_path, progress=False)


def test_divergence_is_reported(data, tmp_path):
    with pytest.raises(TrainingDivergedError, match="non-finite loss"):
        train_gan(data, replace(TINY, lr_g=1e30, lr_d=1e30), tmp_path, progress=False)


def test_gan_config_validation():
    assert GANConfig.from_dict({"betas": [0.5, 0.9]}).betas == (0.5, 0.9)
    with pytest.raises(ConfigError, match="unknown field"):
        GANConfig.from_dict({"iters": 5})
    with pytest.raises(ConfigError, match="DiffAugment"):
        GANConfig(diffaug="translation,blur")
    with pytest.raises(ConfigError, match="d_steps"):
        GANConfig(d_steps=0)


def test_gan_quality_and_sample_grid(tmp_path):
    torch.manual_seed(0)
    generator = create_model("biggan32_tiny", num_classes=3, width=4).eval()
    classifier = create_model("convnet3", num_classes=3, width=8).eval()
    q = gan_quality(generator, classifier, 3, n_per_class=7, mean=[0.5] * 3, std=[0.25] * 3)
    assert q["n"] == 21 and 0 <= q["accuracy"] <= 100 and len(q["per_class_accuracy"]) == 3
    assert q["accuracy"] == pytest.approx(sum(q["per_class_accuracy"]) / 3)
    with pytest.raises(ValueError, match="mean"):
        gan_quality(generator, classifier, 3, n_per_class=2)
    classifier.normalization = {"mean": [0.5] * 3, "std": [0.25] * 3}
    assert gan_quality(generator, classifier, 3, n_per_class=7) == q  # seeded: same samples
    path = sample_grid(generator, 3, 4, tmp_path / "grid.png", seed=0)
    with Image.open(path) as im:
        assert im.size == (4 * 33 + 1, 3 * 33 + 1)


# --- diffaug --------------------------------------------------------------------------------------------
def rand_images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("policy", ["translation,cutout", "color,translation,cutout", "translation", "cutout", "color"])
def test_diffaug_shape_and_gradient(policy):
    x = rand_images(5).requires_grad_(True)
    out = diff_augment(x, policy, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_diffaug_is_per_sample_and_seeded():
    x = rand_images(1).expand(16, -1, -1, -1).contiguous()
    a = diff_augment(x, "translation,cutout", torch.Generator().manual_seed(3))
    b = diff_augment(x, "translation,cutout", torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    distinct = {a[i].numpy().tobytes() for i in range(16)}
    assert len(distinct) > 8  # not one transform broadcast over the batch (that would be DSA)


def test_translation_is_an_integer_shift_with_zero_fill():
    x = rand_images(8, seed=1) + 3.0  # no zeros in the input
    out = diff_augment(x, "translation", torch.Generator().manual_seed(0))
    for i in range(8):
        found = False
        for dy in range(-4, 5):
            for dx in range(-4, 5):
                shifted = torch.zeros_like(x[i])
                src = x[i][:, max(0, dy) : 32 + min(0, dy), max(0, dx) : 32 + min(0, dx)]
                shifted[:, max(0, -dy) : 32 + min(0, -dy), max(0, -dx) : 32 + min(0, -dx)] = src
                found = found or torch.equal(out[i], shifted)
        assert found, f"sample {i} is not a shift by at most 4 px"


def test_cutout_zeros_one_square_of_at_most_16px():
    x = torch.ones(32, 3, 32, 32)
    out = diff_augment(x, "cutout", torch.Generator().manual_seed(0))
    for img in out:
        zero = img[0] == 0
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert 0 < len(rows) <= 16 and 0 < len(cols) <= 16
        assert zero.sum() == len(rows) * len(cols)  # a filled rectangle
        assert (img[:, zero] == 0).all() and (img[:, ~zero] == 1).all()
    # The centre is uniform over [0, 32], so a square lies fully inside with p = (17/33)^2 ~ 0.27.
    assert 2 < sum(int((img[0] == 0).sum()) == 256 for img in out) < 20


def test_random_flip_and_policy_parsing():
    x = rand_images(32, seed=2)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and 4 < sum(flipped) < 28
    assert parse_policy("cutout,translation") == ("translation", "cutout")
    assert parse_policy("none") == () and torch.equal(diff_augment(x, "none", torch.Generator()), x)
    with pytest.raises(ConfigError, match="valid ops"):
        parse_policy("translation,zoom")
    with pytest.raises(ValueError):
        diff_augment(x.to(torch.uint8), "cutout", torch.Generator())


# --- state (checkpoints) --------------------------------------------------------------------------------
def test_save_load_state_round_trip(tmp_path):
    tensors = {
        "a": torch.randn(3, 4),
        "b.int": torch.arange(5, dtype=torch.int64),
        "scalar": torch.tensor(2.5),
        "half": torch.randn(2, dtype=torch.float16),
        "view": torch.arange(10.0)[2:5],  # a view: saved as a copy
    }
    meta = {"iteration": 7, "config": {"betas": [0.0, 0.999], "name": "x"}, "none": None}
    path = save_state(tmp_path / "s.safetensors", tensors, meta)
    assert path.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle
    loaded, loaded_meta = load_state(path)
    assert loaded_meta == meta
    assert loaded.keys() == tensors.keys()
    for k in tensors:
        assert torch.equal(loaded[k], tensors[k]) and loaded[k].dtype == tensors[k].dtype


def test_load_state_rejects_other_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_state(tmp_path / "missing.safetensors")
    (tmp_path / "junk").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00hello")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_state(tmp_path / "junk")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not a latentds training checkpoint"):
        load_state(tmp_path / "plain.safetensors")
    with pytest.raises(TypeError, match="JSON"):
        save_state(tmp_path / "bad.safetensors", {}, {"x": object()})


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.0, 0.999)),
        lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True, weight_decay=1e-3),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
    ],
    ids=["adam", "adam-amsgrad", "sgd-momentum"],
)
def test_optimizer_resume_is_bit_identical(tmp_path, make_opt):
    def step(model, opt, gen):
        x = torch.randn(4, 3, 8, 8, generator=gen)
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    torch.manual_seed(0)
    ref = _model()
    ref_opt, ref_gen = make_opt(ref.parameters()), torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    run = _model()
    opt, gen = make_opt(run.parameters()), torch.Generator().manual_seed(1)
    for _ in range(3):
        step(ref, ref_opt, ref_gen)
        step(run, opt, gen)
    opt_tensors, opt_meta = optimizer_to_tensors(opt, "opt.")
    tensors = {**module_tensors(run, "m."), **opt_tensors, "rng": rng_state(gen)}
    save_state(tmp_path / "c.safetensors", tensors, {"opt": opt_meta})
    del run, opt, gen

    tensors, meta = load_state(tmp_path / "c.safetensors")
    torch.manual_seed(123)  # a different init: everything must come from the checkpoint
    resumed = _model()
    resumed_opt, resumed_gen = make_opt(resumed.parameters()), torch.Generator()
    load_module_tensors(resumed, tensors, "m.")
    optimizer_from_tensors(resumed_opt, tensors, meta["opt"], "opt.")
    set_rng_state(resumed_gen, tensors["rng"])
    for _ in range(3):
        step(ref, ref_opt, ref_gen)
        step(resumed, resumed_opt, resumed_gen)
    assert same_state(ref, resumed)
    ref_state, resumed_state = ref_opt.state_dict()["state"], resumed_opt.state_dict()["state"]
    assert ref_state.keys() == resumed_state.keys()
    for idx, entry in ref_state.items():
        assert entry.keys() == resumed_state[idx].keys()
        assert all(torch.equal(torch.as_tensor(v), torch.as_tensor(resumed_state[idx][k])) for k, v in entry.items())


def test_optimizer_and_module_mismatch_is_refused():
    model = _model()
    tensors, meta = optimizer_to_tensors(torch.optim.Adam(model.parameters()))
    with pytest.raises(CheckpointError, match="Adam"):
        optimizer_from_tensors(torch.optim.SGD(model.parameters(), lr=0.1), tensors, meta)
    with pytest.raises(CheckpointError, match="missing"):
        load_module_tensors(model, {"m.0.weight": torch.zeros(4, 3, 3, 3)}, "m.")


def test_standing_stats_match_batch_statistics() -> None:
    """After standing stats, eval-mode decoding agrees with train-mode (batch statistics) decoding."""
    from latentds.encoding.gan import standing_stats
    from latentds.models import create_model

    torch.manual_seed(0)
    g = create_model("biggan32_tiny", num_classes=3)
    with torch.no_grad():
        for p in g.parameters():
            p.mul_(5)  # make activations far from the initial running statistics (mean 0, var 1)
    z, y = torch.randn(400, 128, generator=torch.Generator().manual_seed(1)), torch.arange(400) % 3
    with torch.no_grad():
        batch_stats = g.train()(z, y)
        stale = g.eval()(z, y)
        standing_stats(g, num_classes=3, seed=0, batches=10, batch_size=200)
        assert not g.training
        standing = g(z, y)
    assert (standing - batch_stats).abs().mean() < 0.3 * (stale - batch_stats).abs().mean()


def test_frechet_distance_matches_its_closed_forms():
    from latentds.encoding.gan_samples import frechet_distance

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 1, generator=g), 3 + 2 * torch.randn(300, 1, generator=g)
    # one dimension: (mu_a - mu_b)^2 + (sd_a - sd_b)^2 with the unbiased sample sd
    a, b = a.double(), b.double()
    expected = float((a.mean() - b.mean()) ** 2 + (a.std() - b.std()) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    x = torch.randn(500, 6, generator=g)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    y = torch.randn(500, 6, generator=g) @ torch.randn(6, 6, generator=g) + 1
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))  # a rotation of both: same distance
    assert frechet_distance(x.double() @ q, y.double() @ q) == pytest.approx(frechet_distance(x, y), rel=1e-7)
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-7)  # symmetric


def test_gan_quality_frechet_against_real_images():
    from tests.conftest import blobs

    torch.manual_seed(0)
    data = blobs(12)
    generator = create_model("biggan32_tiny", num_classes=3, width=4).eval()
    classifier = create_model("convnet3", num_classes=3, width=8).eval()
    q = gan_quality(generator, classifier, 3, n_per_class=5, mean=[0.5] * 3, std=[0.25] * 3, real=data)
    assert q["frechet_n"] == [15, 15] and "ConvNet.embed" in q["frechet_feature"]
    # untrained generator: its samples sit further from the real images than a second real draw does
    assert q["frechet"] > q["frechet_real"] >= 0
