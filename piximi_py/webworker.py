"""Page entry points for start-up and segmentation (Pyodide only).

The page (``web/app.js``) talks to the entry points through ``web/worker.py``; they live
by job, sharing the session's state (:mod:`piximi_py.webstate`):

* here: :func:`init` (load onnxruntime-web, the model index and the default model),
  :func:`warm_up`, :func:`models` (the model index as plain dicts), :func:`describe` (what a
  file holds: axes, sizes, pixel size, channel names), :func:`segment` (image file bytes ->
  instance labels, returned as JS objects: labels as a ``Uint16Array``/``Uint32Array``, never
  a Python list, with the measurements table and the image summary) and :func:`memory`;
* :mod:`piximi_py.webexport`: the last result as a file (label TIFF, mask, overlay PNG, CSV,
  COCO JSON, ImageJ ROI zip, or all of them in one zip), and a batch's results in one zip
  (``segment(..., batch=True)``, ``batch_fail``, ``batch_zip``);
* :mod:`piximi_py.webprompt`: promptable segmentation (SAM) on an image already decoded;
* :mod:`piximi_py.webedit`: editing the labels, with undo and redo;
* :mod:`piximi_py.webteach`: teaching a model from corrected images.

Only models the ``segment`` pipeline runs are offered by :func:`models`
(``segment: true``); the others (e.g. promptable SAM) keep their ``task`` and
are listed with ``models(all=True)``.

Every entry point returns ``{"ok": True, ...}`` or ``{"ok": False, "error":
{"type", "message"}}`` with a message a person can act on; the page turns the
latter into a rejected ``Error``.
"""
from __future__ import annotations

import json

import numpy as np

from .backends.ortweb import load_ort
from .diameter import resolve_diameter
from .models import can_segment, find_model, load_model_index, reads_channels
from .webexport import BATCH_EXPORTS, current_batch, export_files
from .webprompt import remember_image
from .webstate import (S, describe_decodable, error_result, fetch_bytes, intensity, model_backend, now_ms,
                       plane_options, segmentation_spec, spec_dict, table_js, typed_array)

__all__ = ["init", "warm_up", "models", "describe", "segment", "memory"]


async def init(cfg: dict) -> dict:
    """cfg: base (absolute site URL ending in /), ort_modules ({"wasm": URL, "webgpu": URL}), ort_wasm_paths,
    models_index (relative URLs), backend (default "auto"), num_threads (optional), probe_backend
    (default true: "auto" times WebGPU and WASM once per model and GPU, :mod:`piximi_py.backends.probe`)."""
    try:
        t0 = now_ms()
        timings = {}
        S.cfg = cfg
        S.base = cfg["base"]
        await load_ort({k: S.base + u for k, u in cfg["ort_modules"].items()}, S.base + cfg["ort_wasm_paths"],
                       num_threads=cfg.get("num_threads"))
        timings["onnxruntime"] = now_ms() - t0
        t = now_ms()
        text = (await fetch_bytes(S.base + cfg["models_index"])).decode("utf-8")
        S.specs = list(load_model_index(text))
        S.index = json.loads(text)
        S.raw = {m["id"]: m for m in S.index.get("models", [])}
        if not S.specs:
            raise LookupError("the site has no models (models/index.json is empty)")
        runnable = [s for s in S.specs if can_segment(s)]
        if not runnable:
            raise LookupError("the site has no segmentation model (models/index.json)")
        S.default_model = find_model(runnable, None).id
        timings["model_index"] = now_ms() - t
        t = now_ms()
        backend = await model_backend(segmentation_spec(None), cfg.get("backend") or "auto")
        timings["model_session"] = now_ms() - t
        prompt_models = [s for s in S.specs if not can_segment(s)]
        return {"ok": True, "models": models(),
                "default_model": S.default_model, "backend": backend.name,
                "backend_probe": S.probes.get(S.default_model),
                "prompt_model": find_model(prompt_models, None).id if prompt_models else None,
                "prompt_models": [{"id": s.id, "name": S.raw[s.id].get("name", s.id)} for s in prompt_models],
                "ms": now_ms() - t0, "timings": timings}
    except Exception as exc:  # noqa: BLE001
        return error_result(exc)


def warm_up() -> dict:
    """Import the decoders, so the first image is not charged for it. The page calls
    this right after it is ready (while the user picks a file), not before."""
    t = now_ms()
    _warm_up()
    return {"ok": True, "ms": now_ms() - t}


def _warm_up() -> None:
    # The pipeline (scipy.ndimage, ~3 s to import in the page) and the decoders load
    # after the page is ready: start-up needs only onnxruntime-web and the model.
    import PIL.Image  # noqa: F401
    import tifffile  # noqa: F401

    from . import pipeline  # noqa: F401


