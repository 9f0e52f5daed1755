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
  collect the exports of many images (and the failures) into one zip.

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
import time
import traceback

import numpy as np

from .backends.ortweb import BACKENDS, BackendUnavailable, OrtWebBackend, load_ort
from .io import ImageReadError
from .models import can_segment, find_model, load_model_index
from .pipeline import segment_async

__all__ = ["init", "models", "segment", "describe", "export", "batch_fail", "batch_zip", "memory",
           "batch_clear"]

#: Tasks that are not an image -> instance labels model (they need prompts).

#: Errors whose message is shown to the user as is (no traceback).
USER_ERRORS = (ImageReadError, BackendUnavailable, ValueError, KeyError, LookupError)


class _State:
    base = ""
    cfg: dict = {}
    ort = None
    specs: list = []
    default_model: str | None = None
    model_bytes: dict = {}
    sessions: dict = {}
    last: dict = {}      # the last segmentation: labels, image, table, name, pixel size
    batch = None         # _Batch: the zip of a batch download, written as results come


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
    d["default"] = spec.id == S.default_model
    d["segment"] = can_segment(spec)
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


async def _fetch_bytes(url: str) -> bytes:
    js = _js()
    resp = await js.fetch(url)
    if not resp.ok:
        raise OSError(f"could not load {url}: HTTP {resp.status}")
    return (await resp.arrayBuffer()).to_bytes()


def _spec(model_id: str | None):
    spec = find_model(S.specs, model_id or S.default_model)
    if not can_segment(spec):
        raise ValueError(f"model {spec.id!r} ({spec.task}) needs prompts; it cannot segment "
                         "a whole image")
    return spec


async def _model_bytes(spec) -> bytes:
    if spec.id not in S.model_bytes:
        data = await _fetch_bytes(S.base + "models/" + spec.file)
        want = getattr(spec, "sha256", None)
        if want and hashlib.sha256(data).hexdigest() != want:
            raise OSError(f"model file {spec.file} is corrupt (sha256 mismatch); reload the page")
        S.model_bytes[spec.id] = data
    return S.model_bytes[spec.id]


async def _backend(spec, backend: str) -> OrtWebBackend:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    key = (spec.id, backend)
    if key not in S.sessions:
        S.sessions[key] = await OrtWebBackend.create(await _model_bytes(spec), backend, ort=S.ort)
        if backend == "auto":  # remember the concrete one as well
            S.sessions.setdefault((spec.id, S.sessions[key].name), S.sessions[key])
    return S.sessions[key]


async def init(cfg: dict) -> dict:
    """cfg: base (absolute site URL ending in /), ort_module, ort_wasm_paths,
    models_index (relative URLs), backend (default "auto"), num_threads (optional)."""
    try:
        t0 = _now()
        S.cfg = cfg
        S.base = cfg["base"]
        S.ort = await load_ort(S.base + cfg["ort_module"], S.base + cfg["ort_wasm_paths"],
                               num_threads=cfg.get("num_threads"))
        text = (await _fetch_bytes(S.base + cfg["models_index"])).decode("utf-8")
        S.specs = list(load_model_index(text))
        if not S.specs:
            raise LookupError("the site has no models (models/index.json is empty)")
        runnable = [s for s in S.specs if can_segment(s)]
        if not runnable:
            raise LookupError("the site has no segmentation model (models/index.json)")
        S.default_model = find_model(runnable, None).id
        backend = await _backend(_spec(None), cfg.get("backend") or "auto")
        _warm_up()
        return {"ok": True, "models": models(),
                "default_model": S.default_model, "backend": backend.name,
                "ms": _now() - t0}
    except Exception as exc:  # noqa: BLE001
        return _error(exc)


def _warm_up() -> None:
    """Import the decoders now, so the first image is not charged for it."""
    import PIL.Image  # noqa: F401
    import scipy.ndimage  # noqa: F401
    import tifffile  # noqa: F401


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


async def segment(data: bytes, options: dict | None = None, progress=None) -> dict:
    """Segment one image file.

    ``options``: model, backend, filename, display (bool: add the 8-bit image),
    index / project (plane selection, :func:`piximi_py.io.read_image`),
    pixel_size (µm; default: from the file), measure (bool, default true),
    batch (bool: add this result's exports to the batch zip).
    """
    from . import io as pio
    from .measure import regionprops_table, summarize

    options = options or {}
    try:
        t_start = _now()
        spec = _spec(options.get("model"))
        backend = await _backend(spec, options.get("backend") or "auto")
        data = bytes(data)
        name = options.get("filename")
        index, project = _plane_options(options)
        info = pio.describe_image(data, name)
        t = _now()
        image = pio.read_image_bytes(data, name, color=spec.channels == 3, index=index,
                                     project=project)
        decode_ms = _now() - t
        seg = await segment_async(image, spec, backend, progress=progress, filename=name)
        labels = seg.labels
        timings = {k: float(v) for k, v in seg.timings.items()}
        timings["decode"] = decode_ms
        pixel_size = options.get("pixel_size") or info.get("pixel_size")
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
        }
        S.last = {"labels": labels, "image": image, "name": name or "image",
                  "pixel_size": pixel_size, "table": None}
        if options.get("measure", True):
            t = _now()
            table = regionprops_table(labels, _intensity(image), pixel_size=pixel_size)
            timings["measure"] = _now() - t
            S.last["table"] = table
            result["measurements"] = _table_js(table)
            result["summary"] = summarize(table)
        if options.get("display"):
            result["image"] = _typed(_display_image(image))
        if options.get("batch"):
            _batch().add(name or "image", _exports(S.last, BATCH_EXPORTS))
        timings["total"] = float(seg.timings["total"]) + decode_ms
        result["timings"] = timings
        result["timings"]["worker"] = _now() - t_start
        return result
    except Exception as exc:  # noqa: BLE001
        return _error(exc)


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
    "all": ("_results.zip", "application/zip"),
}


def _export_one(last: dict, kind: str, options: dict | None = None) -> bytes:
    from . import export as ex
    from .measure import regionprops_table

    options = options or {}
    labels = last["labels"]
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
        return ex.measurements_csv(table).encode("utf-8")
    if kind in ("coco", "coco_polygon"):
        return ex.coco_json_bytes(labels, file_name=last.get("name") or "image",
                                  encoding="polygon" if kind == "coco_polygon" else "rle")
    if kind == "rois":
        return ex.roi_zip(labels)
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
            kinds = [k for k in EXPORTS if k != "all"]
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
    is blocks, not bytes: also given) and the number of live Python objects."""
    import gc
    import sys

    out = {"python_blocks": sys.getallocatedblocks(), "python_objects": len(gc.get_objects()),
           "batch_zip_bytes": S.batch.buf.tell() if S.batch is not None else 0}
    try:
        import pyodide_js

        out["wasm_heap_bytes"] = int(pyodide_js._module.HEAP8.length)
    except Exception:  # noqa: BLE001 - CPython
        out["wasm_heap_bytes"] = None
    return {"ok": True, **out}


def batch_clear() -> dict:
    S.batch = None
    return {"ok": True}
