"""Promptable segmentation (Segment Anything: LiteMedSAM and its distilled student) with numpy only.

Boxes and clicks become one object mask. The image encoder runs once per
image *window* and its embedding is cached; the prompt decoder runs per
prompt (tens of ms). Both are ONNX models behind a
:class:`~piximi_py.backends.base.Backend`, so the same code runs in CPython
(native onnxruntime) and in the page (onnxruntime-web):

>>> import piximi_py.sam
>>> mask, iou = piximi_py.sam.prompt("nuclei.tif", boxes=[40, 60, 72, 90])   # doctest: +SKIP

Conventions (those of SAM):

* coordinates are pixels of the full image, ``x`` = column, ``y`` = row;
* a box is ``(x0, y0, x1, y1)``: the first and last column and row of the object;
* a point is ``(x, y)``; its label is 1 (object, "positive click") or 0
  (background, "negative click").

Large images are not squeezed into the model's 256x256 input: the encoder sees
a window around the prompt, sized so the object fills about ``1/context`` of
it (:func:`choose_window`), with windows snapped to a grid so that nearby
prompts share one embedding.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

from .backends.base import Backend
from .preprocess import normalize_percentile

__all__ = ["SamSpec", "Window", "EmbeddingCache", "SamPredictor", "load_sam_spec", "sam_spec_from_index",
           "boxes_from_labels", "normalize_image",
           "choose_window", "prompt_window", "encoder_input", "resize_bilinear", "points_to_model",
           "points_from_model", "boxes_to_model", "boxes_from_model", "decoder_prompt", "paste_mask",
           "check_prompt", "prompt", "load_predictor"]

IMAGE_SIZE = 256


# ------------------------------------------------------------------ the spec
@dataclass(frozen=True)
class SamSpec:
    """What the pipeline needs from a ``task: "prompt-segmentation"`` entry of ``models/index.json``."""

    id: str = "sam"
    image_size: int = IMAGE_SIZE
    files: dict = field(default_factory=dict)      #: role -> {"file", "sha256", "bytes"}
    runtimes: dict = field(default_factory=dict)   #: "native"/"wasm"/"webgpu" -> {"encoder": role, "decoder": role}
    normalize: dict = field(default_factory=lambda: {"low": 0.5, "high": 99.8, "clip": True})
    prompt: dict = field(default_factory=lambda: {"mask_threshold": 0.0, "single_mask_output": 0,
                                                  "multimask_outputs": [1, 2, 3]})
    crop: dict = field(default_factory=lambda: {"context": 4.0, "min_window": 64, "point_window": 96,
                                                "grid": 0.5, "point_tries": 3, "point_sizes": [1.0],
                                                "point_box": 0.0, "point_min_iou": 0.5})

    def file(self, part: str, runtime: str = "native") -> str:
        """File name of ``part`` ("encoder" or "decoder") for ``runtime``."""
        return self.files[self.runtimes[runtime][part]]["file"]

    def mask_threshold(self, window: "Window") -> float:
        """The logit a mask decoded in ``window`` is cut at: ``prompt["mask_threshold"]``, or
        ``prompt["small_window_threshold"]`` where the window is at most ``prompt["small_window"]``
        pixels a side (the image enlarged that much more to the encoder's input, where a student's
        masks come out wider than the object)."""
        small = self.prompt.get("small_window", 0)
        if small and max(window.h, window.w) <= small:
            return self.prompt["small_window_threshold"]
        return self.prompt.get("mask_threshold", 0.0)


def load_sam_spec(models_dir=None, model_id: str | None = None) -> SamSpec:
    """The prompt-segmentation entry ``model_id`` of ``models_dir/index.json`` (default: the one
    marked ``"default": true``, else the first one)."""
    from .models import default_models_dir

    return sam_spec_from_index((Path(models_dir or default_models_dir()) / "index.json").read_text(), model_id)


def sam_spec_from_index(source, model_id: str | None = None) -> SamSpec:
    """Like :func:`load_sam_spec` from ``index.json``'s text or parsed dict (what the page has)."""
    raw = source if isinstance(source, dict) else json.loads(source)
    entries = [m for m in raw["models"] if m.get("task") == "prompt-segmentation"
               and (model_id is None or m["id"] == model_id)]
    if not entries:
        raise ValueError(f"no prompt-segmentation model {model_id or ''} in models/index.json")
    entries.sort(key=lambda m: not m.get("default", False))
    known = set(SamSpec.__dataclass_fields__)
    return SamSpec(**{k: v for k, v in entries[0].items() if k in known})