def models(all: bool = False) -> list[dict]:  # noqa: A002
    """The model index as dicts; only the ones :func:`segment` runs unless ``all``."""
    return [spec_dict(s) for s in S.specs if all or can_segment(s)]


def _display_image(img: np.ndarray) -> np.ndarray:
    """8-bit grayscale rendition of the decoded image for the page's canvas."""
    from .export import _display

    return _display(img)


def describe(data: bytes, options: dict | None = None) -> dict:
    """What a file holds: :func:`piximi_py.io.describe_image` (header only)."""
    from .io import describe_image

    try:
        info = describe_image(bytes(data), (options or {}).get("filename"))
        return {"ok": True, **info}
    except Exception as exc:  # noqa: BLE001
        return error_result(exc)


async def segment(data: bytes, options: dict | None = None, progress=None) -> dict:
    """Segment one image file.

    ``options``: model, backend, filename, display (bool: add the 8-bit image),
    index / project (plane selection, :func:`piximi_py.io.read_image`),
    pixel_size (µm; default: from the file), measure (bool, default true),
    batch (bool: add this result's exports to the batch zip), diameter (nucleus
    diameter in px; absent or null: estimated) or diameter_um (µm, with the pixel size),
    augment (bool: average the model's probabilities over three scales,
    :func:`piximi_py.pipeline.predict_masks_averaged`), invert (bool: read the image, a
    whole-cell model's cytoplasm channel, inverted: dark cells on a lighter background,
    :func:`piximi_py.pipeline.inverted`);
    for a whole-cell model, channels (``{"cyto": 1, "nuclei": 0}``, a role absent or null: none,
    "auto": chosen from the file, :func:`piximi_py.channels.default_channels`, as are all
    of them when channels is null) and nuclei (a nuclei model id: segment
    the nuclear channel too and link each cell to its nucleus; where the nuclear channel
    was left to "auto" and the file has none, the cells are the cell model's alone and
    ``nuclei_skipped`` says why). The result then has
    ``channels`` (used), ``channel_count``, ``input_roles`` and, with nuclei, ``nuclei_count``
    and the measurements' ``nucleus_label`` / ``nuclei`` columns.
    The result's ``diameter`` is the one used, ``diameter_estimated`` says whether it was measured;
    ``suggested_model`` is the model the image calls for (a stained slide: the brightfield
    model), ``suggested_because`` says why (:func:`piximi_py.models.suggest_model`).
    """
    from . import io as pio
    from .channels import image_channels, left_to_file
    from .measure import nucleus_columns, regionprops_table, summarize
    from .pipeline import add_nuclei, check_flag, check_invert, nuclei_skipped, read_for_model, segment_async

    options = options or {}
    try:
        t_start = now_ms()
        spec = segmentation_spec(options.get("model"))
        # checked before the model runs, as the API does: a bad flag is refused at once
        split_by_nuclei = check_flag(options.get("split_by_nuclei", True), "split_by_nuclei")
        invert = check_invert(options.get("invert", False), spec)
        backend = await model_backend(spec, options.get("backend") or "auto", progress)
        data = bytes(data)
        name = options.get("filename")
        index, project = plane_options(options)
        info = await describe_decodable(data, name)
        t = now_ms()
        multi = reads_channels(spec)
        image, channels = read_for_model(data, spec, filename=name, index=index, project=project,
                                         channels=options.get("channels") or None, info=info)
        decode_ms = now_ms() - t
        suggested, why = _suggestion(image, data, name, spec, index, project, info)
        pixel_size = pio.check_pixel_size(options.get("pixel_size") or info.get("pixel_size"))
        diameter = resolve_diameter(options.get("diameter"), options.get("diameter_um"), pixel_size)
        seg = await segment_async(image, spec, backend, progress=progress, filename=name,
                                  diameter=diameter, channels=channels,
                                  augment=options.get("augment", False), invert=invert)
        link = options.get("nuclei") if multi else None
        # the page links by default: an image without a nuclear channel still gets its cells
        skipped = nuclei_skipped(seg, link, left_to_file(options.get("channels") or None, "nuclei"))
        if skipped:
            link = None
        if link:
            nuclei_spec = segmentation_spec(link)
            seg = await add_nuclei(seg, nuclei_spec, await model_backend(nuclei_spec, options.get("backend") or "auto",
                                                                    progress), progress=progress,
                                  split_by_nuclei=split_by_nuclei)
        labels = seg.labels
        timings = {k: float(v) for k, v in seg.timings.items()}
        timings["decode"] = decode_ms
        result = {
            "ok": True,
            "labels": typed_array(labels),
            "height": int(labels.shape[0]),
            "width": int(labels.shape[1]),
            "count": int(seg.count),
            "backend": backend.name,
            "model": spec.id,
            "info": info,
            "pixel_size": list(pixel_size) if pixel_size else None,
            "diameter": seg.diameter,
            "diameter_estimated": seg.diameter_estimated,
            "model_diameter": spec.diameter or None,
            "scale": seg.scale,
            "augmented": seg.augmented,
            "inverted": seg.inverted,
            "suggested_model": suggested.id, "suggested_because": why,
        }
        if multi:
            result.update(channels=seg.channels, channel_count=image_channels(image),
                          input_roles=list(spec.input_roles))
        if seg.nuclei is not None:
            result.update(nuclei_count=int(seg.nuclei.count), nuclei_labels=typed_array(seg.nuclei.labels))
        if skipped:
            result["nuclei_skipped"] = skipped
        if options.get("backend", "auto") == "auto" and spec.id in S.probes:
            result["backend_probe"] = S.probes[spec.id]
        # a whole-cell image is shown and prompted by its cytoplasm channel (measured by all of them)
        shown = image[..., seg.channels["cyto"]] if multi and image.ndim == 3 else image
        image_id = None if options.get("batch") else remember_image(shown)  # batch: not for prompts
        result["image_id"] = image_id
        S.last = {"labels": labels, "image": image, "name": name or "image", "model": spec.id,
                  "pixel_size": pixel_size, "table": None, "image_id": image_id, "diameter": seg.diameter,
                  "nuclei": seg.nuclei.labels if seg.nuclei is not None else None,
                  "nucleus_of": seg.nucleus_of}
        S.pending = None
        if options.get("measure", True):
            t = now_ms()
            table = regionprops_table(labels, intensity(image), pixel_size=pixel_size)
            if seg.nuclei is not None:
                table = nucleus_columns(table, labels, seg.nuclei.labels)
            timings["measure"] = now_ms() - t
            S.last["table"] = table
            result["measurements"] = table_js(table)
            result["summary"] = summarize(table)
        if options.get("display"):
            result["image"] = typed_array(_display_image(shown))
        if options.get("batch"):
            current_batch().add(name or "image", export_files(
                S.last, BATCH_EXPORTS + (("nuclei_labels",) if seg.nuclei is not None else ())))
        timings["total"] = float(seg.timings["total"]) + decode_ms
        result["timings"] = timings
        result["timings"]["worker"] = now_ms() - t_start
        return result
    except Exception as exc:  # noqa: BLE001
        return error_result(exc)


