"""Tests for GAN inversion (Eq. 1) with a tiny, seeded generator whose output depends strongly on z."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from latentds.encoding.config import InvertConfig
from latentds.encoding.embed import random_convnet
from latentds.encoding.invert import invert, invert_batches
from latentds.models import create_model

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
NUM_CLASSES = 3


pytestmark = pytest.mark.usefixtures("one_thread")


def make_generator(seed: int = 0, num_classes: int = NUM_CLASSES) -> nn.Module:
    """biggan32_tiny at width 4 with He-normal weights: unlike the N(0, 0.02) GAN init, G(z) varies with z."""
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        gen = create_model("biggan32_tiny", num_classes=num_classes, width=4)
    gen = gen.to_empty(device="cpu")
    with torch.no_grad():
        for m in gen.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0.0, 0.1, generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                if m.affine:
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
    return gen.eval()


def generated_images(gen: nn.Module, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets G can reach: uint8 (n, 3, 32, 32) images from random latents, and their labels."""
    z = torch.randn(n, gen.latent_dim, generator=torch.Generator().manual_seed(seed))
    y = torch.arange(n) % NUM_CLASSES
    with torch.no_grad():
        x = gen(z, y)
    return (x * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8), y


def test_inversion_lowers_reconstruction_and_feature_error():
    gen = make_generator()
    images, labels = generated_images(gen, 9, seed=1)
    net = random_convnet(16, NUM_CLASSES, torch.Generator().manual_seed(2))
    cfg = InvertConfig(iterations=40, batch_size=2)
    latents, stats = invert(gen, images, labels, net, cfg, MEAN, STD, generator_seed=0)
    assert latents.shape == (9, gen.latent_dim) and latents.dtype == torch.float32
    assert stats["final_recon_mse"] < 0.6 * stats["initial_recon_mse"]
    assert stats["final_feature_loss"] < stats["initial_feature_loss"]
    assert stats["num_images"] == 9
    # The stats describe the returned latents: recompute the pixel MSE from them.
    with torch.no_grad():
        recon = gen(latents, labels)
    mse = torch.nn.functional.mse_loss(recon, images.float() / 127.5 - 1.0).item()
    assert abs(mse - stats["final_recon_mse"]) < 1e-4


def test_zero_iterations_returns_the_seeded_normal_draw_and_is_deterministic():
    gen = make_generator()
    images, labels = generated_images(gen, 5, seed=1)
    net = random_convnet(8, NUM_CLASSES, torch.Generator().manual_seed(2))
    z0, _ = invert(gen, images, labels, net, InvertConfig(iterations=0), MEAN, STD, generator_seed=7)
    assert torch.equal(z0, torch.randn(5, gen.latent_dim, generator=torch.Generator().manual_seed(7)))
    cfg = InvertConfig(iterations=3, batch_size=2)
    a, _ = invert(gen, images, labels, net, cfg, MEAN, STD, generator_seed=7)
    b, _ = invert(gen, images, labels, net, cfg, MEAN, STD, generator_seed=7)
    c, _ = invert(gen, images, labels, net, cfg, MEAN, STD, generator_seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_generator_and_feature_net_are_left_untouched():
    gen = make_generator()
    gen.train()  # the caller's mode comes back afterwards
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    images, labels = generated_images(gen.eval(), 4, seed=1)
    gen.train()
    net = random_convnet(8, NUM_CLASSES, torch.Generator().manual_seed(2))
    invert(gen, images, labels, net, InvertConfig(iterations=2, batch_size=4), MEAN, STD, generator_seed=0)
    assert gen.training
    assert all(p.requires_grad for p in gen.parameters())
    assert all(p.grad is None for p in gen.parameters()) and all(p.grad is None for p in net.parameters())
    for k, v in gen.state_dict().items():
        assert torch.equal(v, before[k]), k  # eval-mode BN: running statistics untouched too


def test_batches_are_per_class_and_cover_every_image_once():
    labels = torch.tensor([2, 0, 0, 1, 0, 2, 0, 0])
    batches = invert_batches(labels, 3)
    assert [labels[b].unique().numel() for b in batches] == [1] * len(batches)
    assert sorted(torch.cat(batches).tolist()) == list(range(len(labels)))
    assert max(len(b) for b in batches) <= 3
    assert [b.tolist() for b in batches] == [[1, 2, 4], [6, 7], [3], [0, 5]]