# ------------------------------------------------------------- preprocessing
def normalize_image(image: np.ndarray, low: float = 0.5, high: float = 99.8, clip: bool = True) -> np.ndarray:
    """Percentile-scale a plane to [0, 1] as LiteMedSAM expects (it was trained on min-max scaled images).

    Percentiles of the whole image, not of each window, so every window of one
    image sees the same intensities. Gray stays ``(H, W)``; RGB stays ``(H, W, 3)``
    (one scaling for all channels).
    """
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., :3]
    x = normalize_percentile(image, low, high)
    if clip:
        np.clip(x, 0.0, 1.0, out=x)
    return x


class Window(NamedTuple):
    """A crop of the image in pixels: rows ``y:y+h``, columns ``x:x+w``."""

    y: int
    x: int
    h: int
    w: int

    def model_shape(self, size: int = IMAGE_SIZE) -> tuple[int, int]:
        """Height and width of the window once its longest side is resized to ``size``."""
        scale = size / max(self.h, self.w)
        return max(1, min(size, int(round(self.h * scale)))), max(1, min(size, int(round(self.w * scale))))


def _ladder(side: float, min_window: int) -> int:
    """Round ``side`` up to min_window * sqrt(2)**k (multiples of 8), so windows repeat."""
    k = max(0, math.ceil(2 * math.log2(max(side, 1) / min_window) - 1e-9))
    return int(8 * round(min_window * 2 ** (k / 2) / 8))


def choose_window(image_shape, box, *, context: float = 4.0, min_window: int = 64, grid: float = 0.5,
                  min_side: float = 0) -> Window:
    """The encoder window for an object whose extent is ``box`` (x0, y0, x1, y1).

    The window's side is about ``context`` times the object's size (at least
    ``min_window`` and ``min_side``), rounded up to a ladder of sizes, its
    origin snapped to a grid of ``grid * side`` and shifted inside the image.
    An image smaller than the side is used whole.

    Returns
    -------
    Window
    """
    h_img, w_img = int(image_shape[0]), int(image_shape[1])
    x0, y0, x1, y1 = (float(v) for v in box)
    size = max(x1 - x0 + 1, y1 - y0 + 1)
    side = _ladder(max(context * size, min_window, min_side), min_window)
    if side >= max(h_img, w_img):
        return Window(0, 0, h_img, w_img)
    stride = max(1, int(round(side * grid)))
    origin = []
    for centre, extent in (((y0 + y1 + 1) / 2, h_img), ((x0 + x1 + 1) / 2, w_img)):
        length = min(side, extent)
        k = round((centre - length / 2) / stride)
        origin.append(int(min(max(k * stride, 0), extent - length)))
    return Window(origin[0], origin[1], min(side, h_img), min(side, w_img))


def resize_bilinear(a: np.ndarray, shape, antialias: bool = True) -> np.ndarray:
    """Bilinear resize of the first two axes with half-pixel centres.

    Same sampling as ``torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False)``; when shrinking and ``antialias``, a Gaussian
    prefilter (sigma = (factor - 1) / 2, as scikit-image) avoids aliasing.
    """
    a = np.asarray(a, dtype=np.float32)
    out_h, out_w = int(shape[0]), int(shape[1])
    if antialias:
        sigma = [max(0.0, (a.shape[0] / out_h - 1) / 2), max(0.0, (a.shape[1] / out_w - 1) / 2)]
        if max(sigma) > 0:
            a = ndi.gaussian_filter(a, sigma + [0] * (a.ndim - 2), mode="nearest")
    for axis, n_out in ((0, out_h), (1, out_w)):
        n_in = a.shape[axis]
        if n_in == n_out:
            continue
        src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        i0 = np.floor(src).astype(np.intp)
        i1 = np.minimum(i0 + 1, n_in - 1)
        wt = (src - i0).astype(np.float32).reshape((-1,) + (1,) * (a.ndim - 1 - axis))
        a = np.take(a, i0, axis=axis) * (1 - wt) + np.take(a, i1, axis=axis) * wt
    return a


