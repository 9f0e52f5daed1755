"""Choose WebGPU or WASM for a model by timing both, once per model file and GPU (page only).

WebGPU is not always faster: a weak integrated GPU, a software adapter, or a
small model can lose to WebAssembly. With ``backend="auto"`` the page times a
short probe on both (:func:`choose_backend`) and runs the faster; the choice
and both figures are kept in the browser's Cache API, keyed by the model file
and the adapter, so the probe runs once per model and machine.
"""
from __future__ import annotations

import asyncio
import json
import time

import numpy as np

from .ortweb import OrtWebBackend, _js

__all__ = ["choose_backend", "PROBE_SIDE", "PROBE_RUNS", "CACHE_NAME"]

#: Side of the probe image (a tile size the page runs, small enough to cost little).
PROBE_SIDE = 256
#: Timed runs per backend, after one warm-up run (its shaders compiled, its buffers made).
PROBE_RUNS = 2
#: WebGPU's warm-up may take this long at least (shader compilation on a real GPU) ...
WARM_UP_MIN_MS = 5000.0
#: ... and this many WASM runs' time; beyond, WebGPU loses without finishing (a software adapter).
WARM_UP_WASM_RUNS = 30
CACHE_NAME = "piximi-backend-probe"


def _probe_input(channels: int) -> np.ndarray:
    """A deterministic image with structure (blobs on a background), not a constant."""
    y, x = np.mgrid[0:PROBE_SIDE, 0:PROBE_SIDE].astype(np.float32)
    image = 0.5 + 0.5 * np.sin(x / 9.0) * np.cos(y / 7.0)
    return np.repeat(image[None, None], channels, axis=1).astype(np.float32)


async def _time_runs(backend: OrtWebBackend, x: np.ndarray) -> float:
    times = []
    for _ in range(PROBE_RUNS):
        t = time.perf_counter()
        await backend.run(x)
        times.append((time.perf_counter() - t) * 1000.0)
    return float(np.median(times))


async def _adapter_name() -> str:
    try:
        adapter = await _js().navigator.gpu.requestAdapter()
        info = adapter.info
        return "/".join(str(getattr(info, k, "") or "") for k in ("vendor", "architecture", "device", "description"))
    except Exception:  # noqa: BLE001 - no adapter info: one key for all
        return "unknown"


async def _cache():
    try:
        return await _js().caches.open(CACHE_NAME)
    except Exception:  # noqa: BLE001 - no Cache API (e.g. an opaque origin): probe every time
        return None


async def choose_backend(data: bytes, channels: int, file_key: str, base_url: str) -> tuple[OrtWebBackend, dict]:
    """The faster of a WebGPU and a WASM session of the model ``data``, and the figures.

    ``file_key`` names the model file (its sha256); ``base_url`` is the site's, under
    which the choice is cached. Returns ``(backend, report)``; the report has
    ``backend``, ``wasm_ms``, ``webgpu_ms`` (median per run of a ``PROBE_SIDE``² image;
    None when WebGPU did not finish its warm-up in time), ``reason`` and ``cached``.
    """
    key = f"{base_url}__backend_probe__/{file_key}?adapter={await _adapter_name()}"
    cache = await _cache()
    if cache is not None:
        try:
            hit = await cache.match(key)
            if hit:
                report = json.loads(str(await hit.text()))
                return await OrtWebBackend.create(data, report["backend"]), {**report, "cached": True}
        except Exception:  # noqa: BLE001 - a damaged entry: probe again
            pass
    x = _probe_input(channels)
    wasm = await OrtWebBackend.create(data, "wasm")
    await wasm.run(x)
    wasm_ms = await _time_runs(wasm, x)
    gpu = await OrtWebBackend.create(data, "webgpu")
    limit_s = max(WARM_UP_MIN_MS, WARM_UP_WASM_RUNS * wasm_ms) / 1000.0
    webgpu_ms = None
    try:
        await asyncio.wait_for(asyncio.ensure_future(gpu.run(x)), timeout=limit_s)
        webgpu_ms = await _time_runs(gpu, x)
    except asyncio.TimeoutError:
        pass  # still running: the session is left to finish and be collected
    if webgpu_ms is not None and webgpu_ms < wasm_ms:
        chosen, reason = gpu, f"WebGPU ran the probe in {webgpu_ms:.0f} ms, WASM in {wasm_ms:.0f} ms"
        await wasm.close()
    else:
        chosen = wasm
        reason = (f"WASM ran the probe in {wasm_ms:.0f} ms, WebGPU in {webgpu_ms:.0f} ms" if webgpu_ms is not None
                  else f"WebGPU's first run took over {limit_s:.0f} s (WASM: {wasm_ms:.0f} ms a run)")
        if webgpu_ms is not None:
            await gpu.close()
    report = {"backend": chosen.name, "wasm_ms": round(wasm_ms, 1),
              "webgpu_ms": None if webgpu_ms is None else round(webgpu_ms, 1),
              "probe": f"{PROBE_SIDE}x{PROBE_SIDE}", "reason": reason}
    if cache is not None:
        try:
            await cache.put(key, _js().Response.new(json.dumps(report)))
        except Exception:  # noqa: BLE001 - not cached: probed again next visit
            pass
    return chosen, {**report, "cached": False}
