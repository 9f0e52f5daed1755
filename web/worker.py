# PyScript worker entry (runs in Pyodide, off the main thread).
# The page calls the functions named in __export__ (see app.js); all the work is
# in piximi_py's page entry points (webworker: start-up and segmentation; webexport,
# webprompt, webedit, webteach), this file only installs the wheels and converts
# arguments/results at the JS boundary.
import asyncio

import js
import pyodide_js
from pyodide.ffi import to_js

_ww = None
_deferred = None  # the loading of the packages start-up does not need (see _load_deferred)
_deferred_args = None


def _js_obj(obj):
    return to_js(obj, dict_converter=js.Object.fromEntries)


def _py(value):
    return value.to_py() if hasattr(value, "to_py") else value


def _progress(stage, done, total):
    # Synchronous call to the main thread (Atomics); a no-op when unavailable.
    # Returns what the page returns: True asks a long task (refine) to stop.
    try:
        from polyscript import xworker

        return xworker.sync.progress(stage, done, total) is True
    except Exception:
        return False


async def _install(packages, wheels):
    opts = _js_obj({"checkIntegrity": True})
    await pyodide_js.loadPackage(to_js(packages), opts)  # first: the scipy wheel needs their openblas
    await pyodide_js.loadPackage(to_js(wheels), opts)


async def _load_deferred():
    """scipy, Pillow, tifffile...: what the pipeline needs and start-up does not. The
    page's warm_up loads them right after ready, while a file is picked (loading them
    beside the model instead delays ready as much as it saves later: bench.startup);
    every call that needs them waits for that, and a failure is tried again."""
    global _deferred, _deferred_args
    if _deferred_args is None:
        return
    if _deferred is None:
        _deferred = asyncio.ensure_future(_install(*_deferred_args))
    try:
        await _deferred
    finally:
        if _deferred.done():
            if _deferred.exception() is None:
                _deferred_args = None
            _deferred = None


def _with_packages(entry):
    """An async entry point that needs the deferred packages: the runtime must be loaded,
    and the packages too (waited for, loaded now if warm_up failed), else a clear error."""
    async def call(*args):
        if _ww is None:
            return _not_ready()
        try:
            await _load_deferred()
        except Exception as exc:  # noqa: BLE001
            return _js_obj({"ok": False, "error": {"type": "DownloadError", "message":
                            f"could not load the image-processing packages ({exc}); reload the page"}})
        return await entry(*args)

    call.__name__ = entry.__name__
    return call


def _snapshot_state():
    """How Pyodide booted: "restored" from the memory snapshot of an earlier visit, "made"
    (booted, and the snapshot saved for the next visit) or "plain" (pyodide_boot.mjs)."""
    state = getattr(js, "piximiPyodideSnapshot", None)
    if state is None:
        return {"state": "plain", "error": None}
    return {"state": str(state.state), "error": None if state.error is None else str(state.error)}


def _save_snapshot():
    """Store the snapshot this visit made (pyodide_boot.mjs), now that start-up is over."""
    state = getattr(js, "piximiPyodideSnapshot", None)
    if state is not None and state.save:
        state.save()


#: A 68-byte ONNX model (one Identity node): its session starts onnxruntime-web's WebAssembly
#: runtime (fetch, compile, threads), about 0.3-0.4 s of the warm start, before the first real model.
_START_MODEL = "CAg6OgoQCgF4EgF5IghJZGVudGl0eRIEd2FybVoPCgF4EgoKCAgBEgQKAggBYg8KAXkSCgoICAESBAoCCAFCBAoAEA0="


async def _start_onnxruntime(cfg):
    """Start onnxruntime-web's WASM build before piximi_py is imported: import the build (the
    same module piximi_py imports next: ES modules are cached by URL), set it up as
    piximi_py.backends.ortweb.ort_module does (which checks that it was: ``piximiStarted``) and
    begin a session, whose WebAssembly compilation then runs off this thread during the import.
    Returns the session's promise."""
    importer = js.Function.new("u", "return import(u)")
    ort = await importer(cfg["base"] + cfg["ort_modules"]["wasm"])
    ort.env.wasm.wasmPaths = cfg["base"] + cfg["ort_wasm_paths"]
    ort.env.wasm.proxy = False
    if cfg.get("num_threads"):
        ort.env.wasm.numThreads = int(cfg["num_threads"])
    elif not getattr(js, "crossOriginIsolated", False):
        ort.env.wasm.numThreads = 1
    ort.env.piximiStarted = True
    data = js.Uint8Array.new(js.Array.from_(js.atob(_START_MODEL), js.Function.new("c", "return c.charCodeAt(0)")))
    return ort.InferenceSession.create(data)


