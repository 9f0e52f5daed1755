"""Encoder registry.

An encoder maps an image ``(N, C, H, W)`` to a list of feature maps
``[x, f1, f2, ..., f_last]``: the input itself, then features at increasing
strides ending at ``2**depth``. ``out_channels`` lists their channel counts
and ``strides`` their strides (``[1, 1, 2, ..., 2**depth]`` for encoders with
a full-resolution feature such as ``vanilla`` and ``squeeze``;
``[1, 2, 4, ..., 2**depth]`` for ImageNet backbones whose first feature is at
stride 2), so any decoder can be built on top of any encoder.

Registered: ``vanilla`` and ``squeeze`` (here, random init) and
``mobilenet_v2`` and ``efficientnet_lite0`` (:mod:`.mobile`, optional
ImageNet weights).
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

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
    """Two 3x3 convolutions, each followed by batch norm and ReLU.

    The first writes ``mid`` channels (default ``cout``); structured pruning
    (:mod:`training.prune`) narrows it with :meth:`narrow`.
    """

    def __init__(self, cin: int, cout: int, mid: int | None = None):
        mid = cout if mid is None else mid
        super().__init__(
            nn.Conv2d(cin, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )

    @property
    def mid(self) -> int:
        return self[0].out_channels

    def narrow(self, mid: int) -> None:
        """Rebuild (untrained) with ``mid`` channels between the two convolutions."""
        self[0] = nn.Conv2d(self[0].in_channels, mid, 3, padding=1, bias=False)
        self[1] = nn.BatchNorm2d(mid)
        self[3] = nn.Conv2d(mid, self[3].out_channels, 3, padding=1, bias=False)


def _conv_bn_relu(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Fire(nn.Module):
    """SqueezeNet fire module: 1x1 squeeze, then 1x1 and 3x3 expands concatenated.

    ``cout`` channels out (half from each expand); the squeeze has
    ``max(min_squeeze, round(cout * squeeze_ratio))`` channels. Each conv is
    followed by batch norm and ReLU.

    The two expands run as one 3x3 convolution whose first ``cout // 2``
    filters are the 1x1 weights placed at the kernel centre: the same function
    as concatenating two convolutions, but one Conv and no Concat in the
    exported graph (half the nodes, and no layout reorders around a Concat in
    onnxruntime). In eval mode the batch norm is folded into that weight and
    bias with tensor ops on parameters only, which the ONNX exporter
    constant-folds: the export holds one Conv (with bias) and one Relu.
    """

    def __init__(self, cin: int, cout: int, squeeze_ratio: float = 0.25, min_squeeze: int = 4):
        super().__init__()
        squeeze = max(min_squeeze, round(cout * squeeze_ratio))
        self.squeeze = _conv_bn_relu(cin, squeeze, 1)
        # initialised as PyTorch initialises each of the two convolutions
        self.expand1 = nn.Parameter(nn.Conv2d(squeeze, cout // 2, 1, bias=False).weight.detach())
        self.expand3 = nn.Parameter(nn.Conv2d(squeeze, cout - cout // 2, 3, bias=False).weight.detach())
        self.bn = nn.BatchNorm2d(cout)
        centre = torch.zeros(1, 1, 3, 3)
        centre[..., 1, 1] = 1.0
        self.register_buffer("centre", centre, persistent=False)

    def expand_weight(self) -> torch.Tensor:
        """The ``(cout, squeeze, 3, 3)`` weight of both expands."""
        return torch.cat([self.expand1 * self.centre, self.expand3], dim=0)

    def forward(self, x):
        s = self.squeeze(x)
        w = self.expand_weight()
        if self.training or not self.bn.track_running_stats:
            return F.relu(self.bn(F.conv2d(s, w, padding=1)))
        scale = self.bn.weight * torch.rsqrt(self.bn.running_var + self.bn.eps)
        bias = self.bn.bias - self.bn.running_mean * scale
        return F.relu(F.conv2d(s, w * scale.reshape(-1, 1, 1, 1), bias, padding=1))


class FireBlock(nn.Sequential):
    """Two fire modules: the fire counterpart of :class:`ConvBlock`."""

    def __init__(self, cin: int, cout: int, squeeze_ratio: float = 0.25):
        super().__init__(Fire(cin, cout, squeeze_ratio), Fire(cout, cout, squeeze_ratio))


@register_encoder("vanilla")
class VanillaEncoder(nn.Module):
    """The original U-Net contracting path, with configurable width and depth."""

    def __init__(self, in_channels: int = 1, depth: int = 4, base_width: int = 16):
        super().__init__()
        widths = [base_width * 2 ** i for i in range(depth + 1)]
        self.out_channels = [in_channels] + widths
        self.strides = [1] + [2 ** i for i in range(depth + 1)]
        self.stem = ConvBlock(in_channels, widths[0])
        self.stages = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), ConvBlock(widths[i], widths[i + 1])) for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x, self.stem(x)]
        for stage in self.stages:
            features.append(stage(features[-1]))
        return features


@register_encoder("squeeze")
class SqueezeEncoder(nn.Module):
    """Squeeze U-Net contracting path: the vanilla layout with fire modules.

    A 3x3 conv stem and a fire module at full resolution, then ``depth``
    stages of max-pool and two fire modules, doubling the width each time
    (``base_width * 2**i``). Features at strides 1, 2, ..., ``2**depth`` as
    ``vanilla``. Pair with ``Unet(..., decoder_block="fire")`` for the whole
    lightweight Squeeze U-Net (Beheshti & Johnson, 2020).
    """

    def __init__(self, in_channels: int = 1, depth: int = 4, base_width: int = 24,
                 squeeze_ratio: float = 0.25):
        super().__init__()
        widths = [base_width * 2 ** i for i in range(depth + 1)]
        self.out_channels = [in_channels] + widths
        self.strides = [1] + [2 ** i for i in range(depth + 1)]
        self.stem = nn.Sequential(_conv_bn_relu(in_channels, widths[0], 3),
                                  Fire(widths[0], widths[0], squeeze_ratio))
        self.stages = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), FireBlock(widths[i], widths[i + 1], squeeze_ratio))
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x, self.stem(x)]
        for stage in self.stages:
            features.append(stage(features[-1]))
        return features


from . import mobile  # noqa: E402,F401  (registers mobilenet_v2 and efficientnet_lite0)
