"""Page entry points for promptable segmentation (SAM; Pyodide only).

A box or clicks on an image already decoded (by its ``image_id``: :func:`open_image`, or
kept by ``segment``) give one object mask (:func:`prompt`); accepting it adds the object to
the current labels (:func:`prompt_accept`); :func:`refine` re-segments every current object
from its bounding box. The decoded images and the prompt models' sessions are kept in
``webstate.S``; the prompts themselves are :mod:`piximi_py.sam`'s.
"""
from __future__ import annotations

import numpy as np

from .backends.ortweb import (BackendUnavailable, OrtWebBackend, check_backend, float16_on_webgpu,
                              webgpu_available)
from .diameter import check_diameter
from .models import computes_in_float16
from .webstate import (S, Cancelled, describe_decodable, error_result, fetch_checked, now_ms, plane_options,
                       typed_array)

__all__ = ["open_image", "prompt", "prompt_accept", "prompt_cancel", "refine", "remember_image",
           "MAX_IMAGES", "DECODER_WARM_UP_RUNS"]

#: Decoded images kept for prompts (the last ones segmented or opened), by image id:
#: at most this many, and beyond the newest one at most MAX_IMAGE_BYTES in all.
MAX_IMAGES = 4
MAX_IMAGE_BYTES = 256 * 2**20
#: Window embeddings kept per (prompt model, runtime): 4 MB each for sam, 1 MB for sam_fast.
EMBEDDING_CACHE = 16
# WASM decoder warm-up when a prompt model loads (see _warm_up_decoder)
DECODER_WARM_UP_RUNS = 24
DECODER_WARM_UP_MS = 2500.0


def remember_image(image: np.ndarray) -> str:
    """Keep a decoded plane for prompts; returns its id (a digest of the pixels)."""
    from .sam import image_digest

    image_id = image_digest(image)
    S.images.pop(image_id, None)
    S.images[image_id] = image
    while len(S.images) > 1 and (len(S.images) > MAX_IMAGES
                                 or sum(a.nbytes for a in S.images.values()) > MAX_IMAGE_BYTES):
        old = next(iter(S.images))
        del S.images[old]
        for predictor in S.sam.values():
            predictor.cache.clear(old)
    return image_id


def _image(image_id: str | None) -> tuple[str, np.ndarray]:
    if not image_id and S.last:
        image_id = S.last["image_id"]
    if image_id not in S.images:
        raise LookupError(f"unknown image {image_id!r}: segment or open it first "
                          f"(the page keeps the last {MAX_IMAGES} images for prompts)")
    return image_id, S.images[image_id]


class _Announcing:
    """An encoder backend that calls ``on_run`` before each run (progress for the page)."""

    def __init__(self, backend):
        self.backend, self.name, self.on_run = backend, backend.name, None

    async def run(self, batch):
        if self.on_run is not None:
            self.on_run()
        return await self.backend.run(batch)


