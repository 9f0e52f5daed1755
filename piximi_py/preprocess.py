"""Intensity handling between decoding and the model.

Every function takes and returns numpy arrays; none depends on the runtime,
so the page (Pyodide) and CPython compute bit-identical inputs.
"""
from __future__ import annotations

import numpy as np

__all__ = ["to_float", "normalize_percentile", "percentiles", "pad_to_multiple"]


def to_float(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as float32, with NaN and infinities replaced.

    NaN become the image's finite minimum and +/-inf its finite max/min, so a
    microscope export with a few invalid pixels still segments.

    Raises
    ------
    ValueError
        If no pixel is finite.
    """
    image = np.asarray(image)
    if image.dtype == np.bool_:
        image = image.astype(np.uint8)
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"unsupported pixel type {image.dtype}")
    out = image.astype(np.float32, copy=True)
    if np.issubdtype(image.dtype, np.integer):  # always finite: no full-size mask
        return out
    finite = np.isfinite(out)
    if not finite.all():
        if not finite.any():
            raise ValueError("the image has no finite pixel value (all NaN or infinite)")
        lo, hi = out[finite].min(), out[finite].max()
        out[np.isnan(out)] = lo
        out[np.isposinf(out)] = hi
        out[np.isneginf(out)] = lo
    return out


def normalize_percentile(image: np.ndarray, low: float = 1.0, high: float = 99.8,
                         eps: float = 1e-6) -> np.ndarray:
    """Scale intensities so the ``low`` and ``high`` percentiles map to 0 and 1.

    Parameters
    ----------
    image : ndarray
        Any real dtype, any shape; NaN/inf are handled as in :func:`to_float`.
    low, high : float
        Percentiles in [0, 100]. Values outside are not clipped, as in
        CSBDeep/StarDist, so bright outliers stay distinguishable.

    Returns
    -------
    ndarray of float32
    """
    x = to_float(image)
    lo, hi = percentiles(image, [low, high]) if _histogram_dtype(image) else np.percentile(x, [low, high])
    scale = hi - lo
    if scale < eps:  # flat image: nothing to segment, keep it finite
        return np.zeros_like(x)
    x -= lo
    x /= scale
    return x


def _histogram_dtype(image) -> bool:
    return isinstance(image, np.ndarray) and image.dtype in (np.uint8, np.uint16) and image.size > 0


def percentiles(image: np.ndarray, q, chunk: int = 1 << 20) -> np.ndarray:
    """``np.percentile(image, q)`` (linear interpolation) of an 8- or 16-bit image
    from its histogram, without a sorted or partitioned copy.

    An 8192 x 8192 16-bit image needs 0.5 MB of counts here, where
    ``np.percentile`` partitions a 256 MB float32 copy; the page's memory
    has no room for that copy next to the image and its normalized version.
    Counts are taken ``chunk`` pixels at a time (``np.bincount`` widens its
    input to 64-bit integers). Equal to ``np.percentile`` up to float64 rounding.
    """
    a = np.asarray(image)
    if not _histogram_dtype(a):
        raise ValueError(f"percentiles needs a non-empty uint8 or uint16 image, got {a.dtype}")
    q = np.asarray(q, np.float64)
    if np.any((q < 0) | (q > 100)):
        raise ValueError("percentiles must be in the range [0, 100]")
    flat = a.reshape(-1)
    counts = np.zeros(1 << (8 * a.itemsize), np.int64)
    for start in range(0, flat.size, chunk):
        counts += np.bincount(flat[start:start + chunk], minlength=counts.size)
    cum = np.cumsum(counts)
    pos = q / 100.0 * (flat.size - 1)
    k0 = np.floor(pos)
    k1 = np.minimum(k0 + 1, flat.size - 1)
    v0 = np.searchsorted(cum, k0, side="right").astype(np.float64)  # value of rank k0 (0-based)
    v1 = np.searchsorted(cum, k1, side="right").astype(np.float64)
    return v0 + (v1 - v0) * (pos - k0)


def pad_to_multiple(image: np.ndarray, multiple: int, mode: str = "reflect"):
    """Pad the last two axes up to a multiple of ``multiple``.

    Returns
    -------
    padded : ndarray
    crop : tuple of slice
        Slices that cut the original extent back out of ``padded``.
    """
    h, w = image.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return image, (slice(0, h), slice(0, w))
    width = [(0, 0)] * (image.ndim - 2) + [(0, ph), (0, pw)]
    if mode == "reflect" and (h < 2 or w < 2 or ph >= h or pw >= w):
        mode = "symmetric" if (h > 1 and w > 1) else "edge"
    return np.pad(image, width, mode=mode), (slice(0, h), slice(0, w))
