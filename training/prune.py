"""Structured channel pruning of a trained U-Net.

Each conv block (two 3x3 convolutions) keeps the channels between its two
convolutions whose batch-norm scale is largest in magnitude (the "network
slimming" criterion: a channel with a small scale contributes little after
normalization); the pruned convolutions lose those filters and the matching
input slices. The block's output width, and so every skip and the head, stay
as they were. The pruned model is then fine-tuned (``training.zoo``
variants with ``prune_from``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .models import Unet
from .models.encoders import ConvBlock
from .models.unet import inner_width


def prune_inner_channels(model: Unet, config: dict, ratio: float) -> Unet:
    """A copy of ``model`` (built from ``config``) keeping ``ratio`` of each block's inner channels."""
    pruned = Unet(**{**config, "inner_ratio": ratio}).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    blocks = [(name, m) for name, m in model.named_modules() if isinstance(m, ConvBlock)]
    for name, block in blocks:
        mid = inner_width(block[3].out_channels, ratio)
        keep = torch.argsort(block[1].weight.detach().abs(), descending=True)[:mid].sort().values
        state[f"{name}.0.weight"] = block[0].weight.detach()[keep].clone()
        for key in ("weight", "bias", "running_mean", "running_var"):
            state[f"{name}.1.{key}"] = getattr(block[1], key).detach()[keep].clone()
        state[f"{name}.3.weight"] = block[3].weight.detach()[:, keep].clone()
    pruned.load_state_dict(state)
    return pruned


def prune_checkpoint(parent: Path, out: Path, ratio: float) -> Path:
    """Prune ``parent``'s model into a checkpoint at ``out`` (the fine-tune's starting point)."""
    from .train import save_checkpoint, unet_from_checkpoint

    ckpt = torch.load(parent, map_location="cpu", weights_only=True)
    pruned = prune_inner_channels(unet_from_checkpoint(ckpt), ckpt["config"], ratio)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(pruned, {**ckpt["config"], "inner_ratio": ratio}, out, 0)
    return out
