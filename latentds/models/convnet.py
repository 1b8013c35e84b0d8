"""Plain convolutional classifiers: ConvNet-3 (embedding function and evaluation model) and VGG-11-BN.

Both use PyTorch default initialization: the method's random embedding networks are freshly built ConvNets.
Each exposes ``embed(x) -> (B, feat_dim)`` and ``forward(x) = classifier(embed(x))``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from latentds.errors import ConfigError
from latentds.models.registry import check_choice, check_int, register_model

__all__ = ["VGG", "ConvNet", "convnet3", "convnet_depth", "vgg11_cifar"]

NORMS = ("instancenorm", "batchnorm", "none")


def _norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)  # one group per channel = instance norm
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class ConvNet(nn.Module):
    """``depth`` x [conv3x3 -> norm -> ReLU -> avgpool2], flatten, linear (the DC/DSA/DM ConvNet)."""

    def __init__(
        self,
        num_classes: int = 10,
        channels: int = 3,
        width: int = 128,
        depth: int = 3,
        image_size: int = 32,
        norm: str = "instancenorm",
    ):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = channels
        for _ in range(depth):
            layers += [
                nn.Conv2d(in_ch, width, 3, padding=1),
                _norm_layer(norm, width),
                nn.ReLU(inplace=True),
                nn.AvgPool2d(2),
            ]
            in_ch = width
        self.features = nn.Sequential(*layers)
        side = image_size // 2**depth  # AvgPool2d floors: 28 -> 14 -> 7 -> 3
        self.feat_dim = width * side * side  # 2048 for width 128, depth 3, 32x32; 1152 at 28x28
        self.classifier = nn.Linear(self.feat_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features: (B, C, H, W) -> (B, feat_dim)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    """CIFAR-style VGG with BatchNorm: conv features, global average pool, one linear layer."""

    def __init__(self, cfg: tuple[int | str, ...], num_classes: int = 10, channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                assert isinstance(v, int)
                layers += [nn.Conv2d(in_ch, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                in_ch = v
        # 1x1 already at 32x32; the pool lets larger images through without changing the weights
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.features = nn.Sequential(*layers)
        self.feat_dim = in_ch
        self.classifier = nn.Linear(in_ch, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features: (B, C, H, W) -> (B, 512)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def convnet_depth(image_size: int) -> int:
    """ConvNet depth by resolution, as the dataset-condensation code uses it: 3 at 28 and 32 px, 4 at 64, 5 at 128."""
    depth = max(1, round(math.log2(max(image_size, 2))) - 2)
    while depth > 1 and image_size < 2**depth:
        depth -= 1
    return depth


@register_model(inputs=lambda shape: {"channels": shape[0], "image_size": shape[1], "depth": convnet_depth(shape[1])})
def convnet3(
    num_classes: int = 10,
    channels: int = 3,
    width: int = 128,
    depth: int = 3,
    image_size: int = 32,
    norm: str = "instancenorm",
) -> ConvNet:
    """ConvNet-3 of the dataset-condensation literature (320,010 parameters at the defaults).

    ``depth`` blocks halve the image each (flooring, like the reference's AvgPool2d); the pipeline picks the
    depth by resolution (:func:`convnet_depth`, 4 at 64x64 as DC/DM's ConvNetD4), any channel count.
    """
    name = "convnet3"
    check_int(name, "depth", depth, maximum=16)
    check_int(name, "image_size", image_size)
    if image_size < 2**depth:
        raise ConfigError(
            f"model {name!r}: image_size {image_size} is too small for depth {depth} (needs >= 2**depth = {2**depth})"
        )
    return ConvNet(
        num_classes=check_int(name, "num_classes", num_classes),
        channels=check_int(name, "channels", channels),
        width=check_int(name, "width", width),
        depth=depth,
        image_size=image_size,
        norm=check_choice(name, "norm", norm, NORMS),
    )


@register_model
def vgg11_cifar(num_classes: int = 10, channels: int = 3) -> VGG:
    """VGG-11 with BatchNorm for 32x32 images, one linear classifier on the 512-d pooled feature."""
    name = "vgg11_cifar"
    return VGG(
        VGG11_CFG,
        num_classes=check_int(name, "num_classes", num_classes),
        channels=check_int(name, "channels", channels),
    )
