"""U-Net decoder composed with any registered encoder."""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from .encoders import ConvBlock, FireBlock, get_encoder

DECODER_BLOCKS = {"conv": ConvBlock, "fire": FireBlock}
#: The flow activation's head learns the flows this many times larger, as Cellpose does: unit vectors
#: are small targets next to the foreground's cross-entropy.
FLOW_SCALE = 5.0


class DecoderBlock(nn.Module):
    """Upsample (nearest), concatenate the skip (if any), then a conv or fire block.

    Without a skip, the block upsamples to ``size`` when given (the input
    resolution, for the last block) or by 2.
    """

    def __init__(self, cin: int, cskip: int, cout: int, block: str = "conv"):
        super().__init__()
        try:
            make = DECODER_BLOCKS[block]
        except KeyError:
            raise ValueError(f"unknown decoder_block {block!r}; known: {sorted(DECODER_BLOCKS)}") from None
        self.block = make(cin + cskip, cout)

    def forward(self, x, skip=None, size=None):
        if skip is not None:
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = torch.cat([x, skip], dim=1)
        elif size is not None:
            x = F.interpolate(x, size=size, mode="nearest")
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.block(x)


def inner_width(width: int, ratio: float) -> int:
    """Channels kept inside a conv block of output ``width`` at pruning ``ratio``."""
    return max(4, int(round(width * ratio)))


class Unet(nn.Module):
    """U-Net: encoder features fused top-down by concatenation.

    The output is always at the input resolution: the decoder has one block
    per skip (``features[1:-1]``) and, for encoders whose first feature is at
    stride 2 or more (``mobilenet_v2``, ``efficientnet_lite0``), extra
    upsampling blocks without a skip, as in segmentation_models_pytorch.

    Parameters
    ----------
    encoder_name : str
        Key of :data:`training.models.ENCODERS`.
    in_channels : int
        Image channels (1 for fluorescence, 3 for RGB).
    classes : int
        Output channels of the segmentation head.
    depth : int
        Number of downsamplings; inputs must be divisible by ``2**depth``
        (``model.input_multiple``).
    activation : {"softmax", "flows", None}
        Applied by the head, so the exported ONNX returns probabilities.
        ``"flows"`` (``classes`` 3): the probability of background, then a
        flow field (dy, dx), the unit vector from each pixel of an object
        towards its centre (:func:`training.data.flow_targets`).
    decoder_channels : list of int, optional
        Output width of each decoder block, deepest first. Default: each
        block as wide as its skip (for ``vanilla``, the original U-Net
        widths), and extra (skipless) blocks 16 wide (smp's last width) or
        as wide as the shallowest feature if that is narrower.
    decoder_block : {"conv", "fire"}
        Two 3x3 conv+BN+ReLU per block, or two SqueezeNet fire modules
        (with the ``squeeze`` encoder: Squeeze U-Net).
    space_to_depth : int
        Block size ``k`` of a space-to-depth stem: the image enters as
        ``k*k*in_channels`` channels at ``1/k`` resolution (ONNX
        ``SpaceToDepth``) and the head predicts ``k*k*classes`` channels
        that a depth-to-space restores to full resolution. The network then
        has no full-resolution layer, where narrow convolutions are slowest
        in WebAssembly (see ``models/ZOO.md``); 1 means none.
    inner_ratio : float
        Share of each conv block's output width kept between its two
        convolutions (at least 4 channels); below 1 for the structurally
        pruned variants (:mod:`training.prune`).
    **encoder_kwargs
        Passed to the encoder, e.g. ``base_width`` or ``weights="imagenet"``.
    """

    def __init__(self, encoder_name="vanilla", in_channels=1, classes=3, depth=4,
                 activation="softmax", decoder_channels=None, decoder_block="conv", space_to_depth=1,
                 inner_ratio=1.0, **encoder_kwargs):
        super().__init__()
        self.space_to_depth = int(space_to_depth)
        self.in_channels = in_channels
        cells = self.space_to_depth ** 2
        self.encoder = get_encoder(encoder_name, in_channels=in_channels * cells, depth=depth, **encoder_kwargs)
        enc = self.encoder.out_channels  # [in, f1, ..., f_last]
        strides = getattr(self.encoder, "strides", [1] + [2 ** i for i in range(len(enc) - 1)])
        if strides[-1] != 2 ** depth:
            raise ValueError(f"encoder {encoder_name!r} ends at stride {strides[-1]}, not 2**depth={2 ** depth}")
        skips = enc[1:-1][::-1]
        n_up = int(round(math.log2(strides[1])))  # skipless blocks back to stride 1
        if decoder_channels is None:
            decoder_channels = list(skips) + [min(enc[1], 16)] * n_up
        decoder_channels = list(decoder_channels)
        if len(decoder_channels) != len(skips) + n_up:
            raise ValueError(f"decoder_channels needs {len(skips) + n_up} widths, got {len(decoder_channels)}")
        blocks, cin = [], enc[-1]
        for cskip, cout in zip(skips + [0] * n_up, decoder_channels):
            blocks.append(DecoderBlock(cin, cskip, cout, decoder_block))
            cin = cout
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(cin, classes * cells, 1)
        self.activation = activation
        self.depth = depth
        self.input_multiple = 2 ** depth * self.space_to_depth
        self.n_skips = len(skips)
        self.inner_ratio = float(inner_ratio)
        if self.inner_ratio != 1.0:
            for block in [m for m in self.modules() if isinstance(m, ConvBlock)]:
                block.narrow(inner_width(block[3].out_channels, self.inner_ratio))

    def forward(self, x):
        if self.space_to_depth > 1:
            x = F.pixel_unshuffle(x, self.space_to_depth)
        features = self.encoder(x)
        skips = features[1:-1][::-1]
        y = features[-1]
        last = len(self.decoder) - 1
        for i, block in enumerate(self.decoder):
            if i < self.n_skips:
                y = block(y, skips[i])
            else:
                y = block(y, size=x.shape[-2:] if i == last else None)
        y = self.head(y)
        if self.space_to_depth > 1:
            y = F.pixel_shuffle(y, self.space_to_depth)
        if self.activation == "softmax":
            y = torch.softmax(y, dim=1)
        elif self.activation == "flows":  # P(background), then the flow (dy, dx), learned at FLOW_SCALE
            y = torch.cat([torch.sigmoid(y[:, :1]), y[:, 1:] / FLOW_SCALE], 1)
        return y
