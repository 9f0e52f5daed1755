"""Experiments of docs/research/stained.md: an ImageNet-pretrained encoder for stained slides."""
