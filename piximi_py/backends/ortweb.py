"""onnxruntime-web backend: runs inside Pyodide and calls ORT-web through the JS FFI.

Arrays cross the FFI as one ``memcpy`` each way (``JsBuffer.assign`` /
``JsBuffer.assign_to``), never element by element.

Execution provider choice (``backend``):

* ``"webgpu"`` - WebGPU; fails with :class:`BackendUnavailable` if the browser has
  no WebGPU adapter;
* ``"wasm"``   - WebAssembly CPU (multi-threaded when the page is cross-origin
  isolated);
* ``"auto"``   - WebGPU when ``navigator.gpu.requestAdapter()`` returns an adapter
  and a session can be created on it, else WASM.

Each session is created with exactly one execution provider, so
:attr:`OrtWebBackend.name` always tells which one really runs.

Two builds of onnxruntime-web serve the two providers. The WebGPU build (JSEP,
``ort.min.mjs``) also carries a WASM provider, but in Chromium its CPU code
takes far longer to reach full speed than the plain WASM build's
(``ort.wasm.min.mjs``): the browser optimizes hot WebAssembly functions only
after they have run a while, and the JSEP build's take many more runs. Median
of the first 15 runs, 2 threads: 137 against 58 ms for the default nuclei
U-Net on 512², 109 against 61 ms for the SAM student's decoder, which was
still at 77 against 23 ms after 30 runs (``python -m bench.ortweb_builds``).
So WASM sessions always use the plain build, and the WebGPU build is imported
only when a WebGPU session is made (on a machine without WebGPU its 28 MB
runtime is never loaded).
"""
from __future__ import annotations

import asyncio

import numpy as np

from .base import Backend

__all__ = ["BackendUnavailable", "OrtWebBackend", "load_ort", "loaded_builds", "ort_module", "webgpu_available",
           "webgpu_features", "float16_on_webgpu", "BACKENDS", "check_backend"]

BACKENDS = ("auto", "webgpu", "wasm")


def check_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`BACKENDS`, else ``ValueError`` naming them."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    return backend


_ort_config: dict | None = None   # set by load_ort: module URLs, wasm paths, threads
_ort_modules: dict = {}            # module URL -> the imported ES module
_run_locks: dict = {}              # provider -> the lock its sessions' calls take (_in_turn)
_webgpu: frozenset | bool | None = None   # the adapter's features; False: no adapter; None: not asked yet


class BackendUnavailable(RuntimeError):
    """The requested execution backend cannot run in this browser."""


def _js():
    import js  # only exists under Pyodide

    return js


def _to_js_obj(d: dict):
    from pyodide.ffi import to_js

    return to_js(d, dict_converter=_js().Object.fromEntries)


def _js_error_message(exc: BaseException) -> str:
    msg = str(exc)
    # JsException messages look like "Error: ...": keep the human part.
    return msg.split("\n", 1)[0]


async def load_ort(module_urls: dict, wasm_paths: str, *, num_threads: int | None = None):
    """Configure onnxruntime-web (absolute URLs) and import its WASM build.

    Parameters
    ----------
    module_urls : dict
        ``{"wasm": ".../ort.wasm.min.mjs", "webgpu": ".../ort.min.mjs"}``.
    wasm_paths : str
        Folder URL of the ``.wasm``/``.mjs`` runtime files of both builds.
    num_threads : int, optional
        WASM threads; default: onnxruntime-web's choice, 1 without
        cross-origin isolation.

    Returns
    -------
    The WASM build's module (its ``Tensor``, ``InferenceSession``, ``env``).
    """
    global _ort_config
    if _ort_config is None:
        _ort_config = {"urls": dict(module_urls), "wasm_paths": wasm_paths, "num_threads": num_threads}
    return await ort_module("wasm")


