"""CIFAR ResNets (He et al. 2015) with the parameter-free "option A" shortcut.

Module names match the pretrained checkpoints of akamaster/pytorch_resnet_cifar10
(``conv1, bn1, layer{1,2,3}.{i}.conv1/bn1/conv2/bn2, linear``), which were trained on
inputs normalised with the ImageNet statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from automtd._errors import ConfigError
from automtd.models._registry import register_model
from automtd.models._spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec

__all__ = ["CifarResNet", "BasicBlock", "cifar_resnet"]


class ShortcutA(nn.Module):
    """Subsample by 2 and zero-pad the channels by ``pad`` on each side (no parameters)."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = ShortcutA(planes // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: 16/32/64 channels, global average pool, one linear layer."""

    def __init__(self, num_blocks: int, *, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, num_blocks, 1)
        self.layer2 = self._make_layer(32, num_blocks, 2)
        self.layer3 = self._make_layer(64, num_blocks, 2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def _make_layer(self, planes: int, n: int, stride: int) -> nn.Sequential:
        blocks = []
        for s in [stride] + [1] * (n - 1):
            blocks.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def cifar_resnet(depth: int, *, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet of the given depth (20, 32, 44, 56, 110, ... = 6n + 2)."""
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ConfigError(f"CIFAR ResNet depth {depth!r} is invalid; allowed 6n+2 (20, 32, 44, 56, 110)")
    return CifarResNet((depth - 2) // 6, num_classes=num_classes, in_channels=in_channels)


def _spec(depth: int) -> ModelSpec:
    return ModelSpec(
        name=f"cifar_resnet{depth}",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        known_input_size=(3, 32, 32),
        num_classes=10,
        description=f"CIFAR ResNet-{depth}, option-A shortcut (akamaster layout, ImageNet normalisation)",
    )


@register_model(_spec(20))
def cifar_resnet20(*, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return cifar_resnet(20, num_classes=num_classes, in_channels=in_channels)


@register_model(_spec(32))
def cifar_resnet32(*, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return cifar_resnet(32, num_classes=num_classes, in_channels=in_channels)


@register_model(_spec(44))
def cifar_resnet44(*, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return cifar_resnet(44, num_classes=num_classes, in_channels=in_channels)


@register_model(_spec(56))
def cifar_resnet56(*, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return cifar_resnet(56, num_classes=num_classes, in_channels=in_channels)


@register_model(_spec(110))
def cifar_resnet110(*, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return cifar_resnet(110, num_classes=num_classes, in_channels=in_channels)
