"""Object size: checking a given diameter and estimating it from a segmentation.

The pipeline (:func:`piximi_py.estimate.estimate_diameter`) estimates the
nuclei's diameter by segmenting at a scale, measuring what it found and
rescaling so that the objects come out at the model's own diameter, until
two passes agree. These are the pure parts of that loop.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .io import check_pixel_size
from .measure import object_areas

__all__ = ["check_diameter", "median_diameter", "diameter_from_um", "resolve_diameter"]

#: Smallest diameter accepted, in pixels: below this a nucleus is not resolved.
MIN_DIAMETER = 2.0


def check_diameter(diameter, shape=None) -> float | None:
    """``diameter`` as a float, or None; ``ValueError`` with a clear message when it is unusable.

    Parameters
    ----------
    diameter : float or None
        Typical object diameter in pixels; None means "estimate it".
    shape : tuple, optional
        The image's shape: a diameter larger than the image is refused.
    """
    if diameter is None:
        return None
    if isinstance(diameter, bool) or not isinstance(diameter, (numbers.Real, str)):
        raise ValueError(f"diameter must be a number of pixels, got {diameter!r}")
    try:
        value = float(diameter)
    except ValueError:
        raise ValueError(f"diameter must be a number of pixels, got {diameter!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"diameter must be a finite number of pixels, got {diameter!r}")
    if value <= 0:
        raise ValueError(f"diameter must be positive, got {value:g}")
    if value < MIN_DIAMETER:
        raise ValueError(f"diameter {value:g} px is below {MIN_DIAMETER:g} px: nuclei that small are not "
                         "resolved; leave it empty to estimate it")
    if shape is not None and value > max(shape[:2]):
        raise ValueError(f"diameter {value:g} px is larger than the image ({shape[1]}x{shape[0]} px)")
    return value


def diameter_from_um(diameter_um, pixel_size) -> float:
    """A diameter in µm as pixels, given the pixel size in µm (one number or ``[y, x]``)."""
    if diameter_um is None:
        raise ValueError("diameter_um is None")
    if pixel_size is None:
        raise ValueError("diameter_um needs the pixel size: the file states none; give pixel_size "
                         "(µm per pixel) or the diameter in pixels")
    size = float(np.mean(check_pixel_size(pixel_size)))
    um = check_diameter(diameter_um)
    return um / size


def median_diameter(labels: np.ndarray, min_objects: int = 5) -> tuple[float, int]:
    """Median equivalent-circle diameter of the objects in ``labels``, and how many counted.

    Objects touching the image border are cut and look smaller; they are
    left out when at least ``min_objects`` others remain. Returns
    ``(nan, 0)`` for an image without objects.
    """
    labels = np.asarray(labels)
    areas = object_areas(labels)
    present = np.flatnonzero(areas)
    present = present[present > 0]
    if present.size == 0:
        return float("nan"), 0
    border = np.zeros(areas.size, bool)
    border[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    inner = present[~border[present]]
    use = inner if inner.size >= min_objects else present
    diameters = 2.0 * np.sqrt(areas[use] / np.pi)
    return float(np.median(diameters)), int(use.size)


def resolve_diameter(diameter=None, diameter_um=None, pixel_size=None, image=None, filename=None):
    """The diameter in pixels from the options a caller gives: ``diameter`` (px) or
    ``diameter_um`` with ``pixel_size`` (µm per pixel; read from the file's header when
    ``image`` is a file's bytes and no pixel size is given). None: estimate it."""
    if diameter is not None and diameter_um is not None:
        raise ValueError("give the diameter in pixels or in µm (diameter_um), not both")
    if diameter_um is None:
        return check_diameter(diameter)
    if pixel_size is None and isinstance(image, (bytes, bytearray, memoryview)):
        from .io import describe_image

        pixel_size = describe_image(bytes(image), filename).get("pixel_size")
    return diameter_from_um(diameter_um, pixel_size)
