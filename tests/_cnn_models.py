"""A timm-style ResNet50 written with plain ``torch.nn`` (timm and torchvision do not import here).

Same layout as timm's ``resnet50`` (and torchvision's v1.5): stem conv7x7/2 - BN - ReLU -
maxpool3x3/2, four stages of bottleneck blocks (3, 4, 6, 3) with widths c, 2c, 4c, 8c and
expansion 4 (stride on the 3x3 conv, 1x1 conv + BN downsample on the first block of each stage),
global average pool, Linear. ``width=64`` is the real network (25,557,032 parameters).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Bottleneck", "ResNet50", "resnet50"]


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int):
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = nn.ReLU()
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.act3 = nn.ReLU()
        self.downsample = None
        if stride != 1 or in_channels != out:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.act3(x + shortcut)


class ResNet50(nn.Module):
    def __init__(self, width: int = 64, num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages, prev = [], width
        for i, n in enumerate((3, 4, 6, 3)):
            w = width * 2 ** i
            blocks = []
            for j in range(n):
                blocks.append(Bottleneck(prev, w, 2 if (i > 0 and j == 0) else 1))
                prev = w * Bottleneck.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x):
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.global_pool(x), 1))


def resnet50(width: int = 64, num_classes: int = 1000, in_channels: int = 3) -> ResNet50:
    """timm-style ResNet50 with base width ``width`` (64 for the real network).

    >>> sum(p.numel() for p in resnet50().parameters())
    25557032
    """
    return ResNet50(width, num_classes, in_channels)
