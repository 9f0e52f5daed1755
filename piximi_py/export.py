"""Write segmentation results in the formats other tools open.

Every function returns the file's bytes (or text), so the page (Pyodide: no
file system the user sees) hands them to the browser as a download and the
command line writes them to disk. numpy, scipy, pillow and tifffile only,
plus pure-Python ``roifile`` for ImageJ ROI sets.

* :func:`labels_tiff` -- instance labels, ImageJ-compatible TIFF (uint16, or
  uint32 above 65535 objects), with the pixel size when known;
* :func:`mask_tiff` -- binary mask (uint8, 0/255), ImageJ-compatible;
* :func:`overlay_png` -- the image with coloured outlines or filled objects;
* :func:`measurements_csv` -- a :func:`piximi_py.measure.regionprops_table`;
* :func:`coco_json` -- COCO instance annotations, RLE (:func:`rle_encode`) or polygons;
* :func:`roi_zip` -- ImageJ/Fiji ROI set (one traced polygon per object).

>>> import numpy as np
>>> mask = np.array([[0, 1], [1, 1]], bool)
>>> rle_encode(mask)["counts"]          # column-major runs, first run = background
[1, 3]
"""
from __future__ import annotations

import csv
import io as _io
import json
import zipfile

import numpy as np
from scipy import ndimage as ndi

from .io import check_pixel_size

__all__ = ["labels_tiff", "mask_tiff", "overlay_png", "measurements_csv", "rle_encode",
           "rle_to_string", "outlines", "coco_json", "roi_zip", "label_colours"]




def _tiff(array: np.ndarray, pixel_size, imagej: bool) -> bytes:
    import tifffile

    kwargs = {}
    size = check_pixel_size(pixel_size)
    if size and imagej:  # pixels per unit, the unit in ImageJ's own metadata
        kwargs["resolution"] = (1.0 / size[1], 1.0 / size[0])
        kwargs["metadata"] = {"unit": "um"}
    elif size:  # a plain TIFF's resolution unit: centimetres, not the default inch
        kwargs["resolution"] = (1e4 / size[1], 1e4 / size[0])
        kwargs["resolutionunit"] = "CENTIMETER"
        kwargs["metadata"] = None
    buf = _io.BytesIO()
    tifffile.imwrite(buf, array, imagej=imagej, compression=None, **kwargs)
    return buf.getvalue()


