"""Intensity handling between decoding and the model.

Every function takes and returns numpy arrays; none depends on the runtime,
so the page (Pyodide) and CPython compute bit-identical inputs.
"""
from __future__ import annotations

import numpy as np

__all__ = ["to_float", "normalize_percentile", "percentiles", "pad_to_multiple", "RGB_FROM_HED",
           "RGB_FROM_HDX", "optical_density", "separate_stains", "stain_vectors_macenko",
           "hematoxylin_density", "normalize_stains", "looks_stained"]


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


# ---------------------------------------------------------------- stains (brightfield, H&E)
# Ruifrok & Johnston (2001) stain vectors, rows = optical density of one stain in R, G, B,
# as scikit-image's ``skimage.color`` defines them (H&E + DAB; H + DAB + a third orthogonal).
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
RGB_FROM_HDX = np.array([[0.650, 0.704, 0.286], [0.268, 0.570, 0.776], [0.0, 0.0, 0.0]])
RGB_FROM_HDX[2] = np.cross(RGB_FROM_HDX[0], RGB_FROM_HDX[1])
#: Reference H and E vectors and 99th-percentile concentrations of Macenko et al. (2009),
#: the usual target of stain normalization.
MACENKO_REFERENCE = (np.array([[0.5626, 0.7201, 0.4062], [0.2159, 0.8012, 0.5581]]), np.array([1.9705, 1.0308]))
_LOG_ADJUST = np.log(1e-6)