def encoder_input(norm_image: np.ndarray, window: Window, size: int = IMAGE_SIZE) -> tuple[np.ndarray, tuple]:
    """The encoder's ``(1, 3, size, size)`` input for one window of a normalized image.

    The window is resized so its longest side is ``size`` and zero-padded at the
    bottom and right (LiteMedSAM's preprocessing). Returns the input and the
    resized ``(height, width)`` inside it.
    """
    crop = norm_image[window.y:window.y + window.h, window.x:window.x + window.w]
    nh, nw = window.model_shape(size)
    crop = resize_bilinear(crop, (nh, nw))
    if crop.ndim == 2:
        crop = crop[..., None]
    out = np.zeros((1, 3, size, size), np.float32)
    out[0, :, :nh, :nw] = np.moveaxis(crop, -1, 0)  # gray broadcasts to 3 channels
    return out, (nh, nw)


# ----------------------------------------------------- prompt geometry
def _scale(window: Window, size: int = IMAGE_SIZE) -> np.ndarray:
    nh, nw = window.model_shape(size)
    return np.array([nw / window.w, nh / window.h])  # (sx, sy)


def points_to_model(points, window: Window, size: int = IMAGE_SIZE) -> np.ndarray:
    """Image (x, y) pixel centres -> model input pixel coordinates (half-pixel exact)."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    return (p - [window.x, window.y] + 0.5) * _scale(window, size) - 0.5


def points_from_model(points, window: Window, size: int = IMAGE_SIZE) -> np.ndarray:
    """Inverse of :func:`points_to_model`."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    return (p + 0.5) / _scale(window, size) - 0.5 + [window.x, window.y]


def boxes_to_model(boxes, window: Window, size: int = IMAGE_SIZE) -> np.ndarray:
    """Image boxes (x0, y0, x1, y1; first/last pixel) -> model input boxes.

    Maps the pixels' outer edges, so the box covers the same area once
    resized (as a box taken from the resized mask would, as in MedSAM training).
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    s = np.tile(_scale(window, size), 2)
    o = np.array([window.x, window.y] * 2, np.float64)
    return (b - o + [0, 0, 1, 1]) * s - [0, 0, 1, 1]


def boxes_from_model(boxes, window: Window, size: int = IMAGE_SIZE) -> np.ndarray:
    """Inverse of :func:`boxes_to_model`."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    s = np.tile(_scale(window, size), 2)
    return (b + [0, 0, 1, 1]) / s - [0, 0, 1, 1] + [window.x, window.y] * 2