async def ort_module(provider: str):
    """The onnxruntime-web build for ``provider`` ("wasm" or "webgpu"), imported once."""
    if _ort_config is None:
        raise RuntimeError("onnxruntime-web is not loaded: call load_ort() first")
    url = _ort_config["urls"][provider]
    if url not in _ort_modules:
        js = _js()
        importer = js.Function.new("u", "return import(u)")
        ort = await importer(url)
        # the page's worker may have started this build already, before piximi_py was imported
        # (web/worker.py); its settings then are the runtime's and must be these
        def settings():
            return str(getattr(ort.env.wasm, "wasmPaths", None)), getattr(ort.env.wasm, "numThreads", None)

        before = settings() if getattr(ort.env, "piximiStarted", False) else None
        ort.env.wasm.wasmPaths = _ort_config["wasm_paths"]
        ort.env.wasm.proxy = False  # we already are in a worker
        if _ort_config["num_threads"]:
            ort.env.wasm.numThreads = int(_ort_config["num_threads"])
        elif not getattr(js, "crossOriginIsolated", False):
            ort.env.wasm.numThreads = 1  # no SharedArrayBuffer: no threads
        if before is not None and before != settings():
            raise RuntimeError(f"onnxruntime-web was started with (wasmPaths, numThreads) {before}, "
                               f"not {settings()}")
        _ort_modules[url] = ort
    return _ort_modules[url]


def loaded_builds() -> dict:
    """Provider -> file name of the onnxruntime-web build imported for it (diagnostics)."""
    if _ort_config is None:
        return {}
    return {p: url.rsplit("/", 1)[-1] for p, url in _ort_config["urls"].items() if url in _ort_modules}


async def webgpu_available() -> bool:
    """True when ``navigator.gpu.requestAdapter()`` yields an adapter (cached)."""
    return (await webgpu_features()) is not None


async def webgpu_features() -> frozenset | None:
    """The features of the WebGPU adapter (e.g. ``"shader-f16"``), None without one (cached)."""
    global _webgpu
    if _webgpu is None:
        try:
            gpu = _js().navigator.gpu
            adapter = None if gpu is None else await gpu.requestAdapter()
        except Exception:
            adapter = None
        try:
            _webgpu = False if adapter is None else frozenset(str(f) for f in _js().Array.from_(adapter.features))
        except Exception:
            _webgpu = frozenset()  # an adapter whose features cannot be read: none assumed
    return None if _webgpu is False else _webgpu


async def float16_on_webgpu() -> bool:
    """Whether the WebGPU adapter runs float16 shaders (``shader-f16``)."""
    return "shader-f16" in (await webgpu_features() or ())


FLOAT16_UNAVAILABLE = ("this model file computes in float16 and this GPU's WebGPU adapter has no "
                       "'shader-f16'; use backend 'wasm' or 'auto'")


async def _in_turn(provider: str, start):
    """Await the promise ``start()`` makes (a session's creation, run or release on ``provider``)
    after every earlier one on ``provider`` has settled.

    onnxruntime-web's WebGPU build refuses a call while another session's is in flight ("Session
    already started"). The turn ends when the promise settles, not when its awaiter stops waiting:
    the start-up probe gives up on a slow first WebGPU run and leaves it running (:mod:`.probe`),
    and the next WebGPU call waits for it instead of failing.
    """
    if provider not in _run_locks:
        _run_locks[provider] = asyncio.Lock()
    lock = _run_locks[provider]
    await lock.acquire()
    try:
        task = asyncio.ensure_future(_settled(start()))
    except BaseException:
        lock.release()
        raise
    task.add_done_callback(lambda _: lock.release())
    return await asyncio.shield(task)


async def _settled(promise):
    return await promise


