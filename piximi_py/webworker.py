"""Entry points the web page calls inside its PyScript worker (Pyodide only).

The page (``web/app.js``) talks to these through ``web/worker.py``:

* :func:`init`    - load onnxruntime-web, the model index and the default model;
* :func:`models`  - the model index as plain dicts;
* :func:`segment` - image file bytes -> instance labels, returned as JS objects
  (labels as a ``Uint16Array``/``Uint32Array``, never a Python list), with
  the measurements table and the image summary;
* :func:`describe` - what a file holds (axes, sizes, pixel size, channel names);
* :func:`export`  - the last result as a file (label TIFF, mask, overlay PNG,
  CSV, COCO JSON, ImageJ ROI zip, or all of them in one zip), as bytes;
* ``segment(..., batch=True)`` / :func:`batch_fail` / :func:`batch_zip` -
  collect the exports of many images (and the failures) into one zip;
* :func:`open_image` / :func:`prompt` / :func:`prompt_accept` /
  :func:`prompt_cancel` / :func:`refine` - promptable segmentation (SAM):
  a box or clicks on an image already decoded (by its ``image_id``) give one
  object mask; accepting it adds the object to the current labels; ``refine``
  re-segments every current object from its bounding box.

Only models the ``segment`` pipeline runs are offered by :func:`models`
(``segment: true``); the others (e.g. promptable SAM) keep their ``task`` and
are listed with ``models(all=True)``.

Every entry point returns ``{"ok": True, ...}`` or ``{"ok": False, "error":
{"type", "message"}}`` with a message a person can act on; the page turns the
latter into a rejected ``Error``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import traceback

import numpy as np

from .backends.ortweb import (BACKENDS, BackendUnavailable, OrtWebBackend, float16_on_webgpu, load_ort,
                              webgpu_available)
from .diameter import check_diameter, resolve_diameter
from .io import ImageReadError
from .models import can_segment, computes_in_float16, find_model, load_model_index, reads_channels, reads_color

__all__ = ["init", "warm_up", "models", "segment", "describe", "export", "batch_fail", "batch_zip", "memory",
           "batch_clear", "open_image", "prompt", "prompt_accept", "prompt_cancel", "refine"]

#: Tasks that are not an image -> instance labels model (they need prompts).

#: Downloads at least this large report their progress (a model used for the first time).
DOWNLOAD_PROGRESS_BYTES = 1 << 20


class Cancelled(Exception):
    """The page asked to stop (its progress callback returned true)."""


class DownloadError(OSError):
    """A file of the site could not be fetched (offline and never cached, or a server error)."""


#: Errors whose message is shown to the user as is (no traceback).
USER_ERRORS = (ImageReadError, BackendUnavailable, ValueError, KeyError, LookupError, Cancelled,
               DownloadError)


class _State:
    base = ""
    cfg: dict = {}
    specs: list = []
    default_model: str | None = None
    model_bytes: dict = {}
    sessions: dict = {}
    last: dict = {}      # the last segmentation: labels, image, table, name, pixel size, image_id
    batch = None         # _Batch: the zip of a batch download, written as results come
    raw: dict = {}       # model id -> its models/index.json entry as parsed JSON
    index: dict = {}     # models/index.json as parsed JSON
    images: dict = {}    # image_id -> decoded plane (the last few), for prompts
    sam: dict = {}       # (model id, runtime ("wasm", "webgpu")) -> SamPredictor
    sam_failed: set = set()  # (model id, runtime) whose sessions could not be created (auto skips them)
    sam_warm_up: dict = {}   # (model id, runtime) -> decoder warm-up run times (ms), see _warm_up_decoder
    pending = None       # the last prompt's mask, waiting for prompt_accept
    edit_history = None  # undo / redo of the last segmentation's edits (piximi_py.webedit)
    corrected: dict = {}  # image name -> its image and corrected labels, to teach (piximi_py.webteach)
    probes: dict = {}    # model id -> how "auto" chose WebGPU or WASM (piximi_py.backends.probe)
    taught = 0           # models taught so far (their ids count up)


S = _State()


def _js():
    import js

    return js


def _to_js(obj):
    from pyodide.ffi import to_js

    return to_js(obj, dict_converter=_js().Object.fromEntries)


def _now() -> float:
    return time.perf_counter() * 1000.0


def _spec_dict(spec) -> dict:
    d = dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) else dict(vars(spec))
    d = {k: v for k, v in d.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))}
    for k, v in S.raw.get(spec.id, {}).items():  # fields the dataclass does not keep
        d.setdefault(k, v)                         # (latency_ms_512, files, runtimes, ...)
    d["segment"] = can_segment(spec)
    d["default"] = spec.id == S.default_model if d["segment"] else bool(spec.default)
    return d


def _error(exc: BaseException) -> dict:
    if isinstance(exc, USER_ERRORS):
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        etype = type(exc).__name__
    else:
        traceback.print_exc()  # goes to the worker console for developers
        msg = f"internal error ({type(exc).__name__}: {exc})"
        etype = "InternalError"
    return {"ok": False, "error": {"type": etype, "message": str(msg)}}


async def _fetch_bytes(url: str, progress=None) -> bytes:
    """The body of a same-origin file; with ``progress``, ``progress("download", bytes, total)``
    as it arrives (files not cached yet, e.g. a model used for the first time)."""
    js = _js()
    name = url[len(S.base):] if url.startswith(S.base) else url
    try:
        resp = await js.fetch(url)
    except Exception:  # noqa: BLE001 - a JS TypeError: no network
        raise DownloadError(f"could not load {name}: no network, and it was never used in this browser "
                            "(while online, 'Make everything available offline' keeps every model)") from None
    if not resp.ok:
        raise DownloadError(f"could not load {name}: HTTP {resp.status}")
    total = int(resp.headers.get("content-length") or 0)
    if progress is None or not resp.body or total < DOWNLOAD_PROGRESS_BYTES:
        return (await resp.arrayBuffer()).to_bytes()
    reader, parts, done = resp.body.getReader(), [], 0
    progress("download", 0, total)
    while True:
        chunk = await reader.read()
        if chunk.done:
            break
        parts.append(chunk.value.to_bytes())
        done += len(parts[-1])
        progress("download", min(done, total), total)
    return b"".join(parts)


def _spec(model_id: str | None):
    spec = find_model(S.specs, model_id or S.default_model)
    if not can_segment(spec):
        raise ValueError(f"model {spec.id!r} ({spec.task}) needs prompts; it cannot segment "
                         "a whole image")
    return spec


async def _model_bytes(spec, progress=None) -> bytes:
    if spec.id not in S.model_bytes:
        data = await _fetch_bytes(S.base + "models/" + spec.file, progress)
        want = getattr(spec, "sha256", None)
        if want and hashlib.sha256(data).hexdigest() != want:
            raise DownloadError(f"model file {spec.file} is corrupt (sha256 mismatch); reload the page")
        S.model_bytes[spec.id] = data
    return S.model_bytes[spec.id]


async def _backend(spec, backend: str, progress=None) -> OrtWebBackend:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if not spec.webgpu and backend != "wasm":
        backend = "wasm"  # the result's ``backend`` says so
    key = (spec.id, backend)
    if key not in S.sessions:
        data, float16 = await _model_bytes(spec, progress), computes_in_float16(spec.file)
        if backend == "auto" and S.cfg.get("probe_backend", True) and await webgpu_available() \
                and not (float16 and not await float16_on_webgpu()):
            from .backends.probe import choose_backend  # WebGPU or WASM, by timing both once

            S.sessions[key], S.probes[spec.id] = await choose_backend(data, spec.channels,
                                                                      spec.sha256 or spec.file, S.base)
        else:
            S.sessions[key] = await OrtWebBackend.create(data, backend, float16=float16)
        if backend == "auto":  # remember the concrete one as well
            S.sessions.setdefault((spec.id, S.sessions[key].name), S.sessions[key])
    return S.sessions[key]


async def init(cfg: dict) -> dict:
    """cfg: base (absolute site URL ending in /), ort_modules ({"wasm": URL, "webgpu": URL}), ort_wasm_paths,
    models_index (relative URLs), backend (default "auto"), num_threads (optional), probe_backend
    (default true: "auto" times WebGPU and WASM once per model and GPU, :mod:`piximi_py.backends.probe`)."""
    try:
        t0 = _now()
        timings = {}
        S.cfg = cfg
        S.base = cfg["base"]
        await load_ort({k: S.base + u for k, u in cfg["ort_modules"].items()}, S.base + cfg["ort_wasm_paths"],
                       num_threads=cfg.get("num_threads"))
        timings["onnxruntime"] = _now() - t0
        t = _now()
        text = (await _fetch_bytes(S.base + cfg["models_index"])).decode("utf-8")
        S.specs = list(load_model_index(text))
        S.index = json.loads(text)
        S.raw = {m["id"]: m for m in S.index.get("models", [])}
        if not S.specs:
            raise LookupError("the site has no models (models/index.json is empty)")
        runnable = [s for s in S.specs if can_segment(s)]
        if not runnable:
            raise LookupError("the site has no segmentation model (models/index.json)")
        S.default_model = find_model(runnable, None).id
        timings["model_index"] = _now() - t
        t = _now()
        backend = await _backend(_spec(None), cfg.get("backend") or "auto")
        timings["model_session"] = _now() - t
        prompt_models = [s for s in S.specs if not can_segment(s)]
        return {"ok": True, "models": models(),
                "default_model": S.default_model, "backend": backend.name,
                "backend_probe": S.probes.get(S.default_model),
                "prompt_model": find_model(prompt_models, None).id if prompt_models else None,
                "prompt_models": [{"id": s.id, "name": S.raw[s.id].get("name", s.id)} for s in prompt_models],
                "ms": _now() - t0, "timings": timings}
    except Exception as exc:  # noqa: BLE001
        return _error(exc)


def warm_up() -> dict:
    """Import the decoders, so the first image is not charged for it. The page calls
    this right after it is ready (while the user picks a file), not before."""
    t = _now()
    _warm_up()
    return {"ok": True, "ms": _now() - t}


def _warm_up() -> None:
    # The pipeline (scipy.ndimage, ~3 s to import in the page) and the decoders load
    # after the page is ready: start-up needs only onnxruntime-web and the model.
    import PIL.Image  # noqa: F401
    import tifffile  # noqa: F401

    from . import pipeline  # noqa: F401


def models(all: bool = False) -> list[dict]:  # noqa: A002
    """The model index as dicts; only the ones :func:`segment` runs unless ``all``."""
    return [_spec_dict(s) for s in S.specs if all or can_segment(s)]


def _display_image(img: np.ndarray) -> np.ndarray:
    """8-bit grayscale rendition of the decoded image for the page's canvas."""
    from .export import _display

    return _display(img)


