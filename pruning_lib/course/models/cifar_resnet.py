"""CIFAR ResNets: basic-block ResNet-20/32/44/56/110 (He et al. 2016, widths 16/32/64), the CIFAR
ResNet-18 (basic blocks, widths 64..512) and the CIFAR bottleneck ResNet-50/101 used by DFPC.

All use a 3x3 stride-1 stem, no max-pool, and a 1x1 conv + BN projection shortcut where a block
changes shape (option B), global average pooling and one linear classifier.
"""
from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)   # stride on the 3x3
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU()
        self.shortcut = _shortcut(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False),
                         nn.BatchNorm2d(out_planes))


class CifarResNet(nn.Module):
    """A ResNet for 32x32 inputs: stem, one stage per width, global average pool, classifier."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], depths: list[int],
                 widths: list[int], num_classes: int = 10, stem_width: int | None = None):
        super().__init__()
        stem_width = stem_width or widths[0]
        self.conv1 = nn.Conv2d(3, stem_width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU()
        in_planes = stem_width
        stages = []
        for i, (depth, width) in enumerate(zip(depths, widths)):
            blocks = []
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(in_planes, width, stride))
                in_planes = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def _basic(n: int, num_classes: int) -> CifarResNet:
    return CifarResNet(BasicBlock, [n] * 3, [16, 32, 64], num_classes)


def resnet20(num_classes: int = 10) -> CifarResNet:
    return _basic(3, num_classes)


def resnet32(num_classes: int = 10) -> CifarResNet:
    return _basic(5, num_classes)


def resnet44(num_classes: int = 10) -> CifarResNet:
    return _basic(7, num_classes)


def resnet56(num_classes: int = 10) -> CifarResNet:
    return _basic(9, num_classes)


def resnet110(num_classes: int = 10) -> CifarResNet:
    return _basic(18, num_classes)


def cifar_resnet18(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(BasicBlock, [2, 2, 2, 2], [64, 128, 256, 512], num_classes)


def cifar_resnet50(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(Bottleneck, [3, 4, 6, 3], [64, 128, 256, 512], num_classes)


def cifar_resnet101(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(Bottleneck, [3, 4, 23, 3], [64, 128, 256, 512], num_classes)


__all__ = ["BasicBlock", "Bottleneck", "CifarResNet", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
           "cifar_resnet18", "cifar_resnet50", "cifar_resnet101"]
