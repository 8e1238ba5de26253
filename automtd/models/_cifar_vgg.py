"""VGG-11/16 with batch norm for 32x32 inputs (the CIFAR variants the MTD paper compresses).

Five stages of 3x3 convs + BN + ReLU with max pooling bring 32x32 down to 1x1 with 512 channels;
the classifier is a single ``Linear(512, num_classes)`` (the common CIFAR layout).
"""

from __future__ import annotations

import torch
from torch import nn

from automtd.models._registry import register_model
from automtd.models._spec import CIFAR10_MEAN, CIFAR10_STD, ModelSpec

__all__ = ["CifarVGG", "VGG_CFGS"]

VGG_CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class CifarVGG(nn.Module):
    def __init__(self, cfg: list[int | str], *, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                out = int(item)
                conv = nn.Conv2d(channels, out, 3, padding=1, bias=False)
                layers += [conv, nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def _spec(name: str, depth: int) -> ModelSpec:
    return ModelSpec(
        name=name,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        known_input_size=(3, 32, 32),
        num_classes=10,
        description=f"VGG-{depth} with batch norm for 32x32 inputs (CIFAR normalisation)",
    )


@register_model(_spec("cifar_vgg11_bn", 11))
def cifar_vgg11_bn(*, num_classes: int = 10, in_channels: int = 3) -> CifarVGG:
    return CifarVGG(VGG_CFGS["vgg11"], num_classes=num_classes, in_channels=in_channels)


@register_model(_spec("cifar_vgg16_bn", 16))
def cifar_vgg16_bn(*, num_classes: int = 10, in_channels: int = 3) -> CifarVGG:
    return CifarVGG(VGG_CFGS["vgg16"], num_classes=num_classes, in_channels=in_channels)