def _typed(arr: np.ndarray):
    js = _js()
    arr = np.ascontiguousarray(arr)
    ctor = {np.dtype(np.uint8): js.Uint8Array, np.dtype(np.uint16): js.Uint16Array,
            np.dtype(np.uint32): js.Uint32Array, np.dtype(np.int32): js.Int32Array,
            np.dtype(np.float32): js.Float32Array, np.dtype(np.float64): js.Float64Array}[arr.dtype]
    out = ctor.new(arr.size)
    out.assign(arr)  # one memcpy
    return out


def _table_js(table: dict) -> dict:
    """Columns as typed arrays (Float64Array; ids and areas exactly representable)."""
    return {k: _typed(np.asarray(v, np.float64)) for k, v in table.items()}


def describe(data: bytes, options: dict | None = None) -> dict:
    """What a file holds: :func:`piximi_py.io.describe_image` (header only)."""
    from .io import describe_image

    try:
        info = describe_image(bytes(data), (options or {}).get("filename"))
        return {"ok": True, **info}
    except Exception as exc:  # noqa: BLE001
        return _error(exc)


def _plane_options(options: dict) -> tuple[dict | None, dict | None]:
    index = {str(k): int(v) for k, v in (options.get("index") or {}).items()}
    project = {str(k): str(v) for k, v in (options.get("project") or {}).items()}
    return index or None, project or None


