"""Which onnxruntime-web build runs the page's WASM sessions: the plain WASM build against the JSEP one.

    python -m bench.ortweb_builds [--threads 2] [--runs 30] [--models nuclei sam_fast ...]

onnxruntime-web ships two builds that can run the WASM execution provider:
``ort.wasm.min.mjs`` (plain) and ``ort.min.mjs`` (JSEP, which also carries
WebGPU). For each shipped model file of the page's WASM runtime, this times
``InferenceSession.run`` in headless Chromium in a fresh worker per build (the
site's own files from ``dist/``, cross-origin isolated, ``--threads`` threads,
inputs of the model's shape filled with fixed values) and prints the median of
the last half of ``--runs`` runs (the browser compiles hot WebAssembly code
with its optimizing tier only after some runs: the first-run and first-half
medians show that warm-up) and the ratio JSEP / plain. Model time only: the
Python around it is the same for both (``python -m bench`` for end to end).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUILDS = ("ort.wasm.min.mjs", "ort.min.mjs")

# One module worker per measurement: imports a build, creates one session, times runs.
WORKER_JS = """
self.onmessage = async (ev) => {
  const { origin, build, threads, model, inputs, runs } = ev.data;
  try {
    const ort = await import(`${origin}/ort/${build}`);
    ort.env.wasm.wasmPaths = `${origin}/ort/`;
    ort.env.wasm.numThreads = threads;
    const bytes = new Uint8Array(await (await fetch(`${origin}/models/${model}`)).arrayBuffer());
    const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"],
                                                              graphOptimizationLevel: "all" });
    const feeds = {};
    for (const [name, shape, lo, hi] of inputs) {   // lo: an array of values, or a range with hi
      const n = shape.reduce((a, b) => a * b, 1);
      const data = Array.isArray(lo) ? Float32Array.from(lo) : new Float32Array(n);
      if (!Array.isArray(lo)) for (let i = 0; i < n; i++) data[i] = lo + (hi - lo) * (((i * 2654435761) % 1000) / 1000);
      feeds[name] = new ort.Tensor("float32", data, shape);
    }
    const times = [];
    for (let i = 0; i < runs; i++) {
      const t = performance.now();
      await session.run(feeds);
      times.push(performance.now() - t);
    }
    await session.release();
    self.postMessage({ times, isolated: self.crossOriginIsolated });
  } catch (e) {
    self.postMessage({ error: String(e) });
  }
};
"""

RUN_JS = """async ([code, cfg]) => {
  const url = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
  const w = new Worker(url, { type: "module" });
  const out = await new Promise((res) => { w.onmessage = (e) => res(e.data); w.postMessage(cfg); });
  w.terminate();
  URL.revokeObjectURL(url);
  return out;
}"""


def wasm_files(models: list[str] | None) -> dict[str, str]:
    """Model id (or ``id:role`` for SAM parts) -> the ONNX file the page's WASM runtime loads."""
    import piximi_py
    from piximi_py.models import PROMPT_TASKS
    from piximi_py.sam import load_sam_spec

    out = {}
    for spec in piximi_py.load_models():
        if models and spec.id not in models:
            continue
        if spec.task in PROMPT_TASKS:
            sam = load_sam_spec(model_id=spec.id)
            for role in ("encoder", "decoder"):
                out[f"{spec.id}:{role}"] = sam.file(role, "wasm")
        elif not spec.id.endswith("_int8") or models:
            out[spec.id] = spec.file
    return out


def feeds_of(path: Path) -> list:
    """``[name, shape, lo, hi]`` (values in a range) or ``[name, shape, values]`` per input:
    SAM decoders get one box (two corner points)."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    out = []
    for inp in model.graph.input:
        dims = [d.dim_value or 0 for d in inp.type.tensor_type.shape.dim]
        if inp.name == "point_coords":
            out.append([inp.name, [1, 2, 2], 0, 255])
        elif inp.name == "point_labels":
            out.append([inp.name, [1, 2], [2, 3]])   # top-left, bottom-right box corner
        else:
            # free batch 1, free height and width 512 (the benchmarks' image size)
            out.append([inp.name, [d or (512 if i >= 2 else 1) for i, d in enumerate(dims)], -1, 1])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ortweb_builds", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--models", nargs="*", help="model ids (default: every shipped model but the int8 twins)")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "ortweb_builds.json")
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from tools.browser import launch
    from tools.site import DIST, build_site, serve_background

    build_site()
    files = wasm_files(args.models)
    server, origin = serve_background(0)
    results = {}
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page()
            page.goto(f"{origin}/build.json")   # a same-origin, cross-origin-isolated document
            for key, file in files.items():
                inputs = feeds_of(DIST / "models" / file)
                for build in BUILDS:
                    r = page.evaluate(RUN_JS, [WORKER_JS, {"origin": origin, "build": build, "threads": args.threads,
                                                           "model": file, "inputs": inputs, "runs": args.runs}])
                    if "error" in r:
                        raise RuntimeError(f"{key} in {build}: {r['error']}")
                    t = r["times"]
                    half = len(t) // 2
                    results.setdefault(key, {"file": file})[build] = {
                        "first_ms": t[0], "first_half_ms": statistics.median(t[:half]),
                        "steady_ms": statistics.median(t[half:]), "all_ms": [round(x, 1) for x in t],
                        "cross_origin_isolated": r["isolated"]}
            browser.close()
    finally:
        server.shutdown()

    print(f"\nonnxruntime-web {BUILDS[0]} (plain WASM) against {BUILDS[1]} (JSEP), WASM provider, "
          f"{args.threads} threads, headless Chromium, session.run only; steady = median of runs "
          f"{args.runs // 2 + 1}-{args.runs}")
    print("| model | file | plain: first / first half / steady (ms) | JSEP: first / first half / steady (ms) "
          "| JSEP / plain, steady |")
    print("|---|---|---|---|---|")
    for key, r in results.items():
        a, b = r[BUILDS[0]], r[BUILDS[1]]
        fmt = lambda x: f"{x['first_ms']:.0f} / {x['first_half_ms']:.0f} / {x['steady_ms']:.0f}"  # noqa: E731
        print(f"| {key} | {r['file']} | {fmt(a)} | {fmt(b)} | {b['steady_ms'] / a['steady_ms']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "runs": args.runs, "models": results}, indent=1))
        print(f"wrote {args.json.relative_to(ROOT) if args.json.is_relative_to(ROOT) else args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
