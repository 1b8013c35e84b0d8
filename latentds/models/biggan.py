"""BigGAN generator and discriminator for square images of any size and channel count.

At 32x32 this is the DiffAugment-BigGAN-CIFAR configuration IT-GAN uses: G_ch 64, dim_z 128, bottom width 4,
three up-blocks of constant width 4*G_ch, no attention, no shared embedding, no hierarchical z; class
conditioning through conditional batch norm with one gain and one bias embedding per BN layer. The
discriminator has four residual blocks (two down-sampling, 32 -> 8) and a projection head. Both use
N(0, 0.02) init; spectral normalization is for GAN training and is removed before a generator is saved.

Other sizes (``biggan(image_size=...)``) follow BigGAN's rule that a resolution is a bottom width times a
power of two, one up-block per doubling: 64 = 4 * 2**4 (one more up-block, as BigGAN's 64x64 setting),
28 = 7 * 2**2 (bottom width 7 and two up-blocks, the usual MNIST-size GAN layout), 16 = 4 * 2**2. We keep the
CIFAR configuration's constant block width at every size (BigGAN's own 64x64 G halves the width per block
from 16*G_ch, which is far too large for the CPU budgets latentds targets). The discriminator halves the
resolution until it is at most 8 px (32 -> 8 as in the CIFAR configuration; 64 -> 8 with three down-blocks;
28 -> 7), then adds two blocks at that resolution, so its receptive field grows with the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from latentds.errors import ConfigError
from latentds.models.registry import (
    GeneratorContract,
    check_choice,
    check_int,
    register_model,
)
from latentds.models.spectral import apply_spectral_norm

__all__ = [
    "BigGANDiscriminator",
    "BigGANGenerator",
    "ConditionalBatchNorm2d",
    "GeneratorLayout",
    "biggan",
    "biggan32",
    "biggan32_disc",
    "biggan32_disc_tiny",
    "biggan32_tiny",
    "biggan_disc",
    "generator_layout",
]

BN_EPS = 1e-5
INIT_STD = 0.02


def _init_n02(module: nn.Module) -> None:
    """BigGAN 'N02' init: conv/linear/embedding weights ~ N(0, 0.02), biases zero."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, INIT_STD)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without affine, then a per-class gain ``1 + gain(y)`` and bias ``bias(y)``."""

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False, eps=BN_EPS)
        self.gain = nn.Embedding(num_classes, num_features)
        self.bias = nn.Embedding(num_classes, num_features)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W), y: (B,) long
        gain = 1.0 + self.gain(y)[:, :, None, None]  # (B, C, 1, 1)
        bias = self.bias(y)[:, :, None, None]
        return self.bn(x) * gain + bias


class GBlock(nn.Module):
    """Up-sampling residual block: CBN, ReLU, up x2, conv3x3, CBN, ReLU, conv3x3; skip = up x2, conv1x1."""

    def __init__(self, in_ch: int, out_ch: int, num_classes: int):
        super().__init__()
        self.bn1 = ConditionalBatchNorm2d(in_ch, num_classes)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.bn2 = ConditionalBatchNorm2d(out_ch, num_classes)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.conv_sc = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(x, y))
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = self.conv1(h)
        h = self.conv2(F.relu(self.bn2(h, y)))
        return h + self.conv_sc(x)


class BigGANGenerator(nn.Module):
    """Class-conditional generator: (z (B, latent_dim), y (B,)) -> images (B, C, bw*2**n, bw*2**n) in [-1, 1]."""

    def __init__(
        self,
        num_classes: int = 10,
        latent_dim: int = 128,
        width: int = 64,
        bottom_width: int = 4,
        spectral_norm: bool = False,
        num_blocks: int = 3,
        channels: int = 3,
    ):
        super().__init__()
        ch = 4 * width  # 256 at width 64
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        self.bottom_width = bottom_width
        self.image_size = bottom_width * 2**num_blocks
        self.contract = GeneratorContract(latent_dim, num_classes, (channels, self.image_size, self.image_size))
        self.linear = nn.Linear(latent_dim, ch * bottom_width * bottom_width)
        self.blocks = nn.ModuleList(GBlock(ch, ch, num_classes) for _ in range(num_blocks))
        self.out_bn = nn.BatchNorm2d(ch, eps=BN_EPS)
        self.out_conv = nn.Conv2d(ch, channels, 3, padding=1)
        _init_n02(self)
        if spectral_norm:
            apply_spectral_norm(self)  # convs and linears, not the CBN embeddings

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        bw = self.bottom_width
        # The latent layer stays out of autocast: rounding z to bf16 would hide the small steps that
        # inversion and condensation take on it (at lr 1e-3 most elements would not move at all).
        with torch.autocast(z.device.type, enabled=False):
            # (the bias gives the dtype: reading a spectral-normed weight would run a power iteration)
            h = self.linear(z.to(self.linear.bias.dtype)).view(z.shape[0], -1, bw, bw)  # (B, ch, bw, bw)
        for block in self.blocks:
            h = block(h, y)  # spatial x2 per block
        h = self.out_conv(F.relu(self.out_bn(h)))  # (B, C, S, S)
        return torch.tanh(h)