def _suggestion(image, data: bytes, name, spec, index, project, info: dict):
    """The model this image calls for and why (:func:`piximi_py.models.suggest_model`); a colour
    file read in grey for a fluorescence model is read again in colour to tell."""
    from . import io as pio
    from .models import suggest_model

    if reads_channels(spec):  # whole cells: the stain suggestion is about nuclei models
        return spec, ""
    if image.ndim == 2 and info.get("sizes", {}).get("S", 1) >= 3:
        image = pio.read_image_bytes(data, name, color=True, index=index, project=project)
    shipped = {m["id"] for m in S.index.get("models", [])}  # not the taught or loaded ones
    return suggest_model([s for s in S.specs if s.id in shipped], image)


def memory() -> dict:
    """Memory of the worker: the WebAssembly heap (it grows, never shrinks, so a
    leak shows as growth), bytes Python has allocated (``sys.getallocatedblocks``
    is blocks, not bytes: also given) and the number of live Python objects;
    also which onnxruntime-web build each execution provider was given
    (``ort_builds``, each build has a heap of its own) and the decoder warm-up
    runs of each loaded prompt model (``sam_warm_up_runs``, "model/runtime"), and how
    ``backend="auto"`` chose WebGPU or WASM for each model (``backend_probes``)."""
    import gc
    import sys

    from .backends.ortweb import loaded_builds

    out = {"python_blocks": sys.getallocatedblocks(), "python_objects": len(gc.get_objects()),
           "batch_zip_bytes": S.batch.buf.tell() if S.batch is not None else 0,
           "ort_builds": loaded_builds(),
           "sam_warm_up_runs": {f"{m}/{rt}": len(times) for (m, rt), times in S.sam_warm_up.items()},
           "backend_probes": dict(S.probes)}
    try:
        import pyodide_js

        out["wasm_heap_bytes"] = int(pyodide_js._module.HEAP8.length)
    except Exception:  # noqa: BLE001 - CPython
        out["wasm_heap_bytes"] = None
    return {"ok": True, **out}