def check_prompt(image_shape, boxes=None, points=None, labels=None):
    """Validate and normalize a prompt; raise ``ValueError`` saying what is wrong.

    Returns
    -------
    boxes : (K, 4) float64 or None
    points : (N, 2) float64 or None
    labels : (N,) int or None
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    if boxes is not None:
        boxes = np.asarray(boxes, np.float64)
        if boxes.size == 0:
            boxes = None
        elif boxes.shape[-1] != 4 or boxes.ndim > 2:
            raise ValueError(f"boxes must be (x0, y0, x1, y1) or a (K, 4) array, got shape {boxes.shape}")
        else:
            boxes = boxes.reshape(-1, 4)
            if not np.isfinite(boxes).all():
                raise ValueError("box coordinates must be finite numbers")
            bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
            if bad.any():
                raise ValueError(f"degenerate box {boxes[bad][0].tolist()}: need x1 > x0 and y1 > y0 "
                                 "(boxes are x0, y0, x1, y1)")
            outside = (boxes[:, 2] < 0) | (boxes[:, 3] < 0) | (boxes[:, 0] > w - 1) | (boxes[:, 1] > h - 1)
            if outside.any():
                raise ValueError(f"box {boxes[outside][0].tolist()} lies outside the {w}x{h} image")
            boxes = np.clip(boxes, 0, [w - 1, h - 1, w - 1, h - 1])
    if points is not None:
        points = np.asarray(points, np.float64)
        if points.size == 0:
            points = None
        elif points.shape[-1] != 2 or points.ndim > 2:
            raise ValueError(f"points must be (x, y) or an (N, 2) array, got shape {points.shape}")
        else:
            points = points.reshape(-1, 2)
            if not np.isfinite(points).all():
                raise ValueError("point coordinates must be finite numbers")
            out = (points[:, 0] < 0) | (points[:, 0] > w - 1) | (points[:, 1] < 0) | (points[:, 1] > h - 1)
            if out.any():
                raise ValueError(f"point {points[out][0].tolist()} lies outside the {w}x{h} image")
    if points is None:
        if labels is not None and np.asarray(labels).size:
            raise ValueError("labels given without points")
        labels = None
    else:
        labels = np.ones(len(points), int) if labels is None else np.asarray(labels).reshape(-1)
        if len(labels) != len(points):
            raise ValueError(f"{len(labels)} labels for {len(points)} points")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("point labels must be 1 (object) or 0 (background)")
        labels = labels.astype(int)
    if boxes is None and (points is None or not (labels == 1).any()):
        raise ValueError("empty prompt: give a box or at least one positive point (label 1)")
    if boxes is not None and len(boxes) > 1 and points is not None:
        raise ValueError("points refine one object: give at most one box with points")
    return boxes, points, labels


def prompt_window(image_shape, boxes=None, points=None, labels=None, crop: dict | None = None,
                  diameter: float | None = None) -> Window:
    """The encoder window for one object prompt (see :func:`choose_window`).

    A prompt of clicks alone does not say how large the object is: the
    window is ``context`` times ``diameter`` (the objects' typical diameter,
    e.g. the segmentation's), or without it at least ``crop["point_window"]`` px.
    """
    crop = {**SamSpec().crop, **(crop or {})}
    parts, min_side = [], 0
    if boxes is not None:
        parts.append(np.asarray(boxes, float).reshape(-1, 4))
    if points is not None:
        pos = points[labels == 1] if labels is not None else points
        if len(pos):
            parts.append(np.concatenate([pos.min(0), pos.max(0)])[None])
        if boxes is None:
            min_side = crop["context"] * diameter if diameter else crop["point_window"]
    allb = np.concatenate(parts)
    extent = (allb[:, 0].min(), allb[:, 1].min(), allb[:, 2].max(), allb[:, 3].max())
    return choose_window(image_shape, extent, context=crop["context"], min_window=crop["min_window"],
                         grid=crop["grid"], min_side=min_side)


def decoder_prompt(window: Window, boxes=None, points=None, labels=None,
                   size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """SAM decoder inputs ``point_coords (B, N, 2)`` and ``point_labels (B, N)``, float32.

    One row per box when several boxes (no points); else one row: the points
    (labels 1/0), then the box corners (labels 2, 3), or a padding point
    (label -1) when there is no box, as SAM's prompt encoder does.
    """
    rows_c, rows_l = [], []
    box_list = [None] if boxes is None else list(np.asarray(boxes, float).reshape(-1, 4))
    for box in box_list:
        c, l = [], []
        if points is not None:
            c.append(points_to_model(points, window, size))
            l.append(np.asarray(labels, np.float64))
        if box is not None:
            c.append(boxes_to_model(box, window, size).reshape(2, 2))
            l.append(np.array([2.0, 3.0]))
        else:
            c.append(np.zeros((1, 2)))
            l.append(np.array([-1.0]))
        rows_c.append(np.concatenate(c))
        rows_l.append(np.concatenate(l))
    return np.stack(rows_c).astype(np.float32), np.stack(rows_l).astype(np.float32)


def _cut_by_window(mask: np.ndarray, window: Window, image_shape, margin: int = 1) -> bool:
    """Whether ``mask`` reaches an edge of ``window`` that is not the image's edge."""
    y0, x0, y1, x1 = window.y, window.x, window.y + window.h, window.x + window.w
    inner = mask[y0:y1, x0:x1]
    if not inner.any():
        return False
    edges = [(y0 > 0, inner[:margin]), (y1 < image_shape[0], inner[-margin:]),
             (x0 > 0, inner[:, :margin]), (x1 < image_shape[1], inner[:, -margin:])]
    return any(inside and strip.any() for inside, strip in edges)


def paste_mask(logits: np.ndarray, window: Window, image_shape, threshold: float = 0.0,
               size: int = IMAGE_SIZE) -> np.ndarray:
    """Low-resolution logits ``(size, size)`` of one window -> full-size boolean mask."""
    nh, nw = window.model_shape(size)
    up = resize_bilinear(logits[:nh, :nw], (window.h, window.w), antialias=False)
    mask = np.zeros(tuple(image_shape[:2]), bool)
    mask[window.y:window.y + window.h, window.x:window.x + window.w] = up > threshold
    return mask


def _box_around(point, side: float, image_shape) -> tuple:
    """The box (x0, y0, x1, y1) of ``side`` px centred on ``point`` (x, y), inside the image."""
    h, w = image_shape[:2]
    half = max(side, 2.0) / 2
    x0, y0 = max(0.0, point[0] - half), max(0.0, point[1] - half)
    return (x0, y0, max(x0 + 1, min(w - 1.0, point[0] + half)), max(y0 + 1, min(h - 1.0, point[1] + half)))


def boxes_from_labels(labels: np.ndarray) -> np.ndarray:
    """Boxes ``(K, 4)`` (x0, y0, x1, y1) of the objects of a label image, e.g. the
    nuclei model's, to seed :meth:`SamPredictor.segment_boxes` ("segment all").

    Row ``k`` is the object with the k-th smallest label; single-pixel-wide
    objects get a box one pixel wider so it is not degenerate.
    """
    labels = np.asarray(labels)
    h, w = labels.shape
    out = []
    for sl in ndi.find_objects(labels):
        if sl is None:
            continue
        x0, y0, x1, y1 = sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1
        if x1 == x0:
            x0, x1 = (x0 - 1, x1) if x1 == w - 1 else (x0, x1 + 1)
        if y1 == y0:
            y0, y1 = (y0 - 1, y1) if y1 == h - 1 else (y0, y1 + 1)
        out.append((x0, y0, x1, y1))
    return np.array(out, np.float64).reshape(-1, 4)


# ------------------------------------------------------------------ caching
class EmbeddingCache:
    """Least-recently-used image embeddings keyed by (image id, window, encoder).

    Each embedding is 4 MB (256 x 64 x 64 float32, LiteMedSAM) or 1 MB (256 x 32 x 32,
    its student ``sam_fast``); ``max_items`` bounds memory.
    """

    def __init__(self, max_items: int = 32):
        self.max_items = max_items
        self._items: OrderedDict = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key):
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]
        self.misses += 1
        return None

    def put(self, key, value) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def clear(self, image_id=None) -> None:
        if image_id is None:
            self._items.clear()
        else:
            for k in [k for k in self._items if k[0] == image_id]:
                del self._items[k]

    def __len__(self) -> int:
        return len(self._items)


