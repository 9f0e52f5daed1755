"""Headless Debian Chromium for tests and benchmarks (Playwright)."""
from __future__ import annotations

import os

CHROMIUM = os.environ.get("PIXIMI_CHROMIUM", "/usr/bin/chromium")
BASE_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--disable-quic"]
# WebGPU through SwiftShader: exact but slow, so for correctness checks on small images only.
WEBGPU_ARGS = ["--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-vulkan=swiftshader",
               "--use-webgpu-adapter=swiftshader", "--enable-unsafe-swiftshader"]


def launch(playwright, *, webgpu: bool = False):
    """Start Chromium; ``webgpu`` adds the SwiftShader WebGPU adapter."""
    args = BASE_ARGS + (WEBGPU_ARGS if webgpu else [])
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)


# window.piximi.segment on image file bytes; the labels come back base64-encoded (fast to transfer)
SEGMENT_JS = """
async ([b64, opts]) => {
  const u = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const enc = (a) => {
    const b = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    let s = "";
    for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
    return btoa(s);
  };
  try {
    const r = await window.piximi.segment(u, opts);
    return { ok: true, labels: enc(r.labels), dtype: r.labels.constructor.name, width: r.width,
             height: r.height, count: r.count, backend: r.backend, model: r.model, timings: r.timings,
             diameter: r.diameter, diameter_estimated: r.diameter_estimated, scale: r.scale,
             augmented: r.augmented,
             channels: r.channels ?? null, nuclei_count: r.nuclei_count ?? null,
             nuclei_skipped: r.nuclei_skipped ?? null,
             nuclei_labels: r.nuclei_labels ? enc(r.nuclei_labels) : null,
             nuclei_dtype: r.nuclei_labels ? r.nuclei_labels.constructor.name : null,
             columns: r.measurements ? Object.keys(r.measurements) : null };
  } catch (e) {
    return { ok: false, isError: e instanceof Error, name: e.name, message: String(e.message) };
  }
}
"""


def segment_in_page(page, data: bytes, **opts) -> dict:
    """``window.piximi.segment(data, opts)`` in a Playwright page: the result with ``labels`` as a
    numpy array, or ``{"ok": False, "name", "message"}`` for the error the page threw."""
    import base64

    import numpy as np

    res = page.evaluate(SEGMENT_JS, [base64.b64encode(data).decode(), opts])
    if res["ok"]:
        dtype = {"Uint16Array": np.uint16, "Uint32Array": np.uint32}[res["dtype"]]
        res["labels"] = np.frombuffer(base64.b64decode(res["labels"]), dtype).reshape(
            res["height"], res["width"])
        if res.get("nuclei_labels"):
            dtype = {"Uint16Array": np.uint16, "Uint32Array": np.uint32}[res["nuclei_dtype"]]
            res["nuclei_labels"] = np.frombuffer(base64.b64decode(res["nuclei_labels"]), dtype).reshape(
                res["height"], res["width"])
    return res
