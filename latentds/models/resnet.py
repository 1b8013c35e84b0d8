"""torchvision classifiers adapted to 32x32 images: ResNet-18 and MobileNetV2 with stride-1 stems.

They subclass the torchvision models, so state-dict keys are torchvision's. Each exposes
``embed(x) -> (B, feat_dim)`` (the globally pooled feature) and ``forward(x) = classifier(embed(x))``.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.mobilenetv2 import MobileNetV2
from torchvision.models.resnet import BasicBlock, ResNet

from latentds.models.registry import check_int, register_model

__all__ = ["CifarMobileNetV2", "CifarResNet", "mobilenetv2_cifar", "resnet18_cifar"]


class CifarResNet(ResNet):
    """torchvision ResNet with a 3x3 stride-1 stem and no max-pool (the CIFAR ResNet)."""

    def __init__(self, layers: list[int], num_classes: int = 10, channels: int = 3):
        super().__init__(BasicBlock, layers, num_classes=num_classes)
        self.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
        self.maxpool = nn.Identity()
        self.feat_dim = self.fc.in_features  # 512
        # PyTorch's default init, as the reference's ResNet-18 (DC/DSA/DM ``networks.py``) and the evaluation
        # docs have it, not torchvision's kaiming-normal re-init (method.md, "Facts checked").
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                m.reset_parameters()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled features: (B, C, H, W) -> (B, 512)."""
        x = self.relu(self.bn1(self.conv1(x)))  # (B, 64, H, W)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512, H/8, W/8)
        return self.avgpool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))


class CifarMobileNetV2(MobileNetV2):
    """torchvision MobileNetV2 whose first conv has stride 1 (overall stride 16 instead of 32)."""

    def __init__(self, num_classes: int = 10, channels: int = 3):
        super().__init__(num_classes=num_classes)
        stem = self.features[0]  # Conv2dNormActivation: conv, BN, ReLU6
        out_ch = stem[0].out_channels
        stem[0] = nn.Conv2d(channels, out_ch, 3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(stem[0].weight, mode="fan_out")  # as torchvision
        self.feat_dim = self.last_channel  # 1280

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled features: (B, C, H, W) -> (B, 1280)."""
        return nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@register_model
def resnet18_cifar(num_classes: int = 10, channels: int = 3) -> CifarResNet:
    """ResNet-18 (BatchNorm) for 32x32 images: 11,173,962 parameters for 10 classes."""
    name = "resnet18_cifar"
    return CifarResNet(
        [2, 2, 2, 2],
        num_classes=check_int(name, "num_classes", num_classes),
        channels=check_int(name, "channels", channels),
    )


@register_model
def mobilenetv2_cifar(num_classes: int = 10, channels: int = 3) -> CifarMobileNetV2:
    """MobileNetV2 for 32x32 images (first conv stride 1)."""
    name = "mobilenetv2_cifar"
    return CifarMobileNetV2(
        num_classes=check_int(name, "num_classes", num_classes),
        channels=check_int(name, "channels", channels),
    )
