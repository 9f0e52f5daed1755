"""Resampling between the image's pixel grid and the model's.

A model segments objects of about the size it was trained on (its
``diameter``). An image whose nuclei are larger or smaller is resized by
``model diameter / image diameter`` before tiling, and the model's
probabilities are resampled back onto the original grid before instances
are made, so labels have smooth full-resolution edges rather than the
blocks of an enlarged label image.

Every function works on numpy arrays with ``scipy.ndimage`` only, so the
page (Pyodide) and CPython compute the same pixels.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from .io import MAX_PIXELS

__all__ = ["scale_factor", "rescaled_shape", "resize", "resample_probabilities", "resample_masks", "check_rescaled_size", "largest_factor",
           "area_scale", "MAX_RESCALED_SIDE"]

#: Largest side of a rescaled image: that of the largest square image the decoder accepts.
MAX_RESCALED_SIDE = math.isqrt(MAX_PIXELS)

#: Factors this close to 1 leave the image as it is: the models are trained
#: with random rescaling of 0.6-1.6x, and resampling costs time (on held-out
#: images rescaled to 20-35 px nuclei, the default scores as well or better
#: unresampled: ``python build.py evaluate --scales``).
NO_RESCALE = 1.4


def scale_factor(diameter: float, model_diameter: float, tolerance: float = NO_RESCALE) -> float:
    """How much to enlarge an image whose objects are ``diameter`` px across.

    Returns ``model_diameter / diameter``, or exactly 1.0 when that is within
    a factor ``tolerance`` of 1 (or when the model states no diameter).
    """
    if not model_diameter:
        return 1.0
    factor = float(model_diameter) / float(diameter)
    return 1.0 if max(factor, 1 / factor) < tolerance else factor


def rescaled_shape(shape, factor: float) -> tuple[int, int]:
    """``(height, width)`` of a ``shape`` image enlarged by ``factor`` (at least 1 px each)."""
    return tuple(max(1, int(round(n * factor))) for n in shape[-2:])


def _axis_map(n_in: int, n_out: int) -> tuple[float, float]:
    """(step, offset) mapping output pixel centres to input coordinates."""
    step = n_in / n_out
    return step, 0.5 * step - 0.5


#: Output rows :func:`_resample_plane` computes at once.
_ROWS_AT_ONCE = 256


def _linear_weights(n_in: int, n_out: int, start: int = 0, stop: int | None = None):
    """Input indices ``(i0, i1)`` and weight ``w`` of output pixels ``start:stop``: the value
    at an output pixel is ``(1 - w) * v[i0] + w * v[i1]``, coordinates clamped to the edges."""
    step, offset = _axis_map(n_in, n_out)
    c = np.arange(start, n_out if stop is None else stop, dtype=np.float64) * step + offset
    np.clip(c, 0.0, n_in - 1, out=c)
    i0 = np.floor(c).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (c - i0).astype(np.float32)


def _resample_plane(plane: np.ndarray, out_shape, rows=None) -> np.ndarray:
    """Linear resampling of one 2-D plane onto ``out_shape`` pixel centres
    (output rows ``rows`` only, a ``slice``), edges held constant.

    Separable, rows then columns, in float32: what
    ``scipy.ndimage.affine_transform(order=1, mode="nearest")`` computes, to
    float32 rounding, in less than half its time (on a 512² image whose
    diameter is estimated, the page's resampling took 18 ms, now 7).
    """
    plane = np.asarray(plane, np.float32)
    r0, r1 = (0, out_shape[0]) if rows is None else (rows.start, rows.stop)
    x0, x1, wx = _linear_weights(plane.shape[1], out_shape[1])
    out = np.empty((r1 - r0, out_shape[1]), np.float32)
    for c0 in range(r0, r1, _ROWS_AT_ONCE):  # bounds the temporaries of a large image
        c1 = min(r1, c0 + _ROWS_AT_ONCE)
        y0, y1, wy = _linear_weights(plane.shape[0], out_shape[0], c0, c1)
        top = plane[y0]
        across = top + wy[:, None] * (plane[y1] - top)
        left = across[:, x0]
        out[c0 - r0:c1 - r0] = left + wx * (across[:, x1] - left)
    return out


def resize(x: np.ndarray, shape) -> np.ndarray:
    """Resize the last two axes of ``x`` (``(H, W)`` or ``(C, H, W)`` float) to ``shape``.

    Bilinear at pixel centres; when shrinking, a Gaussian of sigma
    ``(1/factor - 1) / 2`` first removes what the new grid cannot hold
    (as ``skimage.transform.rescale(..., anti_aliasing=True)``), so that
    the small grid sees each nucleus as a blob, not as sampled noise.
    """
    x = np.asarray(x, np.float32)
    shape = tuple(int(n) for n in shape[-2:])
    if x.shape[-2:] == shape:
        return x
    planes = x.reshape((-1,) + x.shape[-2:])
    sigma = [max(0.0, (n_in / n_out - 1) / 2) for n_in, n_out in zip(x.shape[-2:], shape)]
    out = np.empty((planes.shape[0],) + shape, np.float32)
    for i, plane in enumerate(planes):
        if any(sigma):
            plane = ndi.gaussian_filter(plane, sigma, mode="nearest")
        out[i] = _resample_plane(plane, shape)
    return out.reshape(x.shape[:-2] + shape)


def resample_probabilities(prob: np.ndarray, shape) -> np.ndarray:
    """Each plane of ``prob`` ``(K, h, w)`` resampled onto a ``shape`` grid, linearly and without
    :func:`resize`'s smoothing (a model's probabilities are smooth already)."""
    shape = tuple(int(n) for n in shape[-2:])
    prob = np.asarray(prob, np.float32)
    if prob.shape[-2:] == shape:
        return prob
    return np.stack([_resample_plane(plane, shape) for plane in prob])


def resample_masks(prob: np.ndarray, shape, foreground_threshold: float, seed_threshold: float,
                   rows_per_chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and seed masks on the ``shape`` grid from ``(3, h, w)`` probabilities.

    The background and interior probabilities are resampled
    (:func:`resize` without smoothing: they are already smooth) and
    thresholded as :func:`piximi_py.postprocess.threshold_probabilities`
    does, ``rows_per_chunk`` output rows at a time, so a large image never
    holds its full-size probabilities.
    """
    shape = tuple(int(n) for n in shape[-2:])
    if prob.shape[-2:] == shape:  # on its own grid already (averaged passes at scale 1)
        return (1.0 - np.asarray(prob[0], np.float32)) > foreground_threshold, np.asarray(prob[1]) > seed_threshold
    foreground = np.empty(shape, bool)
    seed = np.empty(shape, bool)
    background, interior = np.asarray(prob[0], np.float32), np.asarray(prob[1], np.float32)
    for r0 in range(0, shape[0], rows_per_chunk):
        rows = slice(r0, min(shape[0], r0 + rows_per_chunk))
        foreground[rows] = (1.0 - _resample_plane(background, shape, rows)) > foreground_threshold
        seed[rows] = _resample_plane(interior, shape, rows) > seed_threshold
    return foreground, seed


def check_rescaled_size(shape, factor: float) -> None:
    """Raise ``ValueError`` when enlarging ``shape`` by ``factor`` passes :data:`MAX_RESCALED_SIDE`."""
    h, w = rescaled_shape(shape, factor)
    if max(h, w) > MAX_RESCALED_SIDE:
        raise ValueError(f"the diameter asks to enlarge the image {factor:.3g}x, to {w}x{h} pixels, "
                         f"above the {MAX_RESCALED_SIDE}-pixel limit; give a larger diameter "
                         "or a smaller image")


def largest_factor(shape) -> float:
    """The largest factor :func:`check_rescaled_size` accepts for ``shape``."""
    return (MAX_RESCALED_SIDE - 0.5) / max(shape[-2:])


def area_scale(factor: float) -> float:
    """Pixels of the original grid per pixel of the model's grid."""
    return 1.0 / (factor * factor) if math.isfinite(factor) and factor > 0 else 1.0
