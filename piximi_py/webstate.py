"""What the page's entry points share (Pyodide only): the session's state, its models'
files and sessions, errors a person can act on, and the conversions to JavaScript.

The entry points live by job: start-up and segmentation in :mod:`piximi_py.webworker`,
exports and batch downloads in :mod:`piximi_py.webexport`, prompts (SAM) in
:mod:`piximi_py.webprompt`, editing in :mod:`piximi_py.webedit`, teaching in
:mod:`piximi_py.webteach`. Each returns ``{"ok": True, ...}`` or :func:`error_result`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time

import numpy as np

from .backends.ortweb import (BackendUnavailable, OrtWebBackend, check_backend, float16_on_webgpu,
                              webgpu_available)
from .io import ImageReadError
from .models import can_invert, can_segment, computes_in_float16, find_model

__all__ = ["S", "Cancelled", "DownloadError", "USER_ERRORS", "error_result", "now_ms", "to_js", "typed_array",
           "table_js", "intensity", "fetch_bytes", "fetch_checked", "plane_options", "describe_decodable",
           "segmentation_spec", "spec_dict", "model_bytes", "model_backend", "DOWNLOAD_PROGRESS_BYTES"]

#: Downloads at least this large report their progress (a model used for the first time).
DOWNLOAD_PROGRESS_BYTES = 1 << 20


class Cancelled(Exception):
    """The page asked to stop (its progress callback returned true)."""


class DownloadError(OSError):
    """A file of the site could not be fetched (offline and never cached, or a server error)."""


#: Errors whose message is shown to the user as is: what they gave or asked for was refused.
USER_ERRORS = (ImageReadError, BackendUnavailable, ValueError, LookupError, Cancelled, DownloadError)
#: Lookups that this package never raises for the user (a dict's missing key, numpy's index out of
#: range): internal errors, not a message to act on.
INTERNAL_LOOKUPS = (KeyError, IndexError)


class _State:
    base = ""
    cfg: dict = {}
    specs: list = []
    default_model: str | None = None
    model_bytes: dict = {}
    sessions: dict = {}
    last: dict = {}      # the last segmentation: labels, image, table, name, pixel size, image_id
    batch = None         # webexport.Batch: the zip of a batch download, written as results come
    raw: dict = {}       # model id -> its models/index.json entry as parsed JSON
    index: dict = {}     # models/index.json as parsed JSON
    images: dict = {}    # image_id -> decoded plane (the last few), for prompts
    sam: dict = {}       # (model id, runtime ("wasm", "webgpu")) -> SamPredictor
    sam_failed: set = set()  # (model id, runtime) whose sessions could not be created (auto skips them)
    sam_warm_up: dict = {}   # (model id, runtime) -> decoder warm-up run times (ms), see webprompt
    pending = None       # the last prompt's mask, waiting for prompt_accept
    edit_history = None  # undo / redo of the last segmentation's edits (piximi_py.webedit)
    corrected: dict = {}  # image name -> its image and corrected labels, to teach (piximi_py.webteach)
    probes: dict = {}    # model id -> how "auto" chose WebGPU or WASM (piximi_py.backends.probe)
    taught = 0           # models taught so far (their ids count up)


#: The page session's state.
S = _State()


def _js():
    import js

    return js


def to_js(obj):
    """``obj`` as a JavaScript value (dicts as plain objects)."""
    from pyodide.ffi import to_js as convert

    return convert(obj, dict_converter=_js().Object.fromEntries)


def now_ms() -> float:
    return time.perf_counter() * 1000.0


def error_result(exc: BaseException) -> dict:
    """``{"ok": False, "error": {"type", "message"}}``: the message of an error the user can act on
    (:data:`USER_ERRORS`) as it is, any other as an internal error. Called in an ``except`` block:
    the traceback goes to the worker console for developers, but for the errors that are always
    the input's (a file that cannot be read, a stop, a download or backend that failed)."""
    import traceback

    if isinstance(exc, USER_ERRORS) and not isinstance(exc, INTERNAL_LOOKUPS):
        if not isinstance(exc, (ImageReadError, Cancelled, DownloadError, BackendUnavailable)):
            traceback.print_exc()  # a ValueError may be numpy's as well as a refused option
        msg, etype = str(exc), type(exc).__name__
    else:
        traceback.print_exc()
        msg, etype = f"internal error ({type(exc).__name__}: {exc})", "InternalError"
    return {"ok": False, "error": {"type": etype, "message": msg}}