def labels_tiff(labels: np.ndarray, pixel_size=None) -> bytes:
    """Instance labels as a TIFF file that ImageJ/Fiji and tifffile open.

    Parameters
    ----------
    labels : (H, W) ndarray of non-negative ints
    pixel_size : float or (float, float), optional
        µm per pixel (``(y, x)``), written as the TIFF resolution.

    Returns
    -------
    bytes
        uint16 ImageJ hyperstack TIFF when the largest label fits, else a
        uint32 TIFF (ImageJ has no uint32 type; Fiji opens it with Bio-Formats).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, not {labels.shape}")
    if labels.size and int(labels.max()) > 65535:
        return _tiff(labels.astype(np.uint32), pixel_size, imagej=False)
    return _tiff(labels.astype(np.uint16), pixel_size, imagej=True)


def mask_tiff(labels: np.ndarray, pixel_size=None) -> bytes:
    """Binary mask (uint8, 255 = object, 0 = background) as an ImageJ TIFF."""
    return _tiff((np.asarray(labels) > 0).astype(np.uint8) * np.uint8(255), pixel_size,
                 imagej=True)


def label_colours(n: int) -> np.ndarray:
    """``(n + 1, 3)`` uint8 colour per label; golden-angle hues, 0 = black.

    The page (``web/app.js``) uses the same formula, so exported overlays and
    the screen agree.
    """
    ids = np.arange(n + 1, dtype=np.float64)
    h = (ids * 137.508) % 360
    s, lum = 0.9, 0.55
    a = s * min(lum, 1 - lum)

    def f(k0):
        k = (k0 + h / 30) % 12
        return lum - a * np.clip(np.minimum(k - 3, 9 - k), -1, 1)

    rgb = np.stack([f(0), f(8), f(4)], axis=-1) * 255
    rgb[0] = 0
    return rgb.astype(np.uint8)


def _display(image: np.ndarray, limits=None) -> np.ndarray:
    """8-bit auto-contrast rendition: ``limits`` (default: the 0.5 and 99.8 percentiles) to 0..255."""
    from .preprocess import percentiles

    a = np.asarray(image)
    if a.ndim == 2 and a.dtype in (np.uint8, np.uint16) and a.size:
        # one lookup per pixel: no float copies of a large image (an 8192² one had three)
        lo, hi = limits if limits is not None else percentiles(a, (0.5, 99.8))
        hi = hi if hi > lo else lo + 1.0
        values = np.arange(1 << (8 * a.itemsize), dtype=np.float64)
        return np.clip((values - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)[a]
    a = np.asarray(image, np.float32)
    if a.ndim == 3:
        a = a[..., :3].mean(axis=-1)
    finite = np.isfinite(a)
    lo, hi = limits if limits is not None else (
        np.percentile(a[finite], (0.5, 99.8)) if finite.any() else (0.0, 1.0))
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((np.nan_to_num(a, nan=lo) - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def _edges(labels: np.ndarray) -> np.ndarray:
    """Object pixels with a 4-neighbour of another label (or the image edge)."""
    padded = np.pad(labels, 1)
    core = padded[1:-1, 1:-1]
    edge = np.zeros(labels.shape, bool)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        edge |= padded[1 + dy:padded.shape[0] - 1 + dy, 1 + dx:padded.shape[1] - 1 + dx] != core
    return edge & (labels > 0)


def overlay_png(image: np.ndarray | None, labels: np.ndarray, *, mode: str = "outline",
                opacity: float = 0.4, limits=None) -> bytes:
    """The image (gray, auto-contrast) with each object in its own colour, as PNG.

    Parameters
    ----------
    image : (H, W) or (H, W, 3) ndarray, or None (black background)
    labels : (H, W) ndarray of ints
    mode : {"outline", "fill"}
        Outlines only, or filled objects (at ``opacity``) with opaque outlines.
    opacity : float
        Fill opacity, 0..1.
    limits : (low, high), optional
        Display range of ``image``; default: 0.5 and 99.8 percentiles.
    """
    from PIL import Image

    labels = np.asarray(labels)
    if mode not in ("outline", "fill"):
        raise ValueError(f"mode must be 'outline' or 'fill', not {mode!r}")
    gray = np.zeros(labels.shape, np.uint8) if image is None else _display(image, limits)
    if gray.shape != labels.shape:
        raise ValueError(f"image shape {gray.shape} differs from labels shape {labels.shape}")
    compact = labels
    if labels.size and int(labels.max()) > 4 * labels.size:
        _, inv = np.unique(labels, return_inverse=True)
        compact = inv.reshape(labels.shape)
    colours = label_colours(int(compact.max()) if compact.size else 0)
    rgb = np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)
    alpha = np.zeros(labels.shape, np.float32)
    if mode == "fill":
        alpha[compact > 0] = float(np.clip(opacity, 0, 1))
    alpha[_edges(compact)] = 1.0
    obj = alpha > 0
    rgb[obj] = rgb[obj] * (1 - alpha[obj, None]) + colours[compact[obj]] * alpha[obj, None]
    buf = _io.BytesIO()
    Image.fromarray(np.round(rgb).astype(np.uint8), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _format(value) -> str:
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(int(value)) if isinstance(value, (int, np.integer)) else str(value)


def measurements_csv(table: dict, extra: dict | None = None) -> str:
    """A measurements table as CSV text, one row per object (floats round-trip).

    ``extra`` adds constant leading columns (e.g. ``{"image": "a.tif"}``).
    """
    extra = extra or {}
    columns = list(table)
    n = len(table[columns[0]]) if columns else 0
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(extra) + columns)
    const = [_format(v) for v in extra.values()]
    for row in zip(*([_format(v) for v in table[c]] for c in columns)) if n else ():
        writer.writerow(const + list(row))
    return buf.getvalue()


# --------------------------------------------------------------------------- COCO

def _runs(flat_index: np.ndarray, size: int) -> list[int]:
    """COCO counts from the sorted column-major indices of the object's pixels."""
    if len(flat_index) == 0:
        return [size]
    breaks = np.flatnonzero(np.diff(flat_index) != 1)
    starts = np.r_[flat_index[0], flat_index[breaks + 1]]
    ends = np.r_[flat_index[breaks], flat_index[-1]] + 1      # exclusive
    counts = np.empty(2 * len(starts) + 1, np.int64)
    counts[0] = starts[0]
    counts[1:-1:2] = ends - starts                            # ones
    counts[2:-1:2] = starts[1:] - ends[:-1]                   # zeros between
    counts[-1] = size - ends[-1]
    out = counts.tolist()
    if out[-1] == 0:
        out.pop()
    return out


