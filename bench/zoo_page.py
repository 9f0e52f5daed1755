"""Every zoo variant in the page: its model time in WebAssembly against native, and its WebGPU output.

    python -m bench.zoo_page [--threads 2] [--runs 20] [--variants ID ...] [--no-webgpu]

For each row of ``models/zoo.json`` (ZOO.md), one run on this machine times
``InferenceSession.run`` on a 1×C×512×512 input in onnxruntime-web's WASM
build (headless Chromium, cross-origin isolated, ``--threads`` threads; median
of the last half of ``--runs`` runs, after the browser's optimizing tier has
compiled the hot code) and in native onnxruntime (same threads, same input,
median of ``--runs``), and runs a 128×128 crop of the StarDist sample on
WebGPU (SwiftShader: exact, too slow to time) against native onnxruntime: the
share of pixels of the same most likely class, and the largest probability
difference. Model time only; ``python -m bench --zoo`` times whole pipelines
of the shipped models.

Variants whose trained weights are on this machine (shipped files, exports in
``runs/zoo``) run those; the others run their architecture with seeded random
weights (``training.zoo_report.variant_onnx``): the same operators and shapes,
so the same time, but their WebGPU check only tests operators. Writes the
figures into each row's ``page`` entry of ``models/zoo.json``; ``python build.py
zoo-report --table-only`` redraws ZOO.md. Needs torch for the random-weight
files and ``../shared/data`` to calibrate their int8 twins.
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ortweb_builds import RUN_JS  # noqa: E402  (runs a worker's code once in the page)

BUILDS = {"wasm": "ort.wasm.min.mjs", "webgpu": "ort.min.mjs"}
CHECK_SIZE = 128

# One module worker per session: imports a build, creates the session, runs it.
WORKER_JS = """
self.onmessage = async (ev) => {
  const { origin, build, ep, threads, model, shape, data, runs } = ev.data;
  try {
    const ort = await import(`${origin}/ort/${build}`);
    ort.env.wasm.wasmPaths = `${origin}/ort/`;
    ort.env.wasm.numThreads = threads;
    const bytes = new Uint8Array(await (await fetch(`${origin}/zoo/${model}`)).arrayBuffer());
    const session = await ort.InferenceSession.create(bytes, { executionProviders: [ep],
                                                              graphOptimizationLevel: "all" });
    const x = Float32Array.from(data);
    const feeds = { [session.inputNames[0]]: new ort.Tensor("float32", x, shape) };
    const times = [];
    let out;
    for (let i = 0; i < runs; i++) {
      const t = performance.now();
      out = await session.run(feeds);
      times.push(performance.now() - t);
    }
    const y = out[session.outputNames[0]];
    const output = runs === 1 ? Array.from(await y.getData()) : null;
    await session.release();
    self.postMessage({ times, output, dims: y.dims });
  } catch (e) {
    self.postMessage({ error: String(e) });
  }
};
"""

@functools.lru_cache
def inputs(channels: int) -> tuple[np.ndarray, np.ndarray]:
    """The StarDist sample, percentile-normalized: 512² for timing and a 128² crop for WebGPU,
    as ``(1, channels, H, W)`` float32 (gray repeated for RGB models)."""
    from piximi_py.io import read_image
    from piximi_py.preprocess import normalize_percentile
    from tools.samples import stardist_sample

    image = normalize_percentile(read_image(stardist_sample()[0])).astype(np.float32)
    full = np.repeat(image[None, None], channels, 1)
    return np.ascontiguousarray(full), np.ascontiguousarray(full[..., 192:192 + CHECK_SIZE, 256:256 + CHECK_SIZE])


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess, x: np.ndarray) -> np.ndarray:
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def native_ms(path: Path, x: np.ndarray, threads: int, runs: int) -> float:
    """Median time of ``runs`` runs after one warm-up, in ms."""
    sess = session(path, threads)
    run(sess, x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run(sess, x)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def site_dir(files: dict[str, Path], tmp: Path) -> Path:
    """A folder to serve: the site's onnxruntime-web build and the model files, linked."""
    from tools.site import DIST, build_site

    build_site()
    (tmp / "ort").symlink_to(DIST / "ort")
    (tmp / "zoo").mkdir()
    for vid, path in files.items():
        (tmp / "zoo" / f"{vid}.onnx").symlink_to(path.resolve())
    (tmp / "index.html").write_text("<!doctype html><title>zoo bench</title>")
    return tmp


