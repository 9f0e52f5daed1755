"""Synthetic whole cells (fluorescence cytoplasm + nuclei, or transmitted light) with instance labels.

Extra training crops for the whole-cell model (:mod:`training.cells`), for the
modality its three real sources hold least of: a fluorescent cytoplasm or
membrane stain beside a nuclear stain. Each cell grows around a seed as an
elongated, irregular region (a radial Fourier outline, as the nuclei of
:mod:`training.synthetic`); where cells meet, a pixel goes to the cell it is
relatively closest to, so confluent cells tile the field along irregular
borders and sparse ones stand alone. The cytoplasm takes one of three
looks per image (a diffuse stain brightest around the nucleus, a cortical
or membrane stain brightest at the rim, an even stain with texture), a
brightness per cell (neighbours often differ little: the hard case), a
nucleus that excludes or takes up the stain, blur, uneven background and
illumination, Poisson and Gaussian noise. The nuclear channel holds one
textured nucleus per cell. :func:`synthetic_transmitted_cells` shows the same
cells by phase contrast or DIC instead, rendered from each cell's optical
thickness, for the modality a fold may never see among the real sources.

Only numpy and scipy; every draw comes from the generator passed in. Never
used for evaluation: real sources only (DEVELOPERS.md). A training run takes
them with ``synthetic_fraction`` (a two-channel :class:`training.train.CropStream`);
the shipped recipe (:data:`training.cells.RECIPE`) takes 30 %, half of them by
transmitted light (``synthetic_transmitted``). The fluorescence ones lift the fold
that never saw a fluorescent cytoplasm several-fold (docs/research/cells.md, *Whole cells: flows
and synthetic cells, shipped*); the transmitted-light ones lift the folds that never
saw phase contrast or DIC (docs/research/cells.md, *Whole cells: synthetic transmitted light, shipped*).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from piximi_py.preprocess import normalize_percentile

from .synthetic import _loguniform

__all__ = ["synthetic_cells", "synthetic_transmitted_cells"]

_HARMONICS = 5


def _seeds(rng, shape, n, spacing):
    """Up to ``n`` points at least ``spacing`` apart (dart throwing)."""
    points = []
    for _ in range(n * 20):
        p = rng.uniform((0, 0), shape)
        if all((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 >= spacing ** 2 for q in points):
            points.append(p)
            if len(points) == n:
                break
    return np.array(points).reshape(-1, 2)


def _smooth_noise(rng, shape, sigma):
    field = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field / (field.std() + 1e-6)


def _relative_distance(yy, xx, centre, radius, elongation, angle, harmonics):
    """Each pixel's distance from ``centre`` over the outline's radius in its direction (1 on the
    outline) for an ellipse of mean radius ``radius`` with a radial Fourier perturbation."""
    dy, dx = yy - centre[0], xx - centre[1]
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    u, v = u / math.sqrt(elongation), v * math.sqrt(elongation)
    phi = np.arctan2(v, u)
    outline = np.ones_like(phi)
    for k, (a, p) in enumerate(harmonics, start=2):
        outline += a * np.cos(k * phi + p)
    return np.hypot(u, v) / (radius * np.maximum(outline, 0.4))


def _cells_raw(rng: np.random.Generator, shape=(256, 256)):
    h, w = shape
    diameter = rng.uniform(22.0, 55.0)
    confluence = rng.uniform(0.25, 1.1)
    n = max(2, int(confluence * h * w / (math.pi / 4 * diameter ** 2)))
    seeds = _seeds(rng, shape, min(n, 150), 0.55 * diameter)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    best = np.full(shape, np.inf, np.float32)
    labels = np.zeros(shape, np.int32)
    nucleus = np.zeros(shape, np.float32)   # relative distance to the nucleus outline, per pixel of its cell
    nuclei = np.zeros(shape, np.int32)
    spread = rng.uniform(0.1, 0.3)
    wobble = _smooth_noise(rng, shape, diameter / 4) * rng.uniform(0.02, 0.12)
    for i, centre in enumerate(seeds, start=1):
        radius = diameter / 2 * _loguniform(rng, 1 - spread, 1 + spread)
        elongation = _loguniform(rng, 1.0, 2.5)
        angle = rng.uniform(0, math.pi)
        harmonics = [(rng.uniform(0, 0.25) / k ** 0.5, rng.uniform(0, 2 * math.pi)) for k in range(2, 2 + _HARMONICS)]
        reach = int(radius * math.sqrt(elongation) * 1.6) + 2
        y0, y1 = max(0, int(centre[0]) - reach), min(h, int(centre[0]) + reach + 1)
        x0, x1 = max(0, int(centre[1]) - reach), min(w, int(centre[1]) + reach + 1)
        box = (slice(y0, y1), slice(x0, x1))
        d = _relative_distance(yy[box], xx[box], centre, radius, elongation, angle, harmonics) + wobble[box]
        mine = d < best[box]
        best[box][mine] = d[mine]
        labels[box][mine & (d < 1)] = i
        # the nucleus: a smaller, rounder ellipse near the seed
        r_n = radius * rng.uniform(0.3, 0.5)
        offset = rng.normal(0, 0.15 * radius, 2)
        dn = _relative_distance(yy[box], xx[box], centre + offset, r_n, _loguniform(rng, 1.0, 1.5),
                                rng.uniform(0, math.pi), [(rng.uniform(0, 0.08), rng.uniform(0, 6.3))])
        inside = (dn < 1) & (labels[box] == i)
        nuclei[box][inside] = i
        nucleus[box][inside] = dn[inside]
    labels[best >= 1] = 0
    nuclei[labels != nuclei] = 0
    whole = _whole_cells(labels, 0.1 * math.pi / 4 * diameter ** 2)
    nuclei[whole == 0] = 0
    nuclei[nuclei > 0] = whole[nuclei > 0]
    return whole, nuclei, best, nucleus


def _whole_cells(labels, min_area):
    """Each cell as its largest piece (a neighbour may cut a cell in two), cells under ``min_area``
    pixels dropped, numbered ``1..n``."""
    out = np.zeros_like(labels)
    n = 0
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        pieces, count = ndi.label(labels[box] == i)
        if count == 0:
            continue
        sizes = np.bincount(pieces.ravel())
        sizes[0] = 0
        if sizes.max() >= min_area:
            n += 1
            out[box][pieces == sizes.argmax()] = n
    return out


def _cytoplasm(rng, labels, nuclei, distance):
    """The cytoplasm stain of every cell: a look per image, a brightness per cell."""
    n = int(labels.max()) + 1
    brightness = _loguniform(rng, 0.25, 1.0, n).astype(np.float32)
    if rng.random() < 0.5:  # neighbours alike: their border shows only as a dimmer seam, if at all
        brightness = (0.7 + 0.3 * brightness / brightness.max()).astype(np.float32)
    brightness[0] = 0
    look = rng.choice(["diffuse", "rim", "even"], p=[0.45, 0.25, 0.3])
    d = np.clip(distance, 0, 1)
    if look == "diffuse":
        profile = 1.0 - rng.uniform(0.3, 0.8) * d ** 2
    elif look == "rim":
        profile = rng.uniform(0.2, 0.5) + d ** rng.uniform(3, 8)
    else:
        profile = np.ones_like(d)
    texture = 1 + rng.uniform(0.05, 0.4) * _smooth_noise(rng, labels.shape, rng.uniform(1, 4))
    image = brightness[labels] * profile * np.clip(texture, 0.2, None)
    image[nuclei > 0] *= rng.uniform(0.4, 1.3)  # the nucleus excludes or takes up the stain
    return image.astype(np.float32)


def _nuclear(rng, nuclei, nucleus_distance):
    n = int(nuclei.max()) + 1
    brightness = _loguniform(rng, 0.3, 1.0, n).astype(np.float32)
    brightness[0] = 0
    chromatin = 1 + rng.uniform(0.05, 0.3) * _smooth_noise(rng, nuclei.shape, rng.uniform(0.8, 2))
    return (brightness[nuclei] * (1 - 0.3 * nucleus_distance ** 2) * np.clip(chromatin, 0.3, None)).astype(np.float32)


def _acquire(rng, signal, blur=(0.5, 2.0), unevenness=0.3, photons=(30, 3000)):
    """Blur, background, illumination, noise and quantization of one channel."""
    signal = ndi.gaussian_filter(signal, rng.uniform(*blur))
    illumination = 1 + rng.uniform(0, unevenness) * _smooth_noise(rng, signal.shape, signal.shape[0] / 3)
    photons = _loguniform(rng, *photons)
    background = rng.uniform(0.01, 0.2)
    mean = (signal * illumination + background) * photons
    raw = rng.poisson(np.maximum(mean, 0)).astype(np.float32)
    raw += rng.normal(0, rng.uniform(0.5, 5), signal.shape).astype(np.float32)
    levels = 2 ** int(rng.choice([8, 12, 16])) - 1
    return np.clip(np.round(raw / max(raw.max(), 1) * levels), 0, levels).astype(np.float32)


def synthetic_cells(rng: np.random.Generator, shape=(256, 256)) -> tuple[np.ndarray, np.ndarray]:
    """Render one synthetic two-channel whole-cell image and its cell labels.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random draw; the same state gives the same output.
    shape : tuple of int, optional
        ``(height, width)`` of the image.

    Returns
    -------
    image : (H, W, 2) ndarray of float32
        Cytoplasm then nuclei, each percentile normalized
        (:func:`piximi_py.preprocess.normalize_percentile`) as the pipeline
        feeds a whole-cell model.
    labels : (H, W) ndarray of int32
        Cell ids ``1..n``, each cell one 4-connected region; 0 for background.

    Examples
    --------
    >>> import numpy as np
    >>> image, labels = synthetic_cells(np.random.default_rng(0))
    >>> image.shape, image.dtype, labels.dtype
    ((256, 256, 2), dtype('float32'), dtype('int32'))
    """
    labels, nuclei, distance, nucleus_distance = _cells_raw(rng, shape)
    cyto = _acquire(rng, _cytoplasm(rng, labels, nuclei, distance))
    nuc = _acquire(rng, _nuclear(rng, nuclei, nucleus_distance))
    return np.stack([normalize_percentile(cyto), normalize_percentile(nuc)], axis=-1), labels


def _thickness(rng, labels, nuclei, distance, nucleus_distance):
    """Optical thickness (phase delay) of every cell: a dome per cell, flat or steep per image, a
    thicker nucleus, granules; zero between cells."""
    n = int(labels.max()) + 1
    height = _loguniform(rng, 0.3, 1.0, n).astype(np.float32)
    height[0] = 0
    d = np.clip(distance, 0, 1)
    dome = (1 - d ** 2) ** rng.uniform(0.3, 1.5)
    granules = 1 + rng.uniform(0.05, 0.35) * _smooth_noise(rng, labels.shape, rng.uniform(0.7, 2.0))
    phase = height[labels] * dome * np.clip(granules, 0.2, None)
    bump = rng.uniform(0.0, 0.8)
    phase[nuclei > 0] += (bump * height[nuclei] * (1 - nucleus_distance ** 2))[nuclei > 0]
    phase[labels == 0] = 0
    return phase.astype(np.float32)


def _phase_contrast(rng, phase, diameter):
    """Zernike phase contrast: the phase minus its low-pass (the phase ring passes part of the
    undiffracted light), so cells read dark with a bright halo just outside their outline, and the
    centre of a large flat cell fades towards the background (shade-off)."""
    halo = ndi.gaussian_filter(phase, diameter * rng.uniform(0.05, 0.3))
    image = 1 - rng.uniform(0.5, 1.5) * (phase - halo) / max(float(phase.max()), 1e-6)
    return np.clip(image, 0.02, None)


def _dic(rng, phase):
    """Differential interference contrast: the phase's gradient along one shear direction, so each
    cell reads as relief lit from one side."""
    smooth = ndi.gaussian_filter(phase, rng.uniform(0.7, 1.5))
    angle = rng.uniform(0, 2 * math.pi)
    gy, gx = np.gradient(smooth)
    shear = math.cos(angle) * gx + math.sin(angle) * gy
    image = 0.5 + rng.uniform(0.2, 0.45) * shear / max(float(np.abs(shear).max()), 1e-6)
    return np.clip(image, 0.02, None)


def synthetic_transmitted_cells(rng: np.random.Generator, shape=(256, 256),
                                nuclear_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Render one synthetic transmitted-light whole-cell image and its cell labels.

    The same cells as :func:`synthetic_cells`, seen by phase contrast (two
    images in three) or DIC instead of a stain: each cell's optical thickness
    is rendered by a first-order model of the optics (phase contrast: the
    thickness minus its low-pass, which makes the dark cell, its bright halo and
    the shade-off of flat cells; DIC: its gradient along a shear direction),
    then blurred, lit unevenly and made noisy as :func:`synthetic_cells` does.
    Half the images are shown in the opposite polarity (what ``invert``
    reads, and what negative phase contrast looks like). Its purpose is the
    whole-cell model's folds that never see a microscope of that kind (docs/research/cells.md,
    *Whole cells: synthetic transmitted light*).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random draw; the same state gives the same output.
    shape : tuple of int, optional
        ``(height, width)`` of the image.
    nuclear_fraction : float, optional
        Share of images that also have a nuclear stain (as DeepCell's phase
        contrast does); the others have an empty nuclear channel.

    Returns
    -------
    image : (H, W, 2) ndarray of float32
        The transmitted-light channel then nuclei (zeros when absent), each
        percentile normalized as the pipeline feeds a whole-cell model.
    labels : (H, W) ndarray of int32
        Cell ids ``1..n``, each cell one 4-connected region; 0 for background.

    Examples
    --------
    >>> import numpy as np
    >>> image, labels = synthetic_transmitted_cells(np.random.default_rng(0))
    >>> image.shape, image.dtype, labels.dtype
    ((256, 256, 2), dtype('float32'), dtype('int32'))
    """
    labels, nuclei, distance, nucleus_distance = _cells_raw(rng, shape)
    phase = _thickness(rng, labels, nuclei, distance, nucleus_distance)
    areas = np.bincount(labels.ravel())[1:]
    diameter = 2 * math.sqrt(float(np.median(areas[areas > 0])) / math.pi) if areas.any() else 30.0
    light = _phase_contrast(rng, phase, diameter) if rng.random() < 2 / 3 else _dic(rng, phase)
    if rng.random() < 0.5:
        light = float(light.max()) + float(light.min()) - light
    # a lamp gives many photons, evenly: transmitted light is far less noisy than fluorescence
    transmitted = _acquire(rng, light, blur=(0.4, 1.2), unevenness=0.1, photons=(300, 10000))
    if rng.random() < nuclear_fraction:
        nuc = normalize_percentile(_acquire(rng, _nuclear(rng, nuclei, nucleus_distance)))
    else:
        nuc = np.zeros(shape, np.float32)
    return np.stack([normalize_percentile(transmitted), nuc], axis=-1).astype(np.float32), labels
