"""Benchmark of promptable segmentation (SAM): native onnxruntime vs the page (WASM).

    python -m bench.prompt [--models sam sam_fast] [--threads 2] [--prompts 10] [--crops 4] [--json bench/prompt.json]

Measured in one run on one machine, for each promptable model of the index
(``--models``, default all), on 256x256 crops of the StarDist sample:

* **embedding**: the encoder for one 256x256 window (crop -> model input ->
  embedding), one new crop at a time so nothing is cached; median over crops;
* **prompt**: decoder + post-processing (mask pasted back into the image) for
  one box prompt once the embedding is cached; median of ``--prompts`` boxes;
* **first prompt**: loading the model files, creating the sessions and, in the
  page, the decoder warm-up (``piximi_py.webprompt._warm_up_decoder``), whose
  runs are listed too.

Natively with :class:`piximi_py.sam.SamPredictor` on onnxruntime (``--threads``
intra-op threads) with the files of the page's WASM runtime (and, for
reference, the native runtime's files); in headless Chromium through
``window.piximi.prompt`` (``?backend=wasm&threads=N``), the same Python code in
Pyodide calling onnxruntime-web. Page numbers are the worker's own timings
(``timings`` of the result) plus the round trip seen from JavaScript.
Absolute times on a shared 2-core machine are noisy; compare the ratios.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: The page's bars (issue 5): per prompt once embedded, and per embedding.
BAR_PROMPT_MS = 50.0
BAR_EMBEDDING_MS = 1000.0


def crops(n: int) -> list[np.ndarray]:
    """``n`` different 256x256 crops of the StarDist sample (uint16)."""
    import tifffile

    from tools.samples import stardist_sample

    image = tifffile.imread(stardist_sample()[0])
    offsets = [(y, x) for y in range(0, 257, 64) for x in range(0, 257, 64)]
    if n > len(offsets):
        raise ValueError(f"at most {len(offsets)} crops")
    order = np.random.default_rng(0).permutation(len(offsets))[:n]
    return [np.ascontiguousarray(image[y:y + 256, x:x + 256]) for y, x in (offsets[i] for i in order)]


def boxes(n: int) -> list[list[int]]:
    """``n`` box prompts of 64-96 px: on a 256x256 image their window is the whole
    image (one 256x256 embedding), so they share it."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        w, h = rng.integers(64, 97, 2)
        x, y = rng.integers(0, 256 - w), rng.integers(0, 256 - h)
        out.append([int(x), int(y), int(x + w - 1), int(y + h - 1)])
    return out


def tiff(a: np.ndarray) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, a)
    return buf.getvalue()


def native(images, prompts, threads: int, runtime: str, warm: np.ndarray, model: str | None = None) -> dict:
    import time

    from piximi_py import run_sync, sam

    predictor = sam.load_predictor(model, threads=threads, runtime=runtime)
    spec = predictor.spec
    run_sync(predictor.set_image(warm, "warm-up"))
    run_sync(predictor.predict(boxes=prompts[0]))                 # warm-up (sessions, allocations)
    emb = []
    for i, img in enumerate(images):
        run_sync(predictor.set_image(img, f"crop{i}"))
        predictor.timings = {}
        run_sync(predictor.predict(boxes=prompts[0]))
        emb.append(predictor.timings["encoder"])
    dec, post, tot = [], [], []
    for b in prompts:
        predictor.timings = {}
        t = time.perf_counter()
        run_sync(predictor.predict(boxes=b))
        tot.append((time.perf_counter() - t) * 1000)
        assert "encoder" not in predictor.timings
        dec.append(predictor.timings["decoder"])
        post.append(predictor.timings["prompt"] - predictor.timings["decoder"])
    return {"runtime": runtime, "files": [spec.file("encoder", runtime), spec.file("decoder", runtime)],
            "embedding_ms": statistics.median(emb), "decoder_ms": statistics.median(dec),
            "postprocess_ms": statistics.median(post), "prompt_ms": statistics.median(tot),
            "embedding_all_ms": emb, "prompt_all_ms": tot}


PAGE_JS = """async ([crops, prompts, model]) => {
  const dec = (b) => Uint8Array.from(atob(b), (c) => c.charCodeAt(0));
  const opts = {backend: "wasm", model};
  const t0 = performance.now();
  const first = await window.piximi.prompt(dec(crops[0]), {boxes: prompts[0]}, opts);
  const firstMs = performance.now() - t0;   // loads + verifies the model files, creates both sessions
  const emb = [];
  for (const c of crops.slice(1)) {
    const r = await window.piximi.prompt(dec(c), {boxes: prompts[0]}, opts);
    emb.push(r.timings);
  }
  const last = await window.piximi.prompt(dec(crops[crops.length - 1]), {boxes: prompts[0]}, opts);
  const dec_ = [];
  for (const b of prompts) {
    const r = await window.piximi.prompt(last.image_id, {boxes: b}, opts);
    dec_.push({...r.timings, cached: r.cached});
  }
  return {first_ms: firstMs, first: first.timings, backend: first.backend, emb, dec: dec_,
          warm_up: first.timings.warm_up_ms || []};
}"""