def rle_encode(mask: np.ndarray) -> dict:
    """COCO run-length encoding of a binary mask (uncompressed counts).

    Runs follow column-major (Fortran) order and start with background, as
    ``pycocotools.mask.encode`` does; :func:`rle_to_string` compresses them.

    Parameters
    ----------
    mask : (H, W) bool ndarray

    Returns
    -------
    dict
        ``{"size": [H, W], "counts": [int, ...]}``.
    """
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    cols, rows = np.nonzero(mask.T)            # sorted column-major
    return {"size": [h, w], "counts": _runs(cols.astype(np.int64) * h + rows, h * w)}


def rle_to_string(counts) -> str:
    """Compress COCO counts into pycocotools' string form (``rleToString``)."""
    out = []
    for i, x in enumerate(counts):
        x = int(x)
        if i > 2:
            x -= int(counts[i - 2])
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def outlines(mask: np.ndarray) -> list[np.ndarray]:
    """Closed outlines of a binary mask along pixel edges, outer ones first.

    Each outline is an ``(N, 2)`` int array of ``(x, y)`` pixel-corner
    coordinates (pixel ``(row, col)`` covers ``[col, col+1] × [row, row+1]``),
    clockwise on screen for outer boundaries and counter-clockwise for holes,
    with only the corners where the direction changes. Filling an outer
    outline (pixel centres inside) gives back its 4-connected component, as
    an ImageJ traced ROI does. Diagonal-only contacts are kept apart.
    """
    m = np.pad(np.asarray(mask, bool), 1)
    inside = m[1:-1, 1:-1]
    edges = {}
    # directed pixel-edge segments with the object on the right (y down)
    for (dy, dx), (a, b) in (((-1, 0), ((0, 0), (1, 0))), ((0, 1), ((1, 0), (1, 1))),
                             ((1, 0), ((1, 1), (0, 1))), ((0, -1), ((0, 1), (0, 0)))):
        nb = m[1 + dy:m.shape[0] - 1 + dy, 1 + dx:m.shape[1] - 1 + dx]
        r, c = np.nonzero(inside & ~nb)
        for y, x in zip(r.tolist(), c.tolist()):
            start = (x + a[0], y + a[1])
            edges.setdefault(start, []).append((x + b[0], y + b[1]))
    loops = []
    while edges:
        start = min(edges)                       # top-left-most: an outer boundary first
        loop = [start]
        cur, prev = start, None
        while True:
            outs = edges[cur]
            if len(outs) == 1:
                nxt = outs.pop()
            else:
                # two ways out (diagonal contact): turn right, keeping pixels apart
                d = (cur[0] - prev[0], cur[1] - prev[1])
                right = (cur[0] - d[1], cur[1] + d[0])
                nxt = right if right in outs else outs[0]
                outs.remove(nxt)
            if not outs:
                del edges[cur]
            if nxt == start:
                break
            loop.append(nxt)
            prev, cur = cur, nxt
        pts = np.asarray(loop, np.int64)
        d_in = pts - np.roll(pts, 1, axis=0)
        d_out = np.roll(pts, -1, axis=0) - pts
        corner = np.any(d_in != d_out, axis=1)
        loops.append(pts[corner])
    area = [_signed_area(p) for p in loops]
    order = sorted(range(len(loops)), key=lambda i: (area[i] < 0, -abs(area[i])))
    return [loops[i] for i in order]


