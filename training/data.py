"""Annotated data in the standard layout, splits, targets and augmentation.

Layout (used by ``../shared/data`` and by users' own data)::

    SET/images/NAME.tif   one image (2-D grayscale or H x W x 3 RGB; whole-cell
                          sets: C x H x W, cytoplasm then nuclei, zeros without
                          a nuclear stain)
    SET/masks/NAME.tif    instance labels, 0 = background
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from piximi_py import pipeline
from piximi_py.channels import stack_channels
from piximi_py.diameter import median_diameter
from piximi_py.io import read_image
from piximi_py.preprocess import RGB_FROM_HED, hematoxylin_density, normalize_percentile, separate_stains
from piximi_py.rescale import resize
from piximi_py.teach import class_targets, resize_labels, touching_mask  # noqa: F401 - also used from here

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass
class Sample:
    name: str
    image: np.ndarray   # normalized float32, (H, W) or (H, W, C)
    labels: np.ndarray  # int32 (H, W)
    source: str = ""    # the microscope/lab the image comes from (:func:`source_of`)
    diameter: float = float("nan")  # median nucleus diameter, px
    #: the image with its cytoplasm read inverted as the pipeline's ``invert`` reads it, for the
    #: transmitted-light sets trained in both polarities (:func:`load_set`'s ``inverted``)
    inverted: np.ndarray | None = None


def source_of(set_name: str, shape) -> str:
    """The acquisition source of an image, for leave-one-source-out evaluation.

    DSB2018 (``dsb2018_*``, and the StarDist sample drawn from it) mixes
    microscopes and labs without saying which; its image sizes follow its
    acquisition sets (520x696: BBBC022's U2OS screen; 256x256 and 360x360:
    two other groups), so the size is the source there, with the rarer
    sizes pooled. Every other set is one source.
    """
    if set_name.startswith("dsb2018") or set_name == "stardist_wheel":
        key = f"{shape[0]}x{shape[1]}"
        return f"dsb_{key}" if key in ("256x256", "360x360", "520x696") else "dsb_other"
    return set_name


#: Input roles of the whole-cell models, in channel order (``ModelSpec.input_roles``).
CELL_ROLES = ("cyto", "nuclei")


def load_set(root: Path, channel_mode: str = "gray", inverted: bool = False) -> list[Sample]:
    """Read every image/mask pair of one set and normalize the images.

    ``channel_mode``: "gray", "rgb", "cells" (the set's two channels,
    cytoplasm and nuclei, each normalized on its own as the pipeline does,
    :func:`piximi_py.channels.stack_channels`), "hematoxylin" (the
    hematoxylin density of a stained RGB image, as a ``stain`` model reads
    it, :func:`piximi_py.preprocess.hematoxylin_density`) or "stains" (the
    three stain densities, :func:`stain_densities`, for :func:`mix_stains`).
    ``inverted`` (mode "cells"): each sample also keeps its image with the
    cytoplasm read inverted (:func:`piximi_py.pipeline.inverted`), as the
    ``invert`` option reads it (``Sample.inverted``).
    """
    if inverted and channel_mode != "cells":
        raise ValueError("inverted: only whole-cell sets (channel mode 'cells') are read inverted")
    root = Path(root)
    samples = []
    for path in sorted((root / "images").glob("*.tif")):
        mask_path = root / "masks" / path.name
        if not mask_path.exists():
            continue
        labels = read_image(mask_path, color=False).astype(np.int32)
        if channel_mode == "cells":
            planes = read_image(path, keep_channels=True)
            mapping = {"cyto": 0, "nuclei": 1 if planes.ndim == 3 else None}
            image = np.moveaxis(stack_channels(planes, mapping, CELL_ROLES), 0, -1)
            if inverted:
                flipped = pipeline.inverted(planes, channel=None if planes.ndim == 2 else 0)
                flipped = np.moveaxis(stack_channels(flipped, mapping, CELL_ROLES), 0, -1)
        elif channel_mode == "hematoxylin":
            image = normalize_percentile(hematoxylin_density(read_image(path, color=True)))
        elif channel_mode == "stains":
            image = stain_densities(read_image(path, color=True))
        else:
            image = normalize_percentile(read_image(path, color=(channel_mode == "rgb")))
        samples.append(Sample(f"{root.name}/{path.stem}", image, labels,
                              source_of(root.name, labels.shape), median_diameter(labels)[0],
                              flipped if inverted else None))
    return samples


def is_validation(name: str, fraction: float = 0.25) -> bool:
    """Deterministic split by a hash of the name, stable as sets grow."""
    digest = hashlib.sha1(name.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2 ** 32 < fraction


def source_images(root: Path, max_images: int, validation_only: bool = False,
                  annotated_only: bool = False) -> list[Path]:
    """Up to ``max_images`` images of a set, chosen by a hash of their names (stable as sets grow).

    ``validation_only``: only those of the validation split (:func:`is_validation`);
    ``annotated_only``: only those with at least one nucleus (the set's ``index.csv``).
    """
    import csv

    root = Path(root)
    paths = sorted((root / "images").glob("*.tif"))
    if validation_only:
        paths = [p for p in paths if is_validation(f"{root.name}/{p.stem}")]
    if annotated_only:
        with open(root / "index.csv", newline="") as f:
            annotated = {r["name"] for r in csv.DictReader(f) if int(r["nuclei"])}
        paths = [p for p in paths if p.stem in annotated]
    return sorted(paths, key=lambda p: hashlib.sha1(f"{root.name}/{p.stem}".encode()).hexdigest())[:max_images]


def split(samples: list[Sample], fraction: float = 0.25):
    train = [s for s in samples if not is_validation(s.name, fraction)]
    val = [s for s in samples if is_validation(s.name, fraction)]
    return train, val


def resize_image(image: np.ndarray, shape) -> np.ndarray:
    """``image`` ``(H, W)`` or ``(H, W, C)`` resized to ``shape`` as the pipeline resizes
    (:func:`piximi_py.rescale.resize`, float32), channels kept last."""
    planes = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
    out = resize(planes, shape)
    return out[0] if image.ndim == 2 else np.moveaxis(out, 0, -1)


def random_crop(sample: Sample, size: int, rng: np.random.Generator,
                scale_range=(0.6, 1.6), boundary_width: int = 2, diameter: float | None = None,
                diameters: tuple[float, float] | None = None, formulation: str = "classes"):
    """A ``size`` x ``size`` crop, rescaled by a random factor, flipped and rotated.

    The factor is drawn log-uniformly from ``scale_range``; with
    ``diameter`` it multiplies the factor that brings the sample's median
    nucleus diameter to ``diameter`` px, the size the pipeline rescales
    every image to (``piximi_py.rescale``), resized the same way. With
    ``diameters`` ``(low, high)`` instead, the crop's median nucleus
    diameter is drawn log-uniformly from that range (px).

    Returns image (C, size, size) float32, class target (size, size) and the
    mask of pixels where two objects touch (weighted up in the loss); with
    ``formulation`` "flows" the target is :func:`flow_targets` of the crop.
    """
    image, labels = sample.image, sample.labels
    known = np.isfinite(sample.diameter)
    if diameters and known:
        scale = float(np.exp(rng.uniform(*np.log(diameters)))) / sample.diameter
    else:
        scale = float(np.exp(rng.uniform(*np.log(scale_range))))
        if diameter and known:
            scale *= diameter / sample.diameter
    src = max(8, int(round(size / scale)))
    h, w = labels.shape
    if h < src or w < src:  # pad small images by reflection
        ph, pw = max(0, src - h), max(0, src - w)
        pad = [(0, ph), (0, pw)] + [(0, 0)] * (image.ndim - 2)
        image = np.pad(image, pad, mode="reflect" if ph < h and pw < w else "symmetric")
        labels = np.pad(labels, [(0, ph), (0, pw)], mode="constant")
        h, w = labels.shape
    y, x = rng.integers(0, h - src + 1), rng.integers(0, w - src + 1)
    img = image[y:y + src, x:x + src]
    lab = labels[y:y + src, x:x + src]
    if src != size:
        if diameter or diameters:
            img, lab = resize_image(img, (size, size)), resize_labels(lab, (size, size))
        else:
            zoom = size / src
            zoom_img = (zoom, zoom) + (1,) * (img.ndim - 2)
            img = ndi.zoom(img, zoom_img, order=1, grid_mode=True, mode="reflect")[:size, :size]
            lab = ndi.zoom(lab, zoom, order=0, grid_mode=True, mode="nearest")[:size, :size]
    if img.ndim == 2:
        img = img[None]
    else:
        img = np.moveaxis(img, -1, 0)
    k = rng.integers(4)
    img, lab = np.rot90(img, k, axes=(1, 2)), np.rot90(lab, k)
    if rng.random() < 0.5:
        img, lab = img[:, :, ::-1], lab[:, ::-1]
    img = intensity_augment(np.ascontiguousarray(img, dtype=np.float32), rng)
    lab = np.ascontiguousarray(lab)
    target = flow_targets(lab) if formulation == "flows" else class_targets(lab, boundary_width)
    return img, target, touching_mask(lab)


def flow_targets(labels: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` float32 targets of the flow formulation: 1 on background, then the unit
    vector ``(dy, dx)`` from each pixel of an object towards its centre (0 on background).

    The centre is the object's deepest pixel (farthest from its edge, ties broken by the
    deepest neighbourhood), which lies inside even a curved cell. Cellpose diffuses heat from
    the centre so that the flow bends with the cell; a straight line costs one distance
    transform per crop, but where it leaves a strongly curved cell the pixels following it
    take the neighbour's flow and end at the neighbour's centre. That costs little on real
    cells: from these targets ``piximi_py.postprocess.flows_to_labels`` gives back the
    labels of a crop of every whole-cell set at AP@0.5 0.93-1.0.
    """
    labels = np.asarray(labels)
    target = np.zeros((3,) + labels.shape, np.float32)
    inside = labels > 0
    target[0] = ~inside
    n = int(labels.max())
    if n == 0:
        return target
    edge = (ndi.maximum_filter(labels, 3) != labels) | (ndi.minimum_filter(labels, 3) != labels)
    depth = ndi.distance_transform_edt(inside & ~edge)
    centres = np.zeros((n + 1, 2))
    centres[1:] = np.reshape(ndi.maximum_position(depth + 1e-3 * ndi.uniform_filter(depth, 5), labels,
                                                  np.arange(1, n + 1)), (-1, 2))
    rows, cols = np.indices(labels.shape)
    dy, dx = centres[labels, 0] - rows, centres[labels, 1] - cols
    length = np.hypot(dy, dx)
    moving = inside & (length > 0)
    target[1][moving] = dy[moving] / length[moving]
    target[2][moving] = dx[moving] / length[moving]
    return target


#: Absorbance of haematoxylin (nuclei) and eosin (the rest) per RGB channel.
HEMATOXYLIN = np.array([0.65, 0.70, 0.29], np.float32)
EOSIN = np.array([0.07, 0.99, 0.11], np.float32)


def gray_to_rgb(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A grayscale fluorescence crop (1, H, W) as a 3-channel crop for a colour model.

    Half the time the channels are simply repeated (fluorescence shown as
    RGB); otherwise the crop is rendered as a brightfield stain: nuclei absorb
    haematoxylin and the background a little eosin, with random strengths, so
    nuclei appear dark purple on pink as in H&E images.
    """
    g = np.clip(img[0], 0, None)
    if rng.random() < 0.5:
        return np.repeat(img, 3, axis=0)
    h = HEMATOXYLIN * rng.uniform(0.8, 2.0)
    e = EOSIN * rng.uniform(0.05, 0.6)
    absorbance = g[None] * h[:, None, None] + (1 - np.minimum(g, 1))[None] * e[:, None, None]
    return (np.exp(-absorbance) * rng.uniform(0.85, 1.05)).astype(np.float32)


def drop_nuclei(img: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """A whole-cell crop ``(2, H, W)`` with its nuclear channel zeroed with probability ``p``
    (as the pipeline gives a model when the image has no nuclear stain)."""
    if rng.random() < p:
        img = img.copy()
        img[1] = 0
    return img


def stain_densities(rgb: np.ndarray) -> np.ndarray:
    """Hematoxylin, eosin and residual (DAB) densities of a stained RGB image, ``(H, W, 3)``
    (Ruifrok-Johnston vectors), all scaled as :func:`piximi_py.preprocess.normalize_percentile`
    scales the hematoxylin density, so that channel 0 is what a ``stain`` model reads."""
    hed = separate_stains(rgb, RGB_FROM_HED).astype(np.float32)
    lo, hi = np.percentile(hed[..., 0], [1.0, 99.8])  # normalize_percentile's defaults
    span = float(hi - lo)
    if span < 1e-6:  # flat, as normalize_percentile gives it: nothing to read
        return np.zeros_like(hed)
    hed[..., 0] -= lo
    return hed / span


def mix_stains(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """The hematoxylin density ``(1, H, W)`` of a crop of :func:`stain_densities`, with a random
    share (up to ``strength`` either way) of the eosin and residual densities mixed in: what fixed
    stain vectors read from a slide whose stains differ from them."""
    a, b = rng.uniform(-strength, strength, 2)
    return (img[:1] + a * img[1:2] + b * img[2:3]).astype(np.float32)


def intensity_augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gamma, contrast/offset, blur and Gaussian noise, on normalized intensities."""
    if rng.random() < 0.5:
        gamma = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
        img = np.sign(img) * np.abs(img) ** gamma
    img = img * rng.uniform(0.7, 1.3) + rng.uniform(-0.15, 0.15)
    if rng.random() < 0.2:
        img = ndi.gaussian_filter(img, (0, *[rng.uniform(0.3, 1.2)] * 2))
    if rng.random() < 0.3:
        img = img + rng.normal(0, rng.uniform(0.01, 0.08), img.shape)
    return img.astype(np.float32)