class OrtWebBackend(Backend):
    """One ORT-web ``InferenceSession`` bound to one execution provider."""

    def __init__(self, session, name: str, ort):
        self.session = session
        self.name = name  # "webgpu" or "wasm": what actually runs
        self._ort = ort
        self.input_name = str(session.inputNames[0])
        self.output_name = str(session.outputNames[0])
        self.output_names = [str(n) for n in session.outputNames]

    @classmethod
    async def create(cls, model: bytes | memoryview, backend: str = "auto", *, float16: bool = False):
        """Create a session from ONNX bytes on ``backend`` ("auto", "webgpu", "wasm").

        ``float16``: the model computes in float16. WebGPU then needs an adapter
        with ``shader-f16``: without it onnxruntime-web 1.30 returns zeros
        (SwiftShader's adapter, ``python -m bench.zoo_page``), so "webgpu" raises
        :class:`BackendUnavailable` and "auto" takes WASM.
        """
        check_backend(backend)
        gpu = backend != "wasm" and await webgpu_available()
        if gpu and float16 and not await float16_on_webgpu():
            if backend == "webgpu":
                raise BackendUnavailable(FLOAT16_UNAVAILABLE)
            gpu = False
        if gpu:
            ort = await ort_module("webgpu")
            try:
                return cls(await cls._session(ort, model, "webgpu"), "webgpu", ort)
            except Exception as exc:
                if backend == "webgpu":
                    raise BackendUnavailable(
                        f"WebGPU session could not be created ({_js_error_message(exc)}); "
                        "use backend 'wasm'") from None
        elif backend == "webgpu":
            raise BackendUnavailable(
                "WebGPU is not available in this browser (no GPU adapter); "
                "use backend 'wasm' or 'auto'")
        ort = await ort_module("wasm")
        return cls(await cls._session(ort, model, "wasm"), "wasm", ort)

    @staticmethod
    async def _session(ort, model, provider: str):
        js = _js()
        data = js.Uint8Array.new(len(model))
        data.assign(model)
        opts = _to_js_obj({"executionProviders": [provider], "graphOptimizationLevel": "all"})
        return await _in_turn(provider, lambda: ort.InferenceSession.create(data, opts))

    async def run(self, batch: np.ndarray) -> np.ndarray:
        from pyodide.ffi import to_js

        js = _js()
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        buf = js.Float32Array.new(batch.size)
        buf.assign(batch)  # one memcpy from the wasm heap into a JS typed array
        tensor = self._ort.Tensor.new("float32", buf, to_js(list(batch.shape)))
        feeds = _to_js_obj({self.input_name: tensor})
        results = await _in_turn(self.name, lambda: self.session.run(feeds))
        out = getattr(results, self.output_name)
        try:
            shape = tuple(int(d) for d in out.dims)
            data = out.data
            if str(out.type) == "float32":
                arr = np.empty(shape, dtype=np.float32)
                data.assign_to(arr)  # one memcpy back into numpy
            else:
                arr = np.asarray(data.to_py()).astype(np.float32).reshape(shape)
        finally:
            for t in (tensor, out):
                try:
                    t.dispose()
                except Exception:
                    pass
        return arr

    async def run_named(self, inputs: dict) -> dict:
        """Several named inputs -> every output by name (one memcpy per array each way)."""
        from pyodide.ffi import to_js

        js = _js()
        typed = {np.dtype(np.float32): (js.Float32Array, "float32"), np.dtype(np.int64): (js.BigInt64Array, "int64"),
                 np.dtype(np.int32): (js.Int32Array, "int32"), np.dtype(np.uint8): (js.Uint8Array, "uint8")}
        feeds, tensors = {}, []
        try:
            for name, value in inputs.items():
                arr = np.ascontiguousarray(value)
                if arr.dtype not in typed:
                    arr = arr.astype(np.float32)
                ctor, ort_type = typed[arr.dtype]
                buf = ctor.new(arr.size)
                buf.assign(arr)
                tensor = self._ort.Tensor.new(ort_type, buf, to_js(list(arr.shape)))
                tensors.append(tensor)
                feeds[name] = tensor
            js_feeds = _to_js_obj(feeds)
            results = await _in_turn(self.name, lambda: self.session.run(js_feeds))
            out = {}
            for name in self.output_names:
                t = getattr(results, name)
                tensors.append(t)
                shape = tuple(int(d) for d in t.dims)
                if str(t.type) == "float32":
                    arr = np.empty(shape, dtype=np.float32)
                    t.data.assign_to(arr)
                else:
                    arr = np.asarray(t.data.to_py()).astype(np.float32).reshape(shape)
                out[name] = arr
            return out
        finally:
            for t in tensors:
                try:
                    t.dispose()
                except Exception:
                    pass

    async def close(self) -> None:
        try:
            await _in_turn(self.name, lambda: self.session.release())
        except Exception:
            pass
