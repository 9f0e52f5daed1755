"""Entry points the web page calls inside its PyScript worker (Pyodide only).

The page (``web/app.js``) talks to these through ``web/worker.py``:

* :func:`init`    - load onnxruntime-web, the model index and the default model;
* :func:`models`  - the model index as plain dicts;
* :func:`segment` - image file bytes -> instance labels, returned as JS objects
  (labels as a ``Uint16Array``/``Uint32Array``, never a Python list).

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
from .models import find_model, load_model_index
from .pipeline import segment_async

__all__ = ["init", "models", "segment"]

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
    return find_model(S.specs, model_id or S.default_model)


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
        S.default_model = find_model(S.specs, None).id
        backend = await _backend(_spec(None), cfg.get("backend") or "auto")
        _warm_up()
        return {"ok": True, "models": [_spec_dict(s) for s in S.specs],
                "default_model": S.default_model, "backend": backend.name,
                "ms": _now() - t0}
    except Exception as exc:  # noqa: BLE001
        return _error(exc)


def _warm_up() -> None:
    """Import the decoders now, so the first image is not charged for it."""
    import PIL.Image  # noqa: F401
    import scipy.ndimage  # noqa: F401
    import tifffile  # noqa: F401


def models() -> list[dict]:
    return [_spec_dict(s) for s in S.specs]


def _display_image(img: np.ndarray) -> np.ndarray:
    """8-bit grayscale rendition of the decoded image for the page's canvas."""
    a = np.asarray(img, dtype=np.float32)
    if a.ndim == 3:
        a = a.mean(axis=-1)
    lo, hi = np.percentile(a, (0.5, 99.8)) if a.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((a - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def _typed(arr: np.ndarray):
    js = _js()
    arr = np.ascontiguousarray(arr)
    ctor = {np.dtype(np.uint8): js.Uint8Array, np.dtype(np.uint16): js.Uint16Array,
            np.dtype(np.uint32): js.Uint32Array, np.dtype(np.int32): js.Int32Array,
            np.dtype(np.float32): js.Float32Array}[arr.dtype]
    out = ctor.new(arr.size)
    out.assign(arr)  # one memcpy
    return out


async def segment(data: bytes, options: dict | None = None, progress=None) -> dict:
    """Segment one image file. ``options``: model, backend, filename, display (bool)."""
    options = options or {}
    try:
        t_start = _now()
        spec = _spec(options.get("model"))
        backend = await _backend(spec, options.get("backend") or "auto")
        seg = await segment_async(bytes(data), spec, backend, progress=progress,
                                  filename=options.get("filename"))
        labels = seg.labels
        timings = {k: float(v) for k, v in seg.timings.items()}
        result = {
            "ok": True,
            "labels": _typed(labels),
            "height": int(labels.shape[0]),
            "width": int(labels.shape[1]),
            "count": int(seg.count),
            "backend": backend.name,
            "model": spec.id,
            "timings": timings,
        }
        if options.get("display"):
            result["image"] = _typed(_display_image(seg.image))
        result["timings"]["worker"] = _now() - t_start
        return result
    except Exception as exc:  # noqa: BLE001
        return _error(exc)
