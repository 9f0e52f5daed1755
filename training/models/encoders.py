"""Encoder registry.

An encoder maps an image ``(N, C, H, W)`` to a list of feature maps at
strides 1, 2, 4, ... 2**depth. ``out_channels`` lists their channel counts,
so any decoder can be built on top of any encoder.
"""
from __future__ import annotations

import torch
from torch import nn

ENCODERS: dict[str, type] = {}


def register_encoder(name: str):
    def wrap(cls):
        ENCODERS[name] = cls
        cls.registry_name = name
        return cls
    return wrap


def get_encoder(name: str, in_channels: int = 1, depth: int = 4, **kwargs) -> nn.Module:
    try:
        cls = ENCODERS[name]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; known: {sorted(ENCODERS)}") from None
    return cls(in_channels=in_channels, depth=depth, **kwargs)


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by batch norm and ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


@register_encoder("vanilla")
class VanillaEncoder(nn.Module):
    """The original U-Net contracting path, with configurable width and depth."""

    def __init__(self, in_channels: int = 1, depth: int = 4, base_width: int = 16):
        super().__init__()
        widths = [base_width * 2 ** i for i in range(depth + 1)]
        self.out_channels = [in_channels] + widths
        self.stem = ConvBlock(in_channels, widths[0])
        self.stages = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), ConvBlock(widths[i], widths[i + 1])) for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x, self.stem(x)]
        for stage in self.stages:
            features.append(stage(features[-1]))
        return features