def _objects(labels: np.ndarray):
    """(label, box slices, mask crop) for each object, in increasing label order."""
    labels = np.asarray(labels)
    ids = np.unique(labels)
    ids = ids[ids != 0]
    if len(ids) and int(ids[-1]) <= 4 * labels.size:
        boxes = ndi.find_objects(labels.astype(np.int64) if labels.dtype.kind == "u"
                                 and labels.dtype.itemsize >= 8 else labels)
        for i in ids.tolist():
            box = boxes[i - 1]
            yield i, box, labels[box] == i
    else:
        for i in ids.tolist():
            r, c = np.nonzero(labels == i)
            box = (slice(r.min(), r.max() + 1), slice(c.min(), c.max() + 1))
            yield i, box, labels[box] == i


def _coco_annotations(labels: np.ndarray, encoding: str, image_id: int, category_id: int,
                      id_offset: int = 0, compress: bool = True) -> list[dict]:
    h, w = labels.shape
    annotations = []
    for i, box, mask in _objects(labels):
        y0, x0 = box[0].start, box[1].start
        if encoding == "rle":
            cols, rows = np.nonzero(mask.T)
            flat = (cols.astype(np.int64) + x0) * h + rows + y0
            counts = _runs(flat, h * w)
            seg = {"size": [h, w], "counts": rle_to_string(counts) if compress else counts}
        else:
            loops = outlines(mask)
            outer = [p for p in loops if _signed_area(p) > 0] or loops[:1]
            seg = [(p + [x0, y0]).ravel().astype(float).tolist() for p in outer]
        annotations.append({
            "id": int(i) + id_offset, "image_id": int(image_id), "category_id": category_id,
            "segmentation": seg, "area": int(mask.sum()),
            "bbox": [int(x0), int(y0), int(box[1].stop - x0), int(box[0].stop - y0)],
            "iscrowd": 0,
        })
    return annotations