def in_browser(files: dict[str, Path], jobs: list[tuple], *, threads: int, webgpu: bool) -> dict:
    """``jobs``: (variant, execution provider, input, runs) -> {variant: the worker's result}."""
    from playwright.sync_api import sync_playwright

    from tools.browser import launch
    from tools.site import serve_background

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        server, origin = serve_background(0, site_dir(files, Path(tmp)))
        try:
            with sync_playwright() as p:
                browser = launch(p, webgpu=webgpu)
                page = browser.new_page()
                page.set_default_timeout(600_000)
                page.goto(f"{origin}/index.html")
                for vid, ep, x, runs in jobs:
                    cfg = {"origin": origin, "build": BUILDS[ep], "ep": ep, "threads": threads,
                           "model": f"{vid}.onnx", "shape": list(x.shape), "data": x.ravel().tolist(),
                           "runs": runs}
                    out[vid] = page.evaluate(RUN_JS, [WORKER_JS, cfg])
                    print(f"  {ep} {vid}: {out[vid].get('error') or 'ok'}", flush=True)
                browser.close()
        finally:
            server.shutdown()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.zoo_page", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--variants", nargs="*", help="zoo rows (default: all of models/zoo.json)")
    ap.add_argument("--no-webgpu", action="store_true", help="skip the WebGPU check")
    args = ap.parse_args(argv)

    from training.zoo import VARIANTS
    from training.zoo_report import REPORT, update_report, variant_onnx

    cache = ROOT / ".cache" / "zoo_architectures"
    rows = json.loads(REPORT.read_text())["variants"]
    names = args.variants or list(rows)
    unknown = [vid for vid in names if vid not in rows]
    if unknown:
        ap.error(f"not rows of {REPORT.name}: {', '.join(unknown)}")
    files, figures, reference, x = {}, {}, {}, {}
    for vid in names:
        files[vid], trained = variant_onnx(vid, cache)
        figures[vid] = {"trained_weights": trained}
        float_parent = vid.removesuffix("_fp16")
        base = float_parent.removesuffix("_int8")
        full, crop = inputs(VARIANTS[base].get("channels", 1))
        x[vid] = full, crop
        # the WebGPU reference: native float32 (an fp16 file runs only on WebGPU: its float parent's output)
        reference[vid] = run(session(files[vid] if float_parent == vid else variant_onnx(float_parent, cache)[0],
                                     1), crop)
        figures[vid]["native_model_ms"] = native_ms(files[vid], full, args.threads, args.runs) \
            if float_parent == vid else None
        print(f"native {vid}: {figures[vid]['native_model_ms']}", flush=True)

    wasm = in_browser(files, [(vid, "wasm", x[vid][0], args.runs) for vid in names if not vid.endswith("_fp16")],
                      threads=args.threads, webgpu=False)
    for vid, r in wasm.items():
        times = r.get("times")
        figures[vid]["wasm_model_ms"] = statistics.median(times[len(times) // 2:]) if times else None
        figures[vid]["wasm_error"] = r.get("error")
    if not args.no_webgpu:
        gpu = in_browser(files, [(vid, "webgpu", x[vid][1], 1) for vid in names], threads=1, webgpu=True)
        for vid, r in gpu.items():
            if r.get("output") is None:
                figures[vid]["webgpu"] = {"error": r.get("error")}
                continue
            got = np.asarray(r["output"], np.float32).reshape(r["dims"])
            figures[vid]["webgpu"] = {
                "same_class": float((got.argmax(1) == reference[vid].argmax(1)).mean()),
                "max_abs_diff": float(np.abs(got - reference[vid]).max()) if np.isfinite(got).all() else None}

    print(f"\nmodel time, 1×C×512×512, {args.threads} threads, one run of this machine; WebGPU: "
          f"{CHECK_SIZE}² crop on SwiftShader against native onnxruntime (fp16: against its float32 parent)")
    print("| variant | weights | native ms | page WASM ms | page / native | WebGPU same class | WebGPU max |Δp| |")
    print("|---|---|---|---|---|---|---|")
    for vid in names:
        f = figures[vid]
        n, w, g = f["native_model_ms"], f.get("wasm_model_ms"), f.get("webgpu", {})
        cells = [vid, "trained" if f["trained_weights"] else "random", f"{n:.0f}" if n else "—",
                 f"{w:.0f}" if w else (f.get("wasm_error") or "—"), f"{w / n:.2f}" if n and w else "—",
                 f"{g['same_class']:.4f}" if "same_class" in g else (g.get("error") or "—"),
                 f"{g['max_abs_diff']:.1e}" if g.get("max_abs_diff") is not None else "—"]
        print("| " + " | ".join(cells) + " |")
    # --no-webgpu keeps the WebGPU figures of an earlier run
    update_report(variants={vid: {"page": {**rows[vid].get("page", {}), **figures[vid]}} for vid in names})
    print(f"wrote the page figures into {REPORT.relative_to(ROOT)}; `python build.py zoo-report --table-only` "
          "redraws ZOO.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
