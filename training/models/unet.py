"""U-Net decoder composed with any registered encoder."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .encoders import ConvBlock, get_encoder


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.block = ConvBlock(cin + cskip, cout)

    def forward(self, x, skip):
        x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return self.block(torch.cat([x, skip], dim=1))


class Unet(nn.Module):
    """U-Net: encoder features fused top-down by concatenation.

    Parameters
    ----------
    encoder_name : str
        Key of :data:`training.models.ENCODERS`.
    in_channels : int
        Image channels (1 for fluorescence, 3 for RGB).
    classes : int
        Output channels of the segmentation head.
    depth : int
        Number of downsamplings; inputs must be divisible by ``2**depth``.
    activation : {"softmax", None}
        Applied by the head, so the exported ONNX returns probabilities.
    """

    def __init__(self, encoder_name="vanilla", in_channels=1, classes=3, depth=4,
                 activation="softmax", **encoder_kwargs):
        super().__init__()
        self.encoder = get_encoder(encoder_name, in_channels=in_channels, depth=depth, **encoder_kwargs)
        enc = self.encoder.out_channels  # [in, s1, s2, ..., s_depth]
        skips = enc[1:-1][::-1]
        widths = skips
        blocks, cin = [], enc[-1]
        for cskip, cout in zip(skips, widths):
            blocks.append(DecoderBlock(cin, cskip, cout))
            cin = cout
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(cin, classes, 1)
        self.activation = activation
        self.depth = depth

    def forward(self, x):
        features = self.encoder(x)
        y = features[-1]
        for block, skip in zip(self.decoder, features[1:-1][::-1]):
            y = block(y, skip)
        y = self.head(y)
        if self.activation == "softmax":
            y = torch.softmax(y, dim=1)
        return y