def coco_json(labels: np.ndarray, *, file_name: str = "image.tif", encoding: str = "rle",
              image_id: int = 1, category: str = "nucleus", compress: bool = True,
              nuclei: np.ndarray | None = None, nucleus_of: np.ndarray | None = None) -> dict:
    """COCO instance-segmentation annotations of one label image.

    Parameters
    ----------
    labels : (H, W) ndarray of non-negative ints
    file_name : str
    encoding : {"rle", "polygon"}
        ``"rle"`` encodes each object exactly (``iscrowd`` 0 with an RLE
        segmentation, which pycocotools decodes); ``"polygon"`` gives the
        outer pixel-edge outlines of :func:`outlines` as ``[x0, y0, x1, ...]``.
    category : str
        What the objects of ``labels`` are ("nucleus", or "cell" with ``nuclei``).
    compress : bool
        RLE counts as pycocotools' compressed string (else a list of ints).
    nuclei : (H, W) ndarray, optional
        The nuclei of the cells in ``labels``: added as category 2
        ("nucleus"), with ids after the largest cell label.
    nucleus_of : ndarray, optional
        Per cell label, its nucleus label (:func:`piximi_py.measure.link_nuclei`):
        each cell's annotation gets ``nucleus_id``, the id of its nucleus's
        annotation (null: none).

    Returns
    -------
    dict
        ``{"images", "annotations", "categories"}``; each annotation has
        ``id`` (the label; a nucleus's: its label plus the largest cell label), ``image_id``,
        ``category_id`` (1; 2 for the nuclei), ``segmentation``, ``area`` (pixels),
        ``bbox`` ``[x, y, w, h]`` and ``iscrowd`` 0.
    """
    labels = np.asarray(labels)
    if encoding not in ("rle", "polygon"):
        raise ValueError(f"encoding must be 'rle' or 'polygon', not {encoding!r}")
    h, w = labels.shape
    annotations = _coco_annotations(labels, encoding, image_id, 1, 0, compress)
    categories = [{"id": 1, "name": category, "supercategory": "cell"}]
    if nuclei is not None:
        offset = int(labels.max()) if labels.size else 0
        if nucleus_of is not None:
            for a in annotations:
                j = int(nucleus_of[a["id"]]) if a["id"] < len(nucleus_of) else 0
                a["nucleus_id"] = j + offset if j else None
        annotations += _coco_annotations(np.asarray(nuclei), encoding, image_id, 2, offset, compress)
        categories.append({"id": 2, "name": "nucleus", "supercategory": "cell"})
    return {"images": [{"id": int(image_id), "file_name": file_name, "height": h, "width": w}],
            "annotations": annotations, "categories": categories}


def _signed_area(p: np.ndarray) -> float:
    return 0.5 * float(np.sum(p[:, 0] * np.roll(p[:, 1], -1) - np.roll(p[:, 0], -1) * p[:, 1]))


def coco_json_bytes(labels: np.ndarray, **kwargs) -> bytes:
    """:func:`coco_json` serialised (UTF-8 JSON)."""
    return json.dumps(coco_json(labels, **kwargs), separators=(",", ":")).encode("utf-8")


# --------------------------------------------------------------------------- ImageJ

def roi_zip(labels: np.ndarray, nuclei: np.ndarray | None = None,
            nucleus_of: np.ndarray | None = None) -> bytes:
    """ImageJ/Fiji ROI set: one traced polygon ROI per object, named by label.

    Each ROI is the outer pixel-edge outline of the object (:func:`outlines`);
    ImageJ fills it back to the object's pixels (holes filled). An object of
    several separate parts (one merged from two, say) gives one ROI per part,
    the largest named as the object and the others ``NAME-part2``, ... so that
    none is lost. Open with *Analyze › Tools › ROI Manager › More › Open*, or
    ``roifile.roiread``. With ``nuclei`` (the cells' nuclei), cells are named
    ``cell-00001`` (``cell-00001-nucleus-00007`` when ``nucleus_of`` links
    it to nucleus 7) and nuclei ``nucleus-00007``.
    """
    from roifile import ImagejRoi, ROI_TYPE

    def name_of(kind, i):
        if nuclei is None:
            return f"{int(i):05d}"
        j = int(nucleus_of[i]) if kind == "cell" and nucleus_of is not None and i < len(nucleus_of) else 0
        return f"{kind}-{int(i):05d}" + (f"-nucleus-{j:05d}" if j else "")

    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for kind, objects in (("cell", labels), ("nucleus", nuclei)):
            if objects is None:
                continue
            for i, box, mask in _objects(objects):
                loops = outlines(mask)
                # every separate part (an object merged from two, say): one ROI each, largest first
                parts = sorted((p for p in loops if _signed_area(p) > 0), key=_signed_area, reverse=True)
                for k, outer in enumerate(parts or loops[:1], 1):
                    pts = outer + [box[1].start, box[0].start]
                    name = name_of(kind, i) + (f"-part{k}" if k > 1 else "")
                    roi = ImagejRoi.frompoints(pts.astype(np.int32), name=name)
                    roi.roitype = ROI_TYPE.TRACED
                    zf.writestr(name + ".roi", roi.tobytes())
    return buf.getvalue()