async def _sam(backend: str, model_id: str | None = None, progress=None):
    """The predictor of promptable model ``model_id`` (default: the index's default
    prompt model) on ``backend`` ("auto", "webgpu", "wasm"), made once.

    Each runtime uses the encoder/decoder files its ``runtimes`` entry names
    (e.g. int8 on WASM, fp16 on WebGPU). On WASM the decoder is warmed up
    (:func:`_warm_up_decoder`); ``progress("sam_model", 0|1, 1)`` brackets the loading.
    """
    from .backends.ortweb import FLOAT16_UNAVAILABLE
    from .sam import EmbeddingCache, SamPredictor, sam_spec_from_index

    check_backend(backend)
    spec = sam_spec_from_index(S.index, model_id)
    if backend == "auto":
        order = ["webgpu", "wasm"] if await webgpu_available() else ["wasm"]
    else:
        order = [backend]
    for runtime in order:
        if (spec.id, runtime) in S.sam:
            return S.sam[spec.id, runtime]
        if runtime not in spec.runtimes or (backend == "auto" and (spec.id, runtime) in S.sam_failed):
            continue
        roles = spec.runtimes[runtime]
        if progress is not None:
            progress("sam_model", 0, 1)
        float16 = {part: computes_in_float16(spec.file(part, runtime)) for part in ("encoder", "decoder")}
        try:
            if runtime == "webgpu" and any(float16.values()) and not await float16_on_webgpu():
                raise BackendUnavailable(FLOAT16_UNAVAILABLE)  # before downloading the files
            files = [spec.files[roles[part]] for part in ("encoder", "decoder")]
            enc, dec = [await OrtWebBackend.create(await fetch_checked(f["file"], f.get("sha256"), progress),
                                                   runtime, float16=float16[part])
                        for f, part in zip(files, ("encoder", "decoder"))]
        except BackendUnavailable:
            if backend != "auto":
                raise
            S.sam_failed.add((spec.id, runtime))
            continue
        predictor = SamPredictor(_Announcing(enc), dec, spec, EmbeddingCache(EMBEDDING_CACHE))
        if dec.name == "wasm":
            S.sam_warm_up[spec.id, runtime] = await _warm_up_decoder(predictor)
        if progress is not None:
            progress("sam_model", 1, 1)
        S.sam[spec.id, runtime] = predictor
        return predictor
    raise LookupError(f"model {spec.id!r} has no files for backend {backend!r}")


async def _warm_up_decoder(predictor, runs: int = DECODER_WARM_UP_RUNS,
                           budget_ms: float = DECODER_WARM_UP_MS) -> list[float]:
    """Run the decoder on a blank image's embedding until the browser has optimized its code.

    Chromium first runs WebAssembly with its baseline compiler and moves hot
    functions to the optimizing one only after they have run a while: the SAM
    student's decoder took 50-80 ms for its first 10-20 prompts, then 20-30 ms
    (``python -m bench.prompt --prompts 40``). These runs, part of loading the
    model, spend that time before the first real prompt. Returns the run times (ms).
    """
    size = predictor.spec.image_size
    emb = np.ascontiguousarray(await predictor.encoder.backend.run(np.zeros((1, 3, size, size), np.float32)))
    coords = np.array([[[size / 4, size / 4], [3 * size / 4, 3 * size / 4]]], np.float32)
    labels = np.array([[2, 3]], np.float32)
    times, t0 = [], now_ms()
    while len(times) < runs and now_ms() - t0 < budget_ms:
        t = now_ms()
        await predictor._decode(emb, coords, labels)
        times.append(now_ms() - t)
    return times