def image_digest(image: np.ndarray) -> str:
    """A content id for an image (sha1 of shape, dtype and pixels)."""
    a = np.ascontiguousarray(image)
    h = hashlib.sha1(f"{a.shape}{a.dtype}".encode())
    h.update(a.data)
    return h.hexdigest()[:20]


# ---------------------------------------------------------------- predictor
class SamPredictor:
    """Prompt -> mask with an encoder and a decoder backend.

    Parameters
    ----------
    encoder : Backend
        ``image (1, 3, 256, 256) -> embeddings``; called with :meth:`Backend.run`.
    decoder : Backend
        ``embeddings, point_coords, point_labels -> masks, iou_predictions``;
        called with :meth:`Backend.run_named`.
    spec : SamSpec, optional
    cache : EmbeddingCache, optional
        Shared between predictors if given.
    """

    def __init__(self, encoder: Backend, decoder: Backend, spec: SamSpec | None = None,
                 cache: EmbeddingCache | None = None):
        self.encoder, self.decoder = encoder, decoder
        self.spec = spec or SamSpec()
        self.cache = cache if cache is not None else EmbeddingCache()
        self.image_id = None
        self.image = None       # normalized plane
        self.shape = None
        self.timings: dict = {}

    async def set_image(self, image: np.ndarray, image_id: str | None = None) -> str:
        """Select the image that prompts refer to; cheap (no encoder run). Returns its id."""
        from .io import validate_image

        image = validate_image(np.asarray(image))
        image_id = image_id or image_digest(image)
        if image_id != self.image_id:
            self.image = normalize_image(image, **self.spec.normalize)
            self.shape = image.shape[:2]
            self.image_id = image_id
        return image_id

    def _require_image(self):
        if self.image is None:
            raise RuntimeError("no image: call set_image() first")

    async def embedding(self, window: Window) -> np.ndarray:
        """The (cached) embedding of one window of the current image."""
        self._require_image()
        key = (self.image_id, tuple(window), getattr(self.encoder, "name", ""))
        emb = self.cache.get(key)
        if emb is None:
            import time

            t = time.perf_counter()
            x, _ = encoder_input(self.image, window, self.spec.image_size)
            emb = np.ascontiguousarray(await self.encoder.run(x), np.float32)
            self.timings["encoder"] = (time.perf_counter() - t) * 1000
            self.cache.put(key, emb)
        return emb

    async def _decode(self, emb, coords, labels):
        out = await self.decoder.run_named({"embeddings": emb, "point_coords": coords, "point_labels": labels})
        return out["masks"], out["iou_predictions"]

    def _pick(self, ious: np.ndarray, single_click: bool, multimask) -> int:
        if multimask is None:
            multi = single_click and self.spec.prompt.get("single_click_multimask", True)
        else:
            multi = multimask
        if multi:
            outs = list(self.spec.prompt.get("multimask_outputs", [1, 2, 3]))
            return outs[int(np.argmax(ious[outs]))]
        return int(self.spec.prompt.get("single_mask_output", 0))

    async def predict(self, boxes=None, points=None, labels=None, *, multimask: bool | None = None,
                      window: Window | None = None, diameter: float | None = None):
        """Segment one object (or one per box).

        Parameters
        ----------
        boxes : (4,) or (K, 4), optional
            ``(x0, y0, x1, y1)``. Several boxes without points give K objects.
        points : (N, 2), optional
            ``(x, y)`` clicks refining the object.
        labels : (N,), optional
            1 = object, 0 = background; default all 1.
        multimask : bool, optional
            Choose among SAM's three multimask outputs by predicted IoU. Default:
            for a single click (SAM's rule for ambiguous prompts) unless the
            model's ``prompt.single_click_multimask`` is false.
        window : Window, optional
            Force the encoder window (default :func:`prompt_window`).
        diameter : float, optional
            Typical object diameter (px), for clicks without a box: the windows
            are sized for it, and grow when the mask does not fit or the model
            doubts it. Without it, windows doubling in size are tried and the
            best uncut mask is kept (see :meth:`_click`).

        Returns
        -------
        mask : (H, W) bool, or (K, H, W) for K > 1 boxes
        iou : float, or (K,) float: the model's predicted IoU

        Raises
        ------
        ValueError
            For an empty or degenerate prompt (see :func:`check_prompt`).
        """
        self._require_image()
        boxes, points, labels = check_prompt(self.shape, boxes, points, labels)
        if window is None:
            if boxes is not None and len(boxes) > 1:
                masks, ious = [], []
                for b in boxes:
                    m, i = await self.predict(b, multimask=multimask)
                    masks.append(m)
                    ious.append(i)
                return np.stack(masks), np.array(ious)
            if boxes is None:
                return await self._click(points, labels, multimask, diameter)
            window = prompt_window(self.shape, boxes, points, labels, self.spec.crop)
        return await self._predict_in(window, boxes, points, labels, multimask)

    async def _click(self, points, labels, multimask, diameter=None):
        """Clicks alone, which do not say how large the object is.

        With ``diameter``, windows of ``context * diameter * f`` for each ``f`` of
        ``crop["point_sizes"]`` are tried first. The best of those masks (by the
        model's predicted IoU) is kept when it is not empty, not cut by its
        window's inner edge, and predicted at ``crop["point_min_iou"]`` or more:
        inside a nucleus far larger than the diameter (a wrong estimate, or an
        outsized object) the model draws a speck with a low predicted IoU. A
        single positive click is then also tried with a box ``crop["point_box"]``
        times the diameter wide around it (one decoder run more: its window is
        the sized one), and the better mask kept; not before the check, as a
        box is drawn with confidence whatever lies in it.
        Otherwise, and without ``diameter``, windows of ``point_tries`` sizes
        doubling from ``crop["point_window"]`` are tried too, and of every mask
        the best uncut one is kept.
        """
        crop = {**SamSpec().crop, **self.spec.crop}
        tried: dict = {}

        async def attempt(window, box=None):
            if (window, box) not in tried:
                mask, iou = await self._predict_in(window, box, points, labels, multimask)
                whole = bool(mask.any()) and not _cut_by_window(mask, window, self.shape)
                tried[window, box] = ((whole, iou), mask, iou)

        def best():
            return max(tried.values(), key=lambda t: t[0])

        if diameter:
            for f in crop["point_sizes"]:
                await attempt(prompt_window(self.shape, None, points, labels, crop, diameter * f))
            (whole, iou), mask, _ = best()
            if whole and iou >= crop["point_min_iou"]:
                if crop["point_box"] and len(points) == 1 and labels[0] == 1:
                    box = _box_around(points[0], crop["point_box"] * diameter, self.shape)
                    await attempt(prompt_window(self.shape, np.array(box), crop=crop), box)
                    _, mask, iou = best()
                return mask, iou
        window = prompt_window(self.shape, None, points, labels, crop)
        for _ in range(max(1, int(crop["point_tries"]))):
            await attempt(window)
            larger = prompt_window(self.shape, None, points, labels,
                                   {**crop, "point_window": 2 * max(window.h, window.w)})
            if larger == window:
                break
            window = larger
        _, mask, iou = best()
        return mask, iou

    async def _predict_in(self, window: Window, boxes, points, labels, multimask):
        import time

        emb = await self.embedding(window)
        t = time.perf_counter()
        coords, lab = decoder_prompt(window, boxes, points, labels, self.spec.image_size)
        masks, ious = await self._decode(emb, coords, lab)
        self.timings["decoder"] = (time.perf_counter() - t) * 1000
        single_click = boxes is None and len(points) == 1
        thr = self.spec.mask_threshold(window)
        out_m, out_i = [], []
        for k in range(len(coords)):
            j = self._pick(ious[k], single_click, multimask)
            out_m.append(paste_mask(masks[k, j], window, self.shape, thr, self.spec.image_size))
            out_i.append(float(ious[k, j]))
        self.timings["prompt"] = (time.perf_counter() - t) * 1000
        if len(out_m) == 1:
            return out_m[0], out_i[0]
        return np.stack(out_m), np.array(out_i)

    async def segment_boxes(self, boxes, *, min_iou: float = 0.0, batch: int = 16):
        """"Segment all": one object per box (e.g. a detector's), as instance labels.

        Boxes sharing an encoder window share one embedding and one decoder call
        (up to ``batch`` prompts). Later objects do not overwrite earlier ones;
        objects whose predicted IoU is below ``min_iou`` are dropped.

        Returns
        -------
        labels : (H, W) int32, 0 = background, i + 1 = box i
        ious : (K,) float
        """
        self._require_image()
        boxes, _, _ = check_prompt(self.shape, boxes=boxes)
        crop = self.spec.crop
        groups: dict = {}
        for i, b in enumerate(boxes):
            groups.setdefault(prompt_window(self.shape, b, crop=crop), []).append(i)
        labels = np.zeros(self.shape, np.int32)
        ious = np.zeros(len(boxes))
        j = int(self.spec.prompt.get("single_mask_output", 0))
        for window, idx in groups.items():
            emb = await self.embedding(window)
            thr = self.spec.mask_threshold(window)
            for start in range(0, len(idx), batch):
                part = idx[start:start + batch]
                coords, lab = decoder_prompt(window, boxes[part], size=self.spec.image_size)
                masks, pred = await self._decode(emb, coords, lab)
                for k, i in enumerate(part):
                    ious[i] = float(pred[k, j])
                    if ious[i] < min_iou:
                        continue
                    m = paste_mask(masks[k, j], window, self.shape, thr, self.spec.image_size)
                    labels[m & (labels == 0)] = i + 1
        return labels, ious


