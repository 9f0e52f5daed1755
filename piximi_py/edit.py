"""Editing instance labels: delete, add, draw, paint, erase, split and merge objects.

Pure functions on label arrays (numpy + scipy.ndimage), shared by the page's
editing tools and by Python users. Each returns a new array and never changes
its input, so that undo can keep the previous one. Object ids are kept as they
are (no renumbering), except where a function says it creates ids; new ids
are ``labels.max() + 1`` onwards, and the dtype grows to uint32 when uint16 is
full.

>>> import numpy as np
>>> labels = np.zeros((5, 8), np.uint16); labels[1:4, 1:7] = 1
>>> parts = split_object(labels, 1, (4, 0), (4, 4))   # a vertical cut at x = 4
>>> sorted(np.unique(parts).tolist())
[0, 1, 2]
>>> int(merge_objects(parts, [1, 2]).max())
1
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .measure import object_areas

__all__ = ["label_at", "objects_in_box", "delete_objects", "add_object", "polygon_mask", "paint",
           "split_object", "merge_objects", "REPLACE_FRACTION"]

#: An object covered by at least this fraction of its area by a new object is replaced.
REPLACE_FRACTION = 0.5


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 2-D integer array, got {labels.dtype} {labels.shape}")
    return labels


def _with_room(labels: np.ndarray, new_max: int) -> np.ndarray:
    """A copy of ``labels`` whose dtype holds ``new_max`` (uint16 grows to uint32)."""
    if new_max > np.iinfo(labels.dtype).max:
        return labels.astype(np.uint32)
    return labels.copy()


def label_at(labels: np.ndarray, x: float, y: float) -> int:
    """The object id under pixel ``(x, y)`` (column, row); 0 for background or outside."""
    labels = _check_labels(labels)
    r, c = int(round(y)), int(round(x))
    if not (0 <= r < labels.shape[0] and 0 <= c < labels.shape[1]):
        return 0
    return int(labels[r, c])


def objects_in_box(labels: np.ndarray, box, min_fraction: float = 0.5) -> list[int]:
    """Ids of the objects with at least ``min_fraction`` of their pixels inside ``box``
    ``(x0, y0, x1, y1)`` (first to last pixel, inclusive), for box selection."""
    labels = _check_labels(labels)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    (x0, x1), (y0, y1) = sorted((x0, x1)), sorted((y0, y1))
    # the box's part inside the image; a box wholly outside it selects nothing
    x0, x1 = max(x0, 0), min(x1, labels.shape[1] - 1)
    y0, y1 = max(y0, 0), min(y1, labels.shape[0] - 1)
    if x0 > x1 or y0 > y1:
        return []
    inside = object_areas(labels[y0:y1 + 1, x0:x1 + 1], minlength=int(labels.max()) + 1)
    total = object_areas(labels, minlength=len(inside))
    ids = np.flatnonzero((inside >= min_fraction * total) & (total > 0))
    return [int(i) for i in ids if i]


def delete_objects(labels: np.ndarray, ids) -> np.ndarray:
    """``labels`` without the objects ``ids`` (their pixels become background)."""
    labels = _check_labels(labels)
    out = labels.copy()
    ids = [int(i) for i in np.atleast_1d(ids) if int(i)]
    if ids:
        out[np.isin(labels, ids)] = 0
    return out


def add_object(labels: np.ndarray, mask: np.ndarray, *, replace_fraction: float = REPLACE_FRACTION,
               overwrite: bool = True):
    """Add ``mask`` as a new object.

    Parameters
    ----------
    labels : (H, W) int array
    mask : (H, W) bool array
    replace_fraction : float
        An existing object covered by the mask on at least this fraction of
        its area is removed entirely (the new object replaces it).
    overwrite : bool
        The new object takes every pixel of its mask (True), or only
        background pixels (False: existing objects keep theirs).

    Returns
    -------
    labels : (H, W) array, the new object's ``id`` and the ``removed`` ids.
    """
    labels = _check_labels(labels)
    mask = np.asarray(mask, bool)
    if mask.shape != labels.shape:
        raise ValueError(f"mask {mask.shape} and labels {labels.shape} differ in shape")
    if not mask.any():
        raise ValueError("the new object is empty")
    new_id = int(labels.max()) + 1
    out = _with_room(labels, new_id)
    hit, counts = np.unique(labels[mask], return_counts=True)
    removed = []
    if len(hit) > int(hit[0] == 0):
        areas = object_areas(labels)
        removed = [int(k) for k, n in zip(hit, counts) if k and n >= replace_fraction * areas[k]]
    if removed:
        out[np.isin(labels, removed)] = 0
    out[mask if overwrite else mask & (out == 0)] = new_id
    return out, new_id, removed


def polygon_mask(shape, vertices) -> np.ndarray:
    """Pixels whose centres lie inside the polygon ``vertices`` ``[(x, y), ...]``
    (even-odd rule, as :func:`skimage.draw.polygon`), as a bool array of ``shape``."""
    v = np.asarray(vertices, np.float64).reshape(-1, 2)
    if len(v) < 3:
        raise ValueError(f"a polygon needs at least 3 vertices, got {len(v)}")
    h, w = shape
    mask = np.zeros((h, w), bool)
    r0 = max(int(np.floor(v[:, 1].min())), 0)
    r1 = min(int(np.ceil(v[:, 1].max())), h - 1)
    if r1 < r0:
        return mask
    xs, ys = v[:, 0], v[:, 1]
    xn, yn = np.roll(xs, -1), np.roll(ys, -1)
    cols = np.arange(w, dtype=np.float64)
    for r in range(r0, r1 + 1):
        # edges crossing this row (half-open in y, so a vertex is counted once)
        cross = (ys <= r) != (yn <= r)
        if not cross.any():
            continue
        x_at = xs[cross] + (r - ys[cross]) * (xn[cross] - xs[cross]) / (yn[cross] - ys[cross])
        inside = (x_at[None, :] > cols[:, None]).sum(axis=1) % 2 == 1
        mask[r] = inside
    return mask


def _disk_stroke(shape, points, radius: float) -> np.ndarray:
    """Pixels within ``radius`` of the polyline through ``points`` ``[(x, y), ...]``."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    h, w = shape
    near = np.zeros((h, w), bool)
    segments = list(zip(pts[:-1], pts[1:])) if len(pts) > 1 else [(pts[0], pts[0])]
    for a, b in segments:
        x0 = max(int(np.floor(min(a[0], b[0]) - radius)), 0)
        x1 = min(int(np.ceil(max(a[0], b[0]) + radius)), w - 1)
        y0 = max(int(np.floor(min(a[1], b[1]) - radius)), 0)
        y1 = min(int(np.ceil(max(a[1], b[1]) + radius)), h - 1)
        if x1 < x0 or y1 < y0:
            continue
        yy, xx = np.mgrid[y0:y1 + 1, x0:x1 + 1].astype(np.float64)
        d = b - a
        t = np.zeros_like(xx) if not d.any() else np.clip(((xx - a[0]) * d[0] + (yy - a[1]) * d[1])
                                                        / float(d @ d), 0, 1)
        dist2 = (xx - a[0] - t * d[0]) ** 2 + (yy - a[1] - t * d[1]) ** 2
        near[y0:y1 + 1, x0:x1 + 1] |= dist2 <= radius * radius
    return near