def _mask_js(mask: np.ndarray) -> tuple[dict, dict]:
    """A full-size bool mask as ``{bbox, width, height, area, bits}`` (bits: the bbox
    crop, row-major, packed 8 pixels a byte, first pixel in the high bit), and the
    crop for :func:`prompt_accept`."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return ({"bbox": None, "width": 0, "height": 0, "area": 0,
                 "bits": typed_array(np.zeros(0, np.uint8))}, {"bbox": None, "crop": None})
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    crop = np.ascontiguousarray(mask[y0:y1 + 1, x0:x1 + 1])
    bbox = [x0, y0, x1, y1]
    return ({"bbox": bbox, "width": x1 - x0 + 1, "height": y1 - y0 + 1, "area": int(crop.sum()),
             "bits": typed_array(np.packbits(crop, axis=None))}, {"bbox": bbox, "crop": crop})


async def open_image(data: bytes, options: dict | None = None) -> dict:
    """Decode a file for prompts without segmenting it: ``{"ok", "image_id", "width", "height"}``.

    ``options``: filename, index / project (plane selection).
    """
    from . import io as pio

    options = options or {}
    try:
        index, project = plane_options(options)
        data = bytes(data)
        await describe_decodable(data, options.get("filename"))
        image = pio.read_image_bytes(data, options.get("filename"), color=True, index=index,
                                     project=project)
        return {"ok": True, "image_id": remember_image(image), "width": int(image.shape[1]),
                "height": int(image.shape[0])}
    except Exception as exc:  # noqa: BLE001
        return error_result(exc)


def _prompt_diameter(request: dict, image_id: str):
    """The object size a click prompt's window is sized for: ``request["diameter"]`` (px), else
    the diameter the last segmentation of this image used, else None (the window grows)."""
    if request.get("diameter") is not None:
        return check_diameter(request["diameter"])
    last = S.last or {}
    return last.get("diameter") if last.get("image_id") == image_id else None


async def prompt(image_id: str | None, request: dict | None = None, options: dict | None = None,
                 progress=None) -> dict:
    """Segment one object of an image already decoded (``image_id`` from :func:`segment`
    or :func:`open_image`; default: the last segmented one) from a prompt.

    ``request``: ``boxes`` ([x0, y0, x1, y1], one box), ``points`` ([[x, y], ...]),
    ``labels`` (1 object / 0 background per point), ``multimask`` (bool, optional),
    ``diameter`` (px, optional: the object size a click's window is sized for; default: the
    diameter of this image's segmentation, else windows grow until the object fits).
    ``options``: backend, model (a prompt-segmentation id of the index; default: its
    default one). Returns ``{"ok", "image_id", "mask": {bbox, width, height,
    area, bits}, "iou", "backend", "timings": {embedding_ms, decoder_ms,
    postprocess_ms, total_ms[, warm_up_ms]}, "cached"}`` (``warm_up_ms``: the
    decoder's warm-up runs, when this prompt loaded the model); the mask is
    kept for :func:`prompt_accept`.
    """
    request, options = request or {}, options or {}
    try:
        t0 = now_ms()
        image_id, image = _image(image_id)
        boxes = request.get("boxes")
        if boxes is not None and np.asarray(boxes, dtype=float).size > 4:
            raise ValueError("a prompt segments one object: give one box [x0, y0, x1, y1]")
        loaded = set(S.sam)
        predictor = await _sam(options.get("backend") or "auto", options.get("model"), progress)
        await predictor.set_image(image, image_id)
        predictor.timings = {}
        if progress is not None:
            predictor.encoder.on_run = lambda: progress("embedding", 0, 1)
        try:
            mask, iou = await predictor.predict(boxes, request.get("points"), request.get("labels"),
                                                multimask=request.get("multimask"),
                                                diameter=_prompt_diameter(request, image_id))
        finally:
            predictor.encoder.on_run = None
        if progress is not None and "encoder" in predictor.timings:
            progress("embedding", 1, 1)
        t = predictor.timings
        out, keep = _mask_js(mask)
        S.pending = {"image_id": image_id, "iou": float(iou), **keep}
        timings = {"embedding_ms": float(t.get("encoder", 0.0)), "decoder_ms": float(t.get("decoder", 0.0)),
                   "postprocess_ms": float(t.get("prompt", 0.0) - t.get("decoder", 0.0)),
                   "total_ms": now_ms() - t0}
        for key in set(S.sam) - loaded:   # the model was loaded for this prompt
            timings["warm_up_ms"] = S.sam_warm_up.get(key, [])
        return {"ok": True, "image_id": image_id, "mask": out, "iou": float(iou),
                "backend": predictor.encoder.name, "cached": "encoder" not in t, "timings": timings}
    except Exception as exc:  # noqa: BLE001
        return error_result(exc)


def prompt_cancel() -> dict:
    """Forget the last prompt's mask."""
    S.pending = None
    return {"ok": True}


def prompt_accept(options: dict | None = None) -> dict:
    """Add the last prompt's mask to the current labels as a new object (a new label id).

    The new object takes every pixel of its mask; an existing object that it
    covers by at least :data:`piximi_py.edit.REPLACE_FRACTION` of its area is replaced (removed
    entirely). Returns ``{"ok", "label", "removed", "patch": {bbox, labels}, "count",
    "measurements", "summary"}`` where ``patch`` is the changed rectangle of the
    labels; ``labels`` (all of them) instead when their dtype had to grow to uint32.
    """
    from .edit import add_object
    from .webedit import commit  # scipy: after start-up

    try:
        p = S.pending
        if p is None:
            raise ValueError("nothing to accept: draw a box or click on an object first")
        if not S.last or S.last.get("image_id") != p["image_id"]:
            raise ValueError("the prompted image is not the one shown: open it again")
        if p["bbox"] is None:
            raise ValueError("the prompt found no object (empty mask): nothing to add")
        old = S.last["labels"]
        x0, y0, x1, y1 = p["bbox"]
        mask = np.zeros(old.shape, bool)
        mask[y0:y1 + 1, x0:x1 + 1] = p["crop"]
        labels, new_id, removed = add_object(old, mask)
        # undoable like any edit; the patch covers the mask and the objects it replaced
        out = {**commit(old, labels), "label": new_id, "removed": removed, "image_id": p["image_id"]}
        S.pending = None
        return out
    except Exception as exc:  # noqa: BLE001
        return error_result(exc)


async def refine(image_id: str | None = None, options: dict | None = None, progress=None) -> dict:
    """"Refine all": re-segment every object of the current labels with SAM, each
    prompted by its bounding box (:meth:`piximi_py.sam.SamPredictor.segment_boxes`).

    Objects keep their order (ids become 1..K); one whose SAM mask is empty, or
    whose predicted IoU is below ``options["min_iou"]`` (default 0), keeps its
    old pixels where no other object took them. ``progress("embedding", k, n)``
    is called before each encoder run; when it returns ``True`` the refinement
    stops (:class:`Cancelled`) and the labels stay as they were. Returns the new labels like
    :func:`piximi_py.webworker.segment` (``labels``, ``count``, ``measurements``, ``summary``) and
    ``timings`` (embedding_ms, decoder_ms, total_ms), ``windows`` (encoder runs).
    """
    from .sam import boxes_from_labels, prompt_window
    from .webedit import commit

    options = options or {}
    try:
        t0 = now_ms()
        if not S.last:
            raise ValueError("nothing to refine: segment an image first")
        image_id = image_id or S.last["image_id"]
        if image_id != S.last.get("image_id"):
            raise ValueError("refine works on the image shown: open it again")
        image_id, image = _image(image_id)
        labels = S.last["labels"]
        ids = np.unique(labels)
        ids = ids[ids > 0]
        if not len(ids):
            raise ValueError("no objects to refine: the image has no labels")
        predictor = await _sam(options.get("backend") or "auto", options.get("model"), progress)
        await predictor.set_image(image, image_id)
        boxes = boxes_from_labels(labels)
        windows = {prompt_window(predictor.shape, b, crop=predictor.spec.crop) for b in boxes}
        runs = [0]

        def on_run():
            runs[0] += 1
            if progress is not None and progress("embedding", runs[0] - 1, len(windows)) is True:
                raise Cancelled("refine cancelled: the labels are unchanged")

        predictor.encoder.on_run = on_run
        predictor.timings = {}
        t = now_ms()
        try:
            new, _ = await predictor.segment_boxes(boxes, min_iou=float(options.get("min_iou", 0.0)))
        finally:
            predictor.encoder.on_run = None
        total_sam = now_ms() - t
        if progress is not None:
            progress("embedding", len(windows), len(windows))
        present = np.zeros(len(ids) + 1, bool)
        present[np.unique(new)] = True
        for k in np.flatnonzero(~present[1:]):
            new[(labels == ids[k]) & (new == 0)] = k + 1
        new = new.astype(labels.dtype if len(ids) <= np.iinfo(labels.dtype).max else np.uint32)
        S.pending = None
        out = {**commit(labels, new, whole=True), "height": int(new.shape[0]),   # undoable like any edit
               "width": int(new.shape[1]), "image_id": image_id, "backend": predictor.encoder.name,
               "windows": runs[0], "objects": int(len(ids))}
        out["timings"] = {"sam_ms": total_sam, "total_ms": now_ms() - t0}
        return out
    except Exception as exc:  # noqa: BLE001
        return error_result(exc)