async def init(cfg):
    """Install packages (all from the page's origin), then load ORT + default model."""
    global _ww, _deferred_args
    cfg = _py(cfg)
    timings = {}
    try:
        if _ww is None:
            base = cfg["base"]
            _progress("packages", 0, 1)
            t = js.performance.now()
            wanted = list(cfg["pyodide_packages"]) + [base + w for w in cfg["wheels"]]
            await pyodide_js.loadPackage(to_js(wanted), _js_obj({"checkIntegrity": True}))
            _deferred_args = (list(cfg.get("deferred_pyodide_packages", [])),
                              [base + w for w in cfg.get("deferred_wheels", [])])
            timings["packages"] = js.performance.now() - t
            _progress("packages", 1, 1)
            # after the packages, not beside them: two WebAssembly compilations at once slowed
            # numpy's loading by more than it saved (bench.startup)
            t_start = js.performance.now()
            try:
                creating = await _start_onnxruntime(cfg)
                timings["onnxruntime_start_import"] = js.performance.now() - t_start
            except Exception as exc:  # noqa: BLE001 - the model step below says what fails
                timings["onnxruntime_start_error"], creating = str(exc), None
            t = js.performance.now()
            from piximi_py import webworker

            timings["import"] = js.performance.now() - t
            try:
                if creating is not None:
                    await (await creating).release()
                    timings["onnxruntime_start"] = js.performance.now() - t_start
            except Exception as exc:  # noqa: BLE001
                timings["onnxruntime_start_error"] = str(exc)
            _ww = webworker
        _progress("model", 0, 1)
        out = await _ww.init(cfg)
        out["timings"] = {**timings, **out.get("timings", {})}
        out["pyodide_snapshot"] = _snapshot_state()
        _save_snapshot()
        _progress("model", 1, 1)
    except Exception as exc:  # noqa: BLE001
        out = {"ok": False, "error": {"type": type(exc).__name__, "message": str(exc)}}
    return _js_obj(out)


async def warm_up():
    if _ww is None:
        return _not_ready()
    try:
        t = js.performance.now()
        await _load_deferred()
        out = _ww.warm_up()
        out["packages_ms"] = js.performance.now() - t - out["ms"]
    except Exception as exc:  # noqa: BLE001
        out = {"ok": False, "error": {"type": type(exc).__name__, "message": str(exc)}}
    return _js_obj(out)


def models(all_models=False):
    return _js_obj(_ww.models(bool(all_models)) if _ww else [])


def _bytes(data):
    return data.to_bytes() if hasattr(data, "to_bytes") else bytes(data or b"")


def _not_ready():
    return _js_obj({"ok": False, "error": {"type": "NotReady",
                                           "message": "the runtime is still loading"}})


def describe(data, options=None):
    if _ww is None:
        return _not_ready()
    return _js_obj(_ww.describe(_bytes(data), _py(options) or {}))


def export(kind, options=None):
    if _ww is None:
        return _not_ready()
    from piximi_py import webexport

    return _js_obj(webexport.export(str(kind), _py(options) or {}))


def batch_fail(name, message):
    from piximi_py import webexport

    return _js_obj(webexport.batch_fail(str(name), str(message)))


def batch_zip():
    from piximi_py import webexport

    return _js_obj(webexport.batch_zip())


def memory():
    return _js_obj(_ww.memory() if _ww else {"ok": False})


def batch_clear():
    from piximi_py import webexport

    return _js_obj(webexport.batch_clear())


@_with_packages
async def segment(data, options=None):
    out = await _ww.segment(_bytes(data), _py(options) or {}, progress=_progress)
    return _js_obj(out)


def _id(value):
    # JS null/undefined/"" -> None (the last segmented image)
    if value is None or not isinstance(value, str) or value in ("", "null", "undefined"):
        return None
    return value


@_with_packages
async def open_image(data, options=None):
    from piximi_py import webprompt

    return _js_obj(await webprompt.open_image(_bytes(data), _py(options) or {}))


@_with_packages
async def prompt(image_id, request=None, options=None):
    from piximi_py import webprompt

    out = await webprompt.prompt(_id(image_id), _py(request) or {}, _py(options) or {}, progress=_progress)
    return _js_obj(out)


def prompt_accept(options=None):
    if _ww is None:
        return _not_ready()
    from piximi_py import webprompt

    return _js_obj(webprompt.prompt_accept(_py(options) or {}))


def edit(op, options=None):
    if _ww is None:
        return _not_ready()
    from piximi_py.webedit import edit as apply_edit

    return _js_obj(apply_edit(str(op), _py(options) or {}))


def prompt_cancel():
    if _ww is None:
        return _js_obj({"ok": True})
    from piximi_py import webprompt

    return _js_obj(webprompt.prompt_cancel())


@_with_packages
async def refine(image_id=None, options=None):
    from piximi_py import webprompt

    return _js_obj(await webprompt.refine(_id(image_id), _py(options) or {}, progress=_progress))


@_with_packages
async def mark_corrected(options=None):
    from piximi_py.webteach import mark_corrected as mark

    return _js_obj(mark(_py(options) or {}))


@_with_packages
async def teach(options=None):
    from piximi_py.webteach import teach as adapt

    return _js_obj(await adapt(_py(options) or {}, progress=_progress))


@_with_packages
async def download_model(model_id=None):
    from piximi_py.webteach import download_model as download

    return _js_obj(await download(_id(model_id)))


@_with_packages
async def load_model(data, options=None):
    from piximi_py.webteach import load_model as load

    return _js_obj(await load(_bytes(data), _py(options) or {}))


__export__ = ["init", "warm_up", "models", "segment", "describe", "export", "batch_fail", "batch_zip",
              "batch_clear", "memory", "open_image", "prompt", "prompt_accept", "prompt_cancel", "edit",
              "refine", "mark_corrected", "teach", "download_model", "load_model"]
