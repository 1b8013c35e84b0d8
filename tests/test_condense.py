"""Tests for condensation (Eq. 2-4), the embedding-net sampler and work units."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from latentds.encoding import condense as condense_mod
from latentds.encoding.condense import (
    condense,
    derive_seed,
    dm_loss,
    paired_loss,
    work_units,
)
from latentds.encoding.config import CondenseConfig
from latentds.encoding.embed import EmbeddingSampler, random_convnet
from latentds.errors import ConfigError
from latentds.models import create_model
from tests.test_invert import MEAN, NUM_CLASSES, STD, generated_images, make_generator

TINY = dict(batch_real=8, random_width=8, eval_nets=0)


pytestmark = pytest.mark.usefixtures("one_thread")


# --- losses ------------------------------------------------------------------------------------------------
def test_dm_loss_zero_for_identical_sets_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(10, 32, generator=g)
    assert dm_loss(a, a).item() == 0.0
    assert dm_loss(a, a[torch.randperm(10, generator=g)]).item() == pytest.approx(0.0, abs=1e-10)  # order-free
    b = torch.randn(7, 32, generator=g)
    assert dm_loss(a, b).item() > 0.0
    expected = (a.mean(0) - b.mean(0)).square().sum()
    assert torch.allclose(dm_loss(a, b), expected)
    assert paired_loss(a, a).item() == 0.0 and paired_loss(a, a + 1).item() == pytest.approx(32.0)


# --- embedding nets ----------------------------------------------------------------------------------------
def test_random_convnet_matches_pytorch_default_init_and_leaves_global_rng_alone():
    with torch.random.fork_rng():
        torch.manual_seed(5)
        reference = create_model("convnet3", num_classes=4, width=8)
        state = torch.random.get_rng_state()
        net = random_convnet(8, 4, torch.Generator().manual_seed(5))
        assert torch.equal(torch.random.get_rng_state(), state)
    for (k, v), (k2, v2) in zip(reference.state_dict().items(), net.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    assert net.feat_dim == 8 * 4 * 4


def test_embedding_sampler_draws_frozen_nets_from_pool_or_random():
    pool = [random_convnet(8, 3, torch.Generator().manual_seed(i)) for i in range(3)]
    only_pool = EmbeddingSampler(pool, random_width=8, pool_prob=1.0, num_classes=3)
    g = torch.Generator().manual_seed(0)
    drawn = [only_pool.draw(g) for _ in range(12)]
    assert all(any(d is p for p in pool) for d in drawn)
    assert len({id(d) for d in drawn}) > 1
    only_random = EmbeddingSampler(pool, random_width=8, pool_prob=0.0, num_classes=3)
    nets = [only_random.draw(g) for _ in range(2)]
    assert all(all(n is not p for p in pool) for n in nets)
    assert not torch.equal(nets[0].features[0].weight, nets[1].features[0].weight)
    for net in drawn + nets:
        assert not net.training and not any(p.requires_grad for p in net.parameters())
    # the same seed replays the same draws
    a = EmbeddingSampler(None, 8, 1.0, 3).draw(torch.Generator().manual_seed(3))
    b = EmbeddingSampler(None, 8, 1.0, 3).draw(torch.Generator().manual_seed(3))
    assert torch.equal(a.features[0].weight, b.features[0].weight)


# --- work units --------------------------------------------------------------------------------------------
def test_work_units_cover_each_class_in_near_equal_subsets():
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 5)[torch.randperm(18, generator=torch.Generator().manual_seed(0))]
    units = work_units(labels, subset_size=4)
    assert [(u.cls, u.subset, len(u.indices)) for u in units] == [
        (0, 0, 4), (0, 1, 3), (0, 2, 3), (1, 0, 3), (2, 0, 3), (2, 1, 2)
    ]
    order = torch.cat([u.indices for u in units])
    assert sorted(order.tolist()) == list(range(18))
    assert labels[order].tolist() == sorted(labels.tolist())  # by class, then original index
    for u in units:
        assert (labels[u.indices] == u.cls).all() and torch.equal(u.indices, u.indices.sort().values)
    with pytest.raises(ConfigError):
        work_units(labels, 0)


def test_derive_seed_is_stable_and_distinct_per_unit():
    seeds = {derive_seed(0, stage, c, s) for stage in ("invert", "condense") for c in range(5) for s in range(3)}
    assert len(seeds) == 30
    assert derive_seed(1, "condense", 2, 0) == derive_seed(1, "condense", 2, 0)
    assert all(0 <= s < 2**63 for s in seeds)


# --- the stage ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup():
    gen = make_generator()
    images, labels = generated_images(gen, 30, seed=1)
    cls0 = images[labels == 0]  # (10, 3, 32, 32): the real images of class 0
    latents = torch.randn(7, gen.latent_dim, generator=torch.Generator().manual_seed(9))
    return gen, cls0, latents


def test_condense_lowers_matching_loss_and_moves_every_latent(setup):
    gen, real, z = setup
    sampler = EmbeddingSampler(None, random_width=8, pool_prob=0.0, num_classes=NUM_CLASSES)
    # 7 latents in batches of 3: 3 + 3 + 1, the public code would skip the last one
    cfg = CondenseConfig(iterations=25, lr=0.05, batch_real=10, batch_syn=3, random_width=8, eval_nets=2,
                         dsa_strategy="none")
    out, stats = condense(gen, z, real[:7], real, 0, sampler, cfg, MEAN, STD, seed=0)
    assert out.shape == z.shape and out.dtype == torch.float32
    assert (out != z).any(dim=1).all(), "every latent, the last partial batch included, must move"
    assert stats["moved_fraction"] == 1.0
    assert stats["eval_loss_after"] < stats["eval_loss_before"]
    assert stats["last_loss"] < stats["first_loss"]
    assert len(stats["loss_curve"]) == 25 and stats["num_latents"] == 7
    assert torch.isfinite(out).all()


def test_condense_uses_one_dsa_param_set_for_real_and_synthetic_batches(setup, monkeypatch):
    gen, real, z = setup
    calls: list[tuple[object, int]] = []
    original = condense_mod.apply_dsa

    def spy(x, params):
        calls.append((params, x.shape[0]))
        return original(x, params)

    monkeypatch.setattr(condense_mod, "apply_dsa", spy)
    sampler = EmbeddingSampler(None, 8, 0.0, NUM_CLASSES)
    cfg = CondenseConfig(iterations=3, batch_syn=4, lam=0.5, **{**TINY, "batch_real": 10})
    condense(gen, z, real[:7], real, 0, sampler, cfg, MEAN, STD, seed=0)
    # per batch: real (10 images), synthetic (b), paired real (b) -- all with the same params object
    assert len(calls) == 3 * 2 * 3
    for i in range(0, len(calls), 3):
        (p_real, n_real), (p_syn, n_syn), (p_pair, n_pair) = calls[i : i + 3]
        assert p_real is p_syn is p_pair
        assert n_real == 10 and n_syn == n_pair
    assert len({id(p) for p, _ in calls}) == 6  # a fresh draw per batch


def test_condense_is_deterministic_per_unit_and_independent_of_run_order(setup):
    gen, real, z = setup
    cfg = CondenseConfig(iterations=3, batch_syn=4, **TINY)
    pool = [random_convnet(8, NUM_CLASSES, torch.Generator().manual_seed(i)) for i in range(2)]

    def run(order):
        sampler = EmbeddingSampler(pool, 8, 0.5, NUM_CLASSES)
        results = {}
        for seed, sl in order:
            results[seed] = condense(gen, z[sl], real[sl], real, 0, sampler, cfg, MEAN, STD, seed=seed)[0]
        return results

    a = run([(11, slice(0, 4)), (12, slice(4, 7))])
    b = run([(12, slice(4, 7)), (11, slice(0, 4))])
    assert torch.equal(a[11], b[11]) and torch.equal(a[12], b[12])
    c = run([(13, slice(0, 4))])
    assert not torch.equal(a[11], c[13])


def test_fewer_passes_are_the_longer_run_cut_short(setup):
    """The per-byte benchmark's accuracy-vs-passes curve (lds_prior_pN) relies on this: at a constant lr, a run of
    N passes follows the first N passes of a longer run with the same seed, draw for draw."""
    gen, real, z = setup
    sampler = EmbeddingSampler(None, 8, 0.0, NUM_CLASSES)
    short, long = (condense(gen, z, real[:7], real, 0, sampler, CondenseConfig(iterations=n, batch_syn=4, **TINY),
                            MEAN, STD, seed=5)[1]["loss_curve"] for n in (3, 6))
    assert len(long) == 6 and long[:3] == short
    assert long[3:] != short


def test_pixel_parametrization_is_the_dm_baseline(setup):
    _, real, _ = setup
    sampler = EmbeddingSampler(None, 8, 0.0, NUM_CLASSES)
    cfg = CondenseConfig(iterations=15, batch_syn=3, parametrization="pixel", pixel_init="noise", lr_pixel=0.1,
                         batch_real=10, random_width=8, eval_nets=2, dsa_strategy="none")
    out, stats = condense(None, None, real[:5], real, 0, sampler, cfg, MEAN, STD, seed=0)
    assert out.shape == (5, 3, 32, 32)
    assert stats["eval_loss_after"] < stats["eval_loss_before"] and stats["moved_fraction"] == 1.0
    # initialized from the real images, with identical sets the loss starts at zero
    cfg_real = CondenseConfig(iterations=0, batch_syn=5, parametrization="pixel", batch_real=10, random_width=8,
                              eval_nets=1)
    same, st = condense(None, None, real, real, 0, sampler, cfg_real, MEAN, STD, seed=0)
    assert st["eval_loss_before"] == pytest.approx(0.0, abs=1e-6)
    expected = (real.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(same, expected)


def test_pixel_mode_at_dms_learning_rate_keeps_images_sane(setup):
    """DM's image lr (1.0) is an SGD rate: with momentum-SGD the images stay near the data; Adam blew them up."""
    _, real, _ = setup
    sampler = EmbeddingSampler(None, 8, 0.0, NUM_CLASSES)
    cfg = CondenseConfig(iterations=30, batch_syn=5, parametrization="pixel", batch_real=10, random_width=8,
                         eval_nets=1, dsa_strategy="none")
    assert cfg.lr_pixel == 1.0
    out, stats = condense(None, None, real[:5], real, 0, sampler, cfg, MEAN, STD, seed=0)
    start = (real[:5].float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    assert 0 < (out - start).abs().mean() < 0.5  # moved, but by far less than the data's own spread (std 1)


def test_condense_config_checks():
    for bad in (dict(parametrization="pixels"), dict(pixel_init="zeros"), dict(batch_syn=0), dict(lam=2.0)):
        with pytest.raises(ConfigError):
            CondenseConfig(**bad).check()
    with pytest.raises(ValueError):
        condense(None, None, torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(2, 3, 32, 32, dtype=torch.uint8),
                 0, EmbeddingSampler(None, 8, 0.0, 3), CondenseConfig(iterations=1, **TINY), MEAN, STD, seed=0)
    assert math.isfinite(CondenseConfig().lr)
    assert isinstance(make_generator(), nn.Module)


def test_matching_loss_is_a_strategy(setup, monkeypatch):
    """A second objective is one function + one MATCHING_LOSSES entry; condense calls it with each batch."""
    import latentds.encoding.condense as cd

    seen = []

    def mean_pixels(net, real, syn, label):
        seen.append((tuple(real.shape[1:]), tuple(syn.shape[1:]), label))
        return cd.Match((real.float().mean(0) - syn.float().mean(0)).square().sum(), None)

    monkeypatch.setitem(cd.MATCHING_LOSSES, "pixels", mean_pixels)
    with pytest.raises(ConfigError, match="condense.loss must be one of"):
        CondenseConfig(loss="nope").check()
    assert CondenseConfig().loss == "dm" and cd.MATCHING_LOSSES["dm"] is cd.distribution_matching
    _, real, _ = setup
    sampler = EmbeddingSampler(None, 8, 0.0, NUM_CLASSES)
    cfg = CondenseConfig(iterations=3, batch_syn=5, parametrization="pixel", pixel_init="noise", lr_pixel=0.1,
                         batch_real=10, random_width=8, eval_nets=0, loss="pixels")
    out, stats = condense(None, None, real[:5], real, 2, sampler, cfg, MEAN, STD, seed=0)
    assert seen == [((3, 32, 32), (3, 32, 32), 2)] * 3  # one call per batch and iteration, with the class
    assert len(stats["loss_curve"]) == 3 and all(v > 0 for v in stats["loss_curve"])  # the strategy's loss
    with pytest.raises(ConfigError, match="embedding"):  # the paired regularizer needs the embeddings
        condense(None, None, real[:5], real, 2, sampler, CondenseConfig(**{**cfg.__dict__, "lam": 0.5}), MEAN, STD,
                 seed=0)