def typed_array(arr: np.ndarray):
    """``arr`` as a JavaScript typed array of its dtype, copied in one memcpy."""
    js = _js()
    arr = np.ascontiguousarray(arr)
    ctor = {np.dtype(np.uint8): js.Uint8Array, np.dtype(np.uint16): js.Uint16Array,
            np.dtype(np.uint32): js.Uint32Array, np.dtype(np.int32): js.Int32Array,
            np.dtype(np.float32): js.Float32Array, np.dtype(np.float64): js.Float64Array}[arr.dtype]
    out = ctor.new(arr.size)
    out.assign(arr)  # one memcpy
    return out


def table_js(table: dict) -> dict:
    """Columns as typed arrays (Float64Array; ids and areas exactly representable)."""
    return {k: typed_array(np.asarray(v, np.float64)) for k, v in table.items()}


def intensity(image: np.ndarray) -> np.ndarray:
    """The planes of a decoded image its objects are measured on (a colour image's three colours)."""
    return image[..., :3] if image.ndim == 3 else image


async def fetch_bytes(url: str, progress=None) -> bytes:
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


async def fetch_checked(file: str, sha256: str | None, progress=None) -> bytes:
    """A model file of the site (``models/FILE``), refused when its digest is not ``sha256``."""
    data = await fetch_bytes(S.base + "models/" + file, progress)
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise DownloadError(f"model file {file} is corrupt (sha256 mismatch); reload the page")
    return data


def plane_options(options: dict) -> tuple[dict | None, dict | None]:
    """A request's plane selection: ``index`` and ``project`` (:func:`piximi_py.io.read_image`,
    which checks their values before decoding)."""
    index = {str(k): v for k, v in (options.get("index") or {}).items()}
    project = {str(k): v for k, v in (options.get("project") or {}).items()}
    return index or None, project or None


async def describe_decodable(data: bytes, name: str | None) -> dict:
    """:func:`piximi_py.io.describe_image`, after importing the decoder its compression
    needs (a JavaScript module of the site, fetched on first use)."""
    from . import codecs
    from .io import describe_image

    info = describe_image(data, name)
    if codecs.needs_zstd_decoder(info.get("compression")):
        module = await _js().Function.new("u", "return import(u)")(S.base + S.cfg["codec_modules"]["zstd"])
        codecs.set_zstd_decoder(lambda b: module.decompress(to_js(b)).to_bytes())
    return info


def segmentation_spec(model_id: str | None):
    """The model ``model_id`` (default: the site's default) of the index, refused when it needs prompts."""
    spec = find_model(S.specs, model_id or S.default_model)
    if not can_segment(spec):
        raise ValueError(f"model {spec.id!r} ({spec.task}) needs prompts; it cannot segment "
                         "a whole image")
    return spec


def spec_dict(spec) -> dict:
    """A model's index entry as the page shows it (``segment``: whether it segments a whole image)."""
    d = dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) else dict(vars(spec))
    d = {k: v for k, v in d.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))}
    for k, v in S.raw.get(spec.id, {}).items():  # fields the dataclass does not keep
        d.setdefault(k, v)                         # (latency_ms_512, files, runtimes, ...)
    d["segment"] = can_segment(spec)
    d["invertible"] = d["segment"] and can_invert(spec)
    d["default"] = spec.id == S.default_model if d["segment"] else bool(spec.default)
    return d


async def model_bytes(spec, progress=None) -> bytes:
    """The ONNX file of a segmentation model, fetched once."""
    if spec.id not in S.model_bytes:
        S.model_bytes[spec.id] = await fetch_checked(spec.file, getattr(spec, "sha256", None), progress)
    return S.model_bytes[spec.id]


async def model_backend(spec, backend: str, progress=None) -> OrtWebBackend:
    """The onnxruntime-web session of a segmentation model on ``backend`` ("auto", "webgpu",
    "wasm"), made once; "auto" times WebGPU and WASM once (:mod:`piximi_py.backends.probe`)."""
    check_backend(backend)
    if not spec.webgpu and backend != "wasm":
        backend = "wasm"  # the result's ``backend`` says so
    key = (spec.id, backend)
    if key not in S.sessions:
        data, float16 = await model_bytes(spec, progress), computes_in_float16(spec.file)
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