def paint(labels: np.ndarray, points, radius: float, label: int, *, overwrite: bool = False) -> np.ndarray:
    """A brush stroke along ``points`` ``[(x, y), ...]`` of ``radius`` px.

    ``label`` > 0 paints that object (a new id adds an object); 0 erases.
    Painting takes only background pixels unless ``overwrite``; erasing with
    ``label`` 0 clears every object it touches.
    """
    labels = _check_labels(labels)
    if radius <= 0:
        raise ValueError(f"the brush radius must be positive, got {radius}")
    label = int(label)
    if label < 0:
        raise ValueError(f"label must be >= 0, got {label}")
    stroke = _disk_stroke(labels.shape, points, radius)
    out = _with_room(labels, label)
    if label and not overwrite:
        stroke &= out == 0
    out[stroke] = label
    return out


def split_object(labels: np.ndarray, label: int, start, end, *, width: float = 1.0) -> np.ndarray:
    """Cut object ``label`` along the line from ``start`` to ``end`` ``(x, y)``.

    The parts left after removing the line's pixels (``width`` px wide) become
    separate objects: the largest keeps ``label``, the others get new ids; the
    line's own pixels go to the part nearest to each. An object the line does
    not cut in two is returned unchanged.
    """
    labels = _check_labels(labels)
    label = int(label)
    obj = labels == label
    if not label or not obj.any():
        raise ValueError(f"there is no object {label} to split")
    line = _disk_stroke(labels.shape, [start, end], max(width, 1.0) / 2 + 0.5)
    parts, n = ndi.label(obj & ~line)
    if n < 2:
        return labels.copy()
    sizes = np.bincount(parts.ravel())[1:]
    order = np.argsort(-sizes, kind="stable") + 1          # part ids, largest first
    new_max = int(labels.max()) + n - 1
    out = _with_room(labels, new_max)
    ids = np.zeros(n + 1, out.dtype)
    ids[order[0]] = label
    ids[order[1:]] = np.arange(int(labels.max()) + 1, new_max + 1)
    # every pixel of the object (the line's too) joins its nearest part
    _, (iy, ix) = ndi.distance_transform_edt(parts == 0, return_indices=True)
    nearest = parts[iy, ix]
    out[obj] = ids[nearest[obj]]
    return out


def merge_objects(labels: np.ndarray, ids) -> np.ndarray:
    """The objects ``ids`` as one object, with the smallest of their ids."""
    labels = _check_labels(labels)
    ids = sorted({int(i) for i in np.atleast_1d(ids) if int(i)})
    if len(ids) < 2:
        raise ValueError(f"merging needs at least two objects, got {ids}")
    out = labels.copy()
    out[np.isin(labels, ids[1:])] = ids[0]
    return out