class DBlock(nn.Module):
    """Residual discriminator block (BigGAN DBlock, wide: hidden channels = out channels)."""

    def __init__(self, in_ch: int, out_ch: int, preactivation: bool, downsample: bool):
        super().__init__()
        self.preactivation = preactivation
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.learnable_sc = in_ch != out_ch or downsample
        self.conv_sc = nn.Conv2d(in_ch, out_ch, 1) if self.learnable_sc else None

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        # BigGAN: conv then pool with preactivation, pool then conv without (cheaper on 3-channel input)
        if self.preactivation:
            if self.conv_sc is not None:
                x = self.conv_sc(x)
            if self.downsample:
                x = F.avg_pool2d(x, 2)
        else:
            if self.downsample:
                x = F.avg_pool2d(x, 2)
            if self.conv_sc is not None:
                x = self.conv_sc(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        return h + self._shortcut(x)


class BigGANDiscriminator(nn.Module):
    """Projection discriminator: (x (B, C, S, S), y (B,)) -> logits (B,)."""

    def __init__(
        self, num_classes: int = 10, width: int = 64, spectral_norm: bool = True, channels: int = 3, image_size: int = 32
    ):
        super().__init__()
        ch = 4 * width
        self.num_classes = num_classes
        self.image_shape = (channels, image_size, image_size)
        downs = _discriminator_downsamples(image_size)  # 2 at 32 (32 -> 16 -> 8), 3 at 64, 2 at 28 (-> 7)
        layout = [True] * downs + [False, False]
        self.blocks = nn.ModuleList(
            DBlock(channels if i == 0 else ch, ch, preactivation=i > 0, downsample=down) for i, down in enumerate(layout)
        )
        self.linear = nn.Linear(ch, 1)
        self.embed = nn.Embedding(num_classes, ch)
        _init_n02(self)
        if spectral_norm:
            # BigGAN's D spectral-normalizes its projection embedding too (SNEmbedding)
            apply_spectral_norm(self, (nn.Conv2d, nn.Linear, nn.Embedding))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = x
        for block in self.blocks:
            h = block(h)
        h = F.relu(h).sum(dim=(2, 3))  # (B, ch)
        out = self.linear(h).squeeze(1)  # (B,)
        return out + (self.embed(y) * h).sum(dim=1)


# --- layouts by image size ----------------------------------------------------------------------------
MIN_BOTTOM_WIDTH = 4  # BigGAN starts every configuration from a 4x4 map; smaller would make 2x2 / 1x1 starts
MAX_IMAGE_SIZE = 1024  # BigGAN's largest configuration; also bounds what a file may ask us to build


@dataclass(frozen=True)
class GeneratorLayout:
    """Where a square image of ``image_size`` px starts: ``bottom_width`` * 2**``num_blocks`` = ``image_size``."""

    bottom_width: int
    num_blocks: int


def generator_layout(image_size: int) -> GeneratorLayout:
    """The most up-blocks that keep an integer bottom width >= 4: 32 -> 4x2**3, 64 -> 4x2**4, 28 -> 7x2**2."""
    blocks = 0
    while image_size % 2 ** (blocks + 1) == 0 and image_size // 2 ** (blocks + 1) >= MIN_BOTTOM_WIDTH:
        blocks += 1
    if blocks == 0:
        raise ConfigError(
            f"BigGAN cannot make {image_size}x{image_size} images: the size must be an even number >= 8 "
            "(a bottom width >= 4 times a power of two, e.g. 28, 32, 48, 64); pass --image-size to resize the data"
        )
    return GeneratorLayout(image_size // 2**blocks, blocks)


def _discriminator_downsamples(image_size: int) -> int:
    downs = 0
    while image_size > 8 and image_size % 2 == 0:
        image_size //= 2
        downs += 1
    return downs


# --- registered factories ------------------------------------------------------------------------------
def _check_image_size(name: str, image_size: int) -> int:
    return check_int(name, "image_size", image_size, minimum=8, maximum=MAX_IMAGE_SIZE)


def _generator(
    name: str,
    num_classes: int,
    latent_dim: int,
    width: int,
    bottom_width: int,
    spectral_norm: bool,
    num_blocks: int = 3,
    channels: int = 3,
) -> BigGANGenerator:
    return BigGANGenerator(
        num_classes=check_int(name, "num_classes", num_classes),
        latent_dim=check_int(name, "latent_dim", latent_dim),
        width=check_int(name, "width", width),
        bottom_width=check_int(name, "bottom_width", bottom_width),
        spectral_norm=check_choice(name, "spectral_norm", spectral_norm, (False, True)),
        num_blocks=num_blocks,
        channels=check_int(name, "channels", channels),
    )


def _discriminator(
    name: str, num_classes: int, width: int, spectral_norm: bool, channels: int = 3, image_size: int = 32
) -> BigGANDiscriminator:
    return BigGANDiscriminator(
        num_classes=check_int(name, "num_classes", num_classes),
        width=check_int(name, "width", width),
        spectral_norm=check_choice(name, "spectral_norm", spectral_norm, (False, True)),
        channels=check_int(name, "channels", channels),
        image_size=_check_image_size(name, image_size),
    )


@register_model
def biggan(
    num_classes: int = 10,
    latent_dim: int = 128,
    width: int = 64,
    image_size: int = 32,
    channels: int = 3,
    spectral_norm: bool = False,
) -> BigGANGenerator:
    """BigGAN generator for ``channels`` x ``image_size`` x ``image_size`` images (layout: generator_layout)."""
    name = "biggan"
    layout = generator_layout(_check_image_size(name, image_size))
    return _generator(name, num_classes, latent_dim, width, layout.bottom_width, spectral_norm, layout.num_blocks, channels)


@register_model
def biggan_disc(
    num_classes: int = 10, width: int = 64, image_size: int = 32, channels: int = 3, spectral_norm: bool = True
) -> BigGANDiscriminator:
    """BigGAN projection discriminator for ``channels`` x ``image_size`` x ``image_size`` images."""
    return _discriminator("biggan_disc", num_classes, width, spectral_norm, channels, image_size)


@register_model
def biggan32(
    num_classes: int = 10,
    latent_dim: int = 128,
    width: int = 64,
    bottom_width: int = 4,
    spectral_norm: bool = False,
) -> BigGANGenerator:
    """BigGAN 32x32 RGB generator as used by IT-GAN (4,304,387 parameters for 10 classes); = biggan(image_size=32)."""
    return _generator("biggan32", num_classes, latent_dim, width, bottom_width, spectral_norm)


@register_model
def biggan32_tiny(
    num_classes: int = 10,
    latent_dim: int = 128,
    width: int = 8,
    bottom_width: int = 4,
    spectral_norm: bool = False,
) -> BigGANGenerator:
    """biggan32 at width 8 (32 channels), for tests and CPU smoke runs."""
    return _generator("biggan32_tiny", num_classes, latent_dim, width, bottom_width, spectral_norm)


@register_model
def biggan32_disc(num_classes: int = 10, width: int = 64, spectral_norm: bool = True) -> BigGANDiscriminator:
    """DiffAugment-BigGAN-CIFAR discriminator for 32x32 images (4,207,361 parameters for 10 classes)."""
    return _discriminator("biggan32_disc", num_classes, width, spectral_norm)


@register_model
def biggan32_disc_tiny(
    num_classes: int = 10, width: int = 8, spectral_norm: bool = True
) -> BigGANDiscriminator:
    """biggan32_disc at width 8, for tests and CPU smoke runs."""
    return _discriminator("biggan32_disc_tiny", num_classes, width, spectral_norm)