def _rgb_float(rgb: np.ndarray) -> np.ndarray:
    """RGB(A) pixels as float64 in [0, 1] (integers scaled by their type's maximum)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] not in (3, 4):
        raise ValueError(f"a colour image (height, width, 3) is needed, got shape {rgb.shape}")
    rgb = rgb[..., :3]
    if np.issubdtype(rgb.dtype, np.integer):
        return rgb.astype(np.float64) / np.iinfo(rgb.dtype).max
    return np.nan_to_num(rgb.astype(np.float64), nan=1.0, posinf=1.0, neginf=0.0)


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """``-log10``-free optical density as scikit-image's ``separate_stains`` takes it:
    ``log(max(I, 1e-6)) / log(1e-6)`` per channel, 0 for white, 1 for black."""
    return np.log(np.maximum(_rgb_float(rgb), 1e-6)) / _LOG_ADJUST


def separate_stains(rgb: np.ndarray, rgb_from_stains: np.ndarray = RGB_FROM_HED) -> np.ndarray:
    """Stain concentrations ``(H, W, 3)`` of a brightfield RGB image by colour deconvolution.

    Equal to ``skimage.color.separate_stains(rgb, linalg.inv(rgb_from_stains))``
    (``rgb2hed`` for the default), numpy only so that it runs in the page.

    Parameters
    ----------
    rgb : ndarray
        ``(H, W, 3)`` (or RGBA) image; integers are scaled by their type's maximum.
    rgb_from_stains : ndarray
        ``(3, 3)`` rows of stain optical densities (:data:`RGB_FROM_HED`,
        :data:`RGB_FROM_HDX`, or from :func:`stain_vectors_macenko`).
    """
    stains = optical_density(rgb) @ np.linalg.inv(rgb_from_stains)
    return np.maximum(stains, 0)


def stain_vectors_macenko(rgb: np.ndarray, *, od_threshold: float = 0.15, angle_percentile: float = 1.0,
                          max_pixels: int = 1 << 18, seed: int = 0) -> np.ndarray:
    """This image's own hematoxylin and eosin vectors (Macenko et al. 2009), as ``(3, 3)`` rows
    like :data:`RGB_FROM_HED` (H, E, and their normalized cross product).

    Stained pixels' optical densities (``-log10`` transmission above
    ``od_threshold`` in every channel) lie near a plane; the two stains are the
    directions at the ``angle_percentile`` extremes of their angles in it. The
    more red-absorbing one is hematoxylin. Falls back to :data:`RGB_FROM_HED`
    when the image has too few stained pixels.
    """
    od = -np.log10(np.maximum(_rgb_float(rgb), 1e-6)).reshape(-1, 3)
    od = od[(od > od_threshold).all(axis=1)]
    if len(od) > max_pixels:
        od = od[np.random.default_rng(seed).choice(len(od), max_pixels, replace=False)]
    if len(od) < 100:
        return RGB_FROM_HED.copy()
    _, vectors = np.linalg.eigh(np.cov(od.T))
    plane = vectors[:, 1:3]  # the two largest
    plane *= np.where(plane.sum(axis=0) < 0, -1, 1)  # point into positive OD
    projected = od @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    lo, hi = np.percentile(angles, [angle_percentile, 100 - angle_percentile])
    a = plane @ np.array([np.cos(lo), np.sin(lo)])
    b = plane @ np.array([np.cos(hi), np.sin(hi)])
    h, e = (a, b) if a[0] > b[0] else (b, a)
    h, e = np.abs(h) / np.linalg.norm(h), np.abs(e) / np.linalg.norm(e)
    third = np.cross(h, e)
    return np.array([h, e, third / (np.linalg.norm(third) or 1.0)])


def hematoxylin_density(rgb: np.ndarray, method: str = "ruifrok") -> np.ndarray:
    """The hematoxylin concentration of a stained RGB image, ``(H, W)`` float32, nuclei bright:
    an image a fluorescence nuclei model reads.

    ``method``: "ruifrok" (fixed H&E vectors, :data:`RGB_FROM_HED`) or "macenko"
    (this image's own, :func:`stain_vectors_macenko`).
    """
    if method == "ruifrok":
        vectors = RGB_FROM_HED
    elif method == "macenko":
        vectors = stain_vectors_macenko(rgb)
    else:
        raise ValueError(f"unknown stain separation {method!r}: use 'ruifrok' or 'macenko'")
    return separate_stains(rgb, vectors)[..., 0].astype(np.float32)


def normalize_stains(rgb: np.ndarray, reference=MACENKO_REFERENCE, *, transmitted: float = 255.0) -> np.ndarray:
    """An H&E image re-coloured to a reference stain appearance (Macenko normalization), uint8.

    Each pixel's H and E concentrations (least squares on this image's own
    vectors, :func:`stain_vectors_macenko`) are scaled so that their 99th
    percentiles match the reference's, then recomposed with the reference
    vectors.
    """
    vectors = stain_vectors_macenko(rgb)[:2]
    ref_vectors, ref_max = reference
    image = _rgb_float(rgb) * transmitted
    od = -np.log10(np.maximum(image, 1.0) / transmitted).reshape(-1, 3)
    conc = np.linalg.lstsq(vectors.T, od.T, rcond=None)[0]  # (2, N)
    peak = np.percentile(conc, 99, axis=1)
    conc *= (ref_max / np.where(peak > 0, peak, 1.0))[:, None]
    out = transmitted * 10 ** (-(ref_vectors.T @ conc))
    return np.clip(out.T.reshape(image.shape), 0, 255).astype(np.uint8)


def looks_stained(rgb: np.ndarray) -> tuple[bool, str]:
    """Whether an image looks like a brightfield stained slide (H&E, H-DAB) rather than
    fluorescence, and why in words (for the page's model suggestion).

    Stained slides are colour images on a bright background (light passes
    where there is no tissue); fluorescence is dark where there is nothing,
    and grayscale or single-hued.
    """
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[-1] < 3:
        return False, "a single-channel image: fluorescence"
    step = max(1, int(np.sqrt(a.shape[0] * a.shape[1] / 65536)))
    x = _rgb_float(a[::step, ::step])
    gray = x.mean(axis=-1)
    spread = float(np.median(x.max(axis=-1) - x.min(axis=-1)))
    background = float(np.percentile(gray, 75))
    if spread < 0.02:
        return False, "the colour channels are nearly equal: a grayscale image"
    if background < 0.5:
        return False, f"a dark background ({background:.0%} of full brightness): fluorescence"
    return True, (f"a colour image on a bright background ({background:.0%} of full brightness), "
                  "as light passes a stained slide")