# ------------------------------------------------------------- CPython API
_PREDICTORS: dict = {}


def load_predictor(model: str | None = None, *, models_dir=None, threads: int | None = None,
                   runtime: str = "native", encoder: str | None = None, decoder: str | None = None) -> SamPredictor:
    """A native-onnxruntime :class:`SamPredictor` for a model of ``models/index.json`` (cached).

    ``encoder`` / ``decoder`` pick other files of the entry by role (e.g. ``"decoder_int8"``).
    """
    from .backends.onnxruntime import OnnxRuntimeBackend
    from .models import default_models_dir

    models_dir = Path(models_dir or default_models_dir())
    spec = load_sam_spec(models_dir, model)
    enc = spec.files[encoder]["file"] if encoder else spec.file("encoder", runtime)
    dec = spec.files[decoder]["file"] if decoder else spec.file("decoder", runtime)
    key = (str(models_dir), spec.id, enc, dec, threads)
    if key not in _PREDICTORS:
        _PREDICTORS[key] = SamPredictor(OnnxRuntimeBackend(models_dir / enc, threads=threads),
                                        OnnxRuntimeBackend(models_dir / dec, threads=threads), spec)
    return _PREDICTORS[key]


def prompt(image, boxes=None, points=None, labels=None, *, model: str | None = None, models_dir=None,
           threads: int | None = None, image_id: str | None = None, multimask: bool | None = None):
    """Segment one object of ``image`` from a prompt, in CPython (native onnxruntime).

    Parameters
    ----------
    image : str, Path, bytes or ndarray
        A file, its bytes, or a decoded 2-D (or RGB) array.
    boxes, points, labels
        See :meth:`SamPredictor.predict`.
    model : str, optional
        A prompt-segmentation id of ``models/index.json`` (``"sam_fast"``, ``"sam"``);
        default: the entry marked ``"default": true``.
    image_id : str, optional
        Key of the embedding cache; default: a digest of the pixels, so repeated
        prompts on one image reuse the encoder's output.

    Returns
    -------
    mask : (H, W) bool (or (K, H, W) for K boxes)
    iou : float (or (K,)): predicted IoU
    """
    from . import run_sync
    from .io import read_image, read_image_bytes

    if isinstance(image, (str, Path)):
        image = read_image(image, color=True)
    elif isinstance(image, (bytes, bytearray, memoryview)):
        image = read_image_bytes(bytes(image), color=True)
    predictor = load_predictor(model, models_dir=models_dir, threads=threads)
    run_sync(predictor.set_image(image, image_id))
    return run_sync(predictor.predict(boxes, points, labels, multimask=multimask))