async def _describe_decodable(data: bytes, name: str | None) -> dict:
    """:func:`piximi_py.io.describe_image`, after importing the decoder its compression
    needs (a JavaScript module of the site, fetched on first use)."""
    from . import codecs
    from .io import describe_image

    info = describe_image(data, name)
    if codecs.needs_zstd_decoder(info.get("compression")):
        module = await _import_module(S.base + S.cfg["codec_modules"]["zstd"])
        codecs.set_zstd_decoder(lambda b: module.decompress(_to_js(b)).to_bytes())
    return info


async def _import_module(url: str):
    return await _js().Function.new("u", "return import(u)")(url)


def _nuclear_channel_auto(options: dict) -> bool:
    """Whether a segment request left the nuclear channel to the file (no channels, or "auto")."""
    channels = options.get("channels")
    return not channels or channels.get("nuclei") == "auto"


async def segment(data: bytes, options: dict | None = None, progress=None) -> dict:
    """Segment one image file.

    ``options``: model, backend, filename, display (bool: add the 8-bit image),
    index / project (plane selection, :func:`piximi_py.io.read_image`),
    pixel_size (µm; default: from the file), measure (bool, default true),
    batch (bool: add this result's exports to the batch zip), diameter (nucleus
    diameter in px; absent or null: estimated) or diameter_um (µm, with the pixel size),
    augment (bool: average the model's probabilities over three scales,
    :func:`piximi_py.pipeline.predict_masks_averaged`);
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
    from .channels import default_channels, image_channels, resolve_channels
    from .measure import nucleus_columns, regionprops_table, summarize
    from .pipeline import NO_NUCLEAR_CHANNEL, add_nuclei, check_flag, segment_async

    options = options or {}
    try:
        t_start = _now()
        spec = _spec(options.get("model"))
        # checked before the model runs, as the API does: a bad flag is refused at once
        split_by_nuclei = check_flag(options.get("split_by_nuclei", True), "split_by_nuclei")
        backend = await _backend(spec, options.get("backend") or "auto", progress)
        data = bytes(data)
        name = options.get("filename")
        index, project = _plane_options(options)
        info = await _describe_decodable(data, name)
        t = _now()
        multi = reads_channels(spec)
        if multi and index:  # the roles pick channels: a chosen C plane does not apply
            index.pop("C", None)
        image = pio.read_image_bytes(data, name, color=reads_color(spec), index=index,
                                     project=project, keep_channels=multi)
        decode_ms = _now() - t
        suggested, why = _suggestion(image, data, name, spec, index, project, info)
        pixel_size = options.get("pixel_size") or info.get("pixel_size")
        diameter = resolve_diameter(options.get("diameter"), options.get("diameter_um"), pixel_size)
        channels = options.get("channels") or None
        if multi:
            names = info.get("channel_names")
            if channels:  # a role "auto" takes the file's default for it
                auto = default_channels(image, spec.input_roles, names)
                channels = {r: auto.get(r) if v == "auto" else v for r, v in channels.items()}
            channels = resolve_channels(image, spec.input_roles, channels, names)
        seg = await segment_async(image, spec, backend, progress=progress, filename=name,
                                  diameter=diameter, channels=channels if multi else None,
                                  augment=options.get("augment", False))
        link, skipped = options.get("nuclei") if multi else None, None
        if link and channels.get("nuclei") is None and _nuclear_channel_auto(options):
            # the page links by default: an image without a nuclear channel still gets its cells
            link, skipped = None, NO_NUCLEAR_CHANNEL
        if link:
            nuclei_spec = _spec(link)
            seg = await add_nuclei(seg, nuclei_spec, await _backend(nuclei_spec, options.get("backend") or "auto",
                                                                    progress), progress=progress,
                                  split_by_nuclei=split_by_nuclei)
        labels = seg.labels
        timings = {k: float(v) for k, v in seg.timings.items()}
        timings["decode"] = decode_ms
        result = {
            "ok": True,
            "labels": _typed(labels),
            "height": int(labels.shape[0]),
            "width": int(labels.shape[1]),
            "count": int(seg.count),
            "backend": backend.name,
            "model": spec.id,
            "info": info,
            "pixel_size": pixel_size,
            "diameter": seg.diameter,
            "diameter_estimated": seg.diameter_estimated,
            "model_diameter": spec.diameter or None,
            "scale": seg.scale,
            "augmented": seg.augmented,
            "suggested_model": suggested.id, "suggested_because": why,
        }
        if multi:
            result.update(channels=seg.channels, channel_count=image_channels(image),
                          input_roles=list(spec.input_roles))
        if seg.nuclei is not None:
            result.update(nuclei_count=int(seg.nuclei.count), nuclei_labels=_typed(seg.nuclei.labels))
        if skipped:
            result["nuclei_skipped"] = skipped
        if options.get("backend", "auto") == "auto" and spec.id in S.probes:
            result["backend_probe"] = S.probes[spec.id]
        # a whole-cell image is shown and prompted by its cytoplasm channel (measured by all of them)
        shown = image[..., seg.channels["cyto"]] if multi and image.ndim == 3 else image
        image_id = None if options.get("batch") else _remember(shown)  # batch: not for prompts
        result["image_id"] = image_id
        S.last = {"labels": labels, "image": image, "name": name or "image", "model": spec.id,
                  "pixel_size": pixel_size, "table": None, "image_id": image_id, "diameter": seg.diameter,
                  "nuclei": seg.nuclei.labels if seg.nuclei is not None else None,
                  "nucleus_of": seg.nucleus_of}
        S.pending = None
        if options.get("measure", True):
            t = _now()
            table = regionprops_table(labels, _intensity(image), pixel_size=pixel_size)
            if seg.nuclei is not None:
                table = nucleus_columns(table, labels, seg.nuclei.labels)
            timings["measure"] = _now() - t
            S.last["table"] = table
            result["measurements"] = _table_js(table)
            result["summary"] = summarize(table)
        if options.get("display"):
            result["image"] = _typed(_display_image(shown))
        if options.get("batch"):
            _batch().add(name or "image", _exports(
                S.last, BATCH_EXPORTS + (("nuclei_labels",) if seg.nuclei is not None else ())))
        timings["total"] = float(seg.timings["total"]) + decode_ms
        result["timings"] = timings
        result["timings"]["worker"] = _now() - t_start
        return result
    except Exception as exc:  # noqa: BLE001
        return _error(exc)


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


def _intensity(image: np.ndarray) -> np.ndarray:
    return image[..., :3] if image.ndim == 3 else image


def _stem(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".jpeg", ".jpg", ".bmp"):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


#: kind -> (file name suffix, MIME type)
EXPORTS = {
    "labels": ("_labels.tif", "image/tiff"),
    "mask": ("_mask.tif", "image/tiff"),
    "overlay": ("_overlay.png", "image/png"),
    "csv": ("_measurements.csv", "text/csv"),
    "coco": ("_coco.json", "application/json"),
    "coco_polygon": ("_coco_polygons.json", "application/json"),
    "rois": ("_rois.zip", "application/zip"),
    "nuclei_labels": ("_nuclei_labels.tif", "image/tiff"),  # whole cells with their nuclei only
    "all": ("_results.zip", "application/zip"),
}


def _export_one(last: dict, kind: str, options: dict | None = None) -> bytes:
    from . import export as ex
    from .measure import nucleus_columns, regionprops_table

    options = options or {}
    labels = last["labels"]
    nuclei = last.get("nuclei")
    linked = {"nuclei": nuclei, "nucleus_of": last.get("nucleus_of")} if nuclei is not None else {}
    if kind == "nuclei_labels":
        if nuclei is None:
            raise ValueError("this result has no nuclei: segment whole cells with their nuclei first")
        return ex.labels_tiff(nuclei, pixel_size=last.get("pixel_size"))
    if kind == "labels":
        return ex.labels_tiff(labels, pixel_size=last.get("pixel_size"))
    if kind == "mask":
        return ex.mask_tiff(labels, pixel_size=last.get("pixel_size"))
    if kind == "overlay":
        return ex.overlay_png(last.get("image"), labels, mode=options.get("mode", "outline"),
                              opacity=float(options.get("opacity", 0.4)))
    if kind == "csv":
        table = last.get("table")
        if table is None:
            table = regionprops_table(labels, _intensity(last["image"]),
                                      pixel_size=last.get("pixel_size"))
            if nuclei is not None:
                table = nucleus_columns(table, labels, nuclei)
        return ex.measurements_csv(table).encode("utf-8")
    if kind in ("coco", "coco_polygon"):
        return ex.coco_json_bytes(labels, file_name=last.get("name") or "image",
                                  encoding="polygon" if kind == "coco_polygon" else "rle",
                                  **({"category": "cell", **linked} if linked else {}))
    if kind == "rois":
        return ex.roi_zip(labels, **linked)
    raise ValueError(f"unknown export {kind!r}: use one of {', '.join(EXPORTS)}")


def _exports(last: dict, kinds, options: dict | None = None) -> dict:
    return {kind: _export_one(last, kind, options) for kind in kinds}


def _zip(files: dict) -> bytes:
    import io as _io
    import zipfile

    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def export(kind: str, options: dict | None = None) -> dict:
    """The last segmentation as a file: ``{"ok", "data" (Uint8Array), "name", "mime"}``.

    ``kind``: one of :data:`EXPORTS`; ``options``: mode/opacity for the overlay.
    """
    try:
        if not S.last:
            raise ValueError("nothing to export yet: segment an image first")
        if kind not in EXPORTS:
            raise ValueError(f"unknown export {kind!r}: use one of {', '.join(EXPORTS)}")
        stem = _stem(S.last["name"])
        if kind == "all":
            kinds = [k for k in EXPORTS if k != "all" and (k != "nuclei_labels" or S.last.get("nuclei") is not None)]
            data = _zip({stem + EXPORTS[k][0]: b for k, b in _exports(S.last, kinds, options).items()})
        else:
            data = _export_one(S.last, kind, options)
        return {"ok": True, "data": _typed(np.frombuffer(data, np.uint8)),
                "name": stem + EXPORTS[kind][0], "mime": EXPORTS[kind][1]}
    except Exception as exc:  # noqa: BLE001
        return _error(exc)


#: What a batch zip holds per image.
BATCH_EXPORTS = ("labels", "csv", "rois", "coco")


class _Batch:
    """A zip being written (deflated) as the images of a batch are segmented."""

    def __init__(self):
        import io as _io
        import zipfile

        self.buf = _io.BytesIO()
        self.zf = zipfile.ZipFile(self.buf, "w", zipfile.ZIP_DEFLATED)
        self.rows = []
        self.names = set()

    def _unique(self, name: str) -> str:
        stem, k = _stem(name), 1
        while stem in self.names:
            k += 1
            stem = f"{_stem(name)}_{k}"
        self.names.add(stem)
        return stem

    def add(self, name: str, exports: dict) -> None:
        stem = self._unique(name)
        for kind, data in exports.items():
            self.zf.writestr(stem + EXPORTS[kind][0], data)
        self.rows.append((name, "segmented", ""))

    def fail(self, name: str, message: str) -> None:
        self.rows.append((name, "failed", message))

    def close(self) -> bytes:
        import csv
        import io as _io

        text = _io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["image", "status", "error"])
        writer.writerows(self.rows)
        self.zf.writestr("batch_report.csv", text.getvalue())
        self.zf.close()
        return self.buf.getvalue()


def _batch() -> _Batch:
    if S.batch is None:
        S.batch = _Batch()
    return S.batch


def batch_fail(name: str, message: str) -> dict:
    """Record a failed file of the batch (listed in the zip's ``batch_report.csv``)."""
    _batch().fail(str(name), str(message))
    return {"ok": True}


def batch_zip() -> dict:
    """All batch results in one zip (``NAME_labels.tif``, ... and ``batch_report.csv``);
    the batch is then cleared."""
    try:
        batch, S.batch = _batch(), None
        n = len(batch.rows)
        data = batch.close()
        return {"ok": True, "data": _typed(np.frombuffer(data, np.uint8)),
                "name": "piximi_batch.zip", "mime": "application/zip", "images": n}
    except Exception as exc:  # noqa: BLE001
        return _error(exc)


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


def batch_clear() -> dict:
    S.batch = None
    return {"ok": True}


# ------------------------------------------------------------ prompts (SAM)
#: Decoded images kept for prompts (the last ones segmented or opened), by image id:
#: at most this many, and beyond the newest one at most MAX_IMAGE_BYTES in all.
MAX_IMAGES = 4
MAX_IMAGE_BYTES = 256 * 2**20
#: Window embeddings kept per (prompt model, runtime): 4 MB each for sam, 1 MB for sam_fast.
EMBEDDING_CACHE = 16
# WASM decoder warm-up when a prompt model loads (see _warm_up_decoder)
DECODER_WARM_UP_RUNS = 24
DECODER_WARM_UP_MS = 2500.0


def _remember(image: np.ndarray) -> str:
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


async def _sam_file(spec, role: str, progress=None) -> bytes:
    info = spec.files[role]
    data = await _fetch_bytes(S.base + "models/" + info["file"], progress)
    if info.get("sha256") and hashlib.sha256(data).hexdigest() != info["sha256"]:
        raise DownloadError(f"model file {info['file']} is corrupt (sha256 mismatch); reload the page")
    return data


async def _sam(backend: str, model_id: str | None = None, progress=None):
    """The predictor of promptable model ``model_id`` (default: the index's default
    prompt model) on ``backend`` ("auto", "webgpu", "wasm"), made once.

    Each runtime uses the encoder/decoder files its ``runtimes`` entry names
    (e.g. int8 on WASM, fp16 on WebGPU). On WASM the decoder is warmed up
    (:func:`_warm_up_decoder`); ``progress("sam_model", 0|1, 1)`` brackets the loading.
    """
    from .backends.ortweb import FLOAT16_UNAVAILABLE
    from .sam import EmbeddingCache, SamPredictor, sam_spec_from_index

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
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
            enc, dec = [await OrtWebBackend.create(await _sam_file(spec, roles[part], progress), runtime,
                                                   float16=float16[part])
                        for part in ("encoder", "decoder")]
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
    times, t0 = [], _now()
    while len(times) < runs and _now() - t0 < budget_ms:
        t = _now()
        await predictor._decode(emb, coords, labels)
        times.append(_now() - t)
    return times


def _mask_js(mask: np.ndarray) -> tuple[dict, dict]:
    """A full-size bool mask as ``{bbox, width, height, area, bits}`` (bits: the bbox
    crop, row-major, packed 8 pixels a byte, first pixel in the high bit), and the
    crop for :func:`prompt_accept`."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return ({"bbox": None, "width": 0, "height": 0, "area": 0,
                 "bits": _typed(np.zeros(0, np.uint8))}, {"bbox": None, "crop": None})
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    crop = np.ascontiguousarray(mask[y0:y1 + 1, x0:x1 + 1])
    bbox = [x0, y0, x1, y1]
    return ({"bbox": bbox, "width": x1 - x0 + 1, "height": y1 - y0 + 1, "area": int(crop.sum()),
             "bits": _typed(np.packbits(crop, axis=None))}, {"bbox": bbox, "crop": crop})


async def open_image(data: bytes, options: dict | None = None) -> dict:
    """Decode a file for prompts without segmenting it: ``{"ok", "image_id", "width", "height"}``.

    ``options``: filename, index / project (plane selection).
    """
    from . import io as pio

    options = options or {}
    try:
        index, project = _plane_options(options)
        data = bytes(data)
        await _describe_decodable(data, options.get("filename"))
        image = pio.read_image_bytes(data, options.get("filename"), color=True, index=index,
                                     project=project)
        return {"ok": True, "image_id": _remember(image), "width": int(image.shape[1]),
                "height": int(image.shape[0])}
    except Exception as exc:  # noqa: BLE001
        return _error(exc)


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
        t0 = _now()
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
                   "total_ms": _now() - t0}
        for key in set(S.sam) - loaded:   # the model was loaded for this prompt
            timings["warm_up_ms"] = S.sam_warm_up.get(key, [])
        return {"ok": True, "image_id": image_id, "mask": out, "iou": float(iou),
                "backend": predictor.encoder.name, "cached": "encoder" not in t, "timings": timings}
    except Exception as exc:  # noqa: BLE001
        return _error(exc)


def prompt_cancel() -> dict:
    """Forget the last prompt's mask."""
    S.pending = None
    return {"ok": True}


def _measured(labels: np.ndarray) -> dict:
    """Store new labels as the current result; their measurements as JS."""
    from .measure import link_nuclei, nucleus_columns, regionprops_table, summarize

    table = regionprops_table(labels, _intensity(S.last["image"]), pixel_size=S.last.get("pixel_size"))
    if S.last.get("nuclei") is not None:  # edited cells keep their links to the nuclei
        table = nucleus_columns(table, labels, S.last["nuclei"])
        S.last["nucleus_of"] = link_nuclei(labels, S.last["nuclei"])[0]
    S.last["labels"], S.last["table"] = labels, table
    return {"count": int(len(table["label"])), "measurements": _table_js(table),
            "summary": summarize(table)}


def prompt_accept(options: dict | None = None) -> dict:
    """Add the last prompt's mask to the current labels as a new object (a new label id).

    The new object takes every pixel of its mask; an existing object that it
    covers by at least :data:`piximi_py.edit.REPLACE_FRACTION` of its area is replaced (removed
    entirely). Returns ``{"ok", "label", "removed", "patch": {bbox, labels}, "count",
    "measurements", "summary"}`` where ``patch`` is the changed rectangle of the
    labels; ``labels`` (all of them) instead when their dtype had to grow to uint32.
    """
    from .edit import add_object
    from .webedit import commit

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
        return _error(exc)


async def refine(image_id: str | None = None, options: dict | None = None, progress=None) -> dict:
    """"Refine all": re-segment every object of the current labels with SAM, each
    prompted by its bounding box (:meth:`piximi_py.sam.SamPredictor.segment_boxes`).

    Objects keep their order (ids become 1..K); one whose SAM mask is empty, or
    whose predicted IoU is below ``options["min_iou"]`` (default 0), keeps its
    old pixels where no other object took them. ``progress("embedding", k, n)``
    is called before each encoder run; when it returns ``True`` the refinement
    stops (:class:`Cancelled`) and the labels stay as they were. Returns the new labels like
    :func:`segment` (``labels``, ``count``, ``measurements``, ``summary``) and
    ``timings`` (embedding_ms, decoder_ms, total_ms), ``windows`` (encoder runs).
    """
    from .sam import boxes_from_labels, prompt_window

    options = options or {}
    try:
        t0 = _now()
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
        t = _now()
        try:
            new, _ = await predictor.segment_boxes(boxes, min_iou=float(options.get("min_iou", 0.0)))
        finally:
            predictor.encoder.on_run = None
        total_sam = _now() - t
        if progress is not None:
            progress("embedding", len(windows), len(windows))
        present = np.zeros(len(ids) + 1, bool)
        present[np.unique(new)] = True
        for k in np.flatnonzero(~present[1:]):
            new[(labels == ids[k]) & (new == 0)] = k + 1
        new = new.astype(labels.dtype if len(ids) <= np.iinfo(labels.dtype).max else np.uint32)
        S.pending = None
        from .webedit import commit

        out = {**commit(labels, new, whole=True), "height": int(new.shape[0]),   # undoable like any edit
               "width": int(new.shape[1]), "image_id": image_id, "backend": predictor.encoder.name,
               "windows": runs[0], "objects": int(len(ids))}
        out["timings"] = {"sam_ms": total_sam, "total_ms": _now() - t0}
        return out
    except Exception as exc:  # noqa: BLE001
        return _error(exc)