def page(images, prompts, threads: int, warm: np.ndarray, model: str | None = None) -> dict:
    from bench import app_page

    with app_page(f"?backend=wasm&threads={threads}", timeout_ms=600_000) as (pg, ready_ms):
        # one warm-up crop (model load) + one new crop per measured embedding
        data = [base64.b64encode(tiff(a)).decode() for a in [warm] + list(images)]
        r = pg.evaluate(PAGE_JS, [data, prompts, model])
        isolated = pg.evaluate("crossOriginIsolated")
    assert all(d["cached"] for d in r["dec"]), "decoder prompts were not on a cached embedding"
    med = lambda rows, k: statistics.median(x[k] for x in rows)  # noqa: E731
    return {"backend": r["backend"], "threads": threads, "cross_origin_isolated": isolated,
            "ready_ms": ready_ms, "first_prompt_ms": r["first_ms"], "warm_up_ms": r["warm_up"],
            "embedding_ms": med(r["emb"], "embedding_ms"), "decoder_ms": med(r["dec"], "decoder_ms"),
            "postprocess_ms": med(r["dec"], "postprocess_ms"), "prompt_ms": med(r["dec"], "total_ms"),
            "prompt_roundtrip_ms": med(r["dec"], "roundtrip_ms"),
            "embedding_roundtrip_ms": med(r["emb"], "roundtrip_ms"),
            "embedding_all_ms": [x["embedding_ms"] for x in r["emb"]],
            "prompt_all_ms": [x["total_ms"] for x in r["dec"]]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.prompt", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", help="prompt-segmentation ids (default: all in models/index.json)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=10, help="box prompts on one cached embedding")
    ap.add_argument("--crops", type=int, default=4, help="256x256 crops, one embedding each")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "prompt.json")
    args = ap.parse_args(argv)

    warm, *images = crops(args.crops + 1)
    prompts = boxes(args.prompts)
    results = {}
    for model in args.models or prompt_models():
        results[model] = {"native": native(images, prompts, args.threads, "wasm", warm, model),
                          "native_files": native(images, prompts, args.threads, "native", warm, model),
                          "page": page(images, prompts, args.threads, warm, model)}

    print(f"\nPromptable segmentation, 256x256 crops of the StarDist sample, {args.threads} threads; "
          f"embedding: median of {args.crops} crops, prompt: median of {args.prompts} boxes. "
          "native: onnxruntime with the page's WASM files; page: Chromium, onnxruntime-web")
    print("| model | measure | native | page (WASM) | page / native | bar (page) |")
    print("|---|---|---|---|---|---|")
    rows = [("embedding, 256x256 window (ms)", "embedding_ms", BAR_EMBEDDING_MS),
            ("decoder per prompt, embedding cached (ms)", "decoder_ms", None),
            ("post-processing per prompt (ms)", "postprocess_ms", None),
            ("decoder + post-processing per prompt (ms)", "prompt_ms", BAR_PROMPT_MS)]
    fmt = lambda v: f"{v:.0f}" if v >= 10 else f"{v:.1f}"  # noqa: E731
    for model, r in results.items():
        nat, web = r["native"], r["page"]
        for name, key, bar in rows:
            ok = "" if bar is None else f"≤ {bar:.0f}: {'met' if web[key] <= bar else 'NOT met'}"
            print(f"| {model} | {name} | {fmt(nat[key])} | {fmt(web[key])} | {web[key] / nat[key]:.2f} | {ok} |")
        print(f"| {model} | prompt round trip from JS (ms) | | {web['prompt_roundtrip_ms']:.0f} | | |")
        warm = web["warm_up_ms"]
        print(f"| {model} | first prompt incl. loading the model (ms) | | {web['first_prompt_ms']:.0f} | | |")
        if warm:
            print(f"| {model} | of which decoder warm-up, {len(warm)} runs: first / last (ms) | | "
                  f"{sum(warm):.0f}: {warm[0]:.0f} / {warm[-1]:.0f} | | |")
    for model, r in results.items():
        print(f"{model}: WASM files {r['native']['files']}, cross-origin isolated: "
              f"{r['page']['cross_origin_isolated']}; native runtime's files {r['native_files']['files']}: "
              f"embedding {r['native_files']['embedding_ms']:.0f} ms, decoder + post-processing "
              f"{r['native_files']['prompt_ms']:.0f} ms")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "models": results}, indent=1))
        print(f"wrote {args.json.relative_to(ROOT) if args.json.is_relative_to(ROOT) else args.json}")
    return 0


def prompt_models() -> list[str]:
    """Ids of the prompt-segmentation models of ``models/index.json``."""
    import piximi_py
    from piximi_py.models import PROMPT_TASKS

    return [spec.id for spec in piximi_py.load_models() if spec.task in PROMPT_TASKS]


if __name__ == "__main__":
    sys.exit(main())
