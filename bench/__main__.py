"""Benchmark: native onnxruntime vs the page (onnxruntime-web WASM), one run, one machine.

    python -m bench [--repeats 5] [--warmup 5] [--threads 2] [--image PATH] [--models ID ...] [--zoo [--webgpu]]
                    [--nuclei ID] [--augment]

Prints a table for the default model (or each of ``--models``) on a 512x512 image (the StarDist sample
unless ``--image`` is given): model-only and end-to-end latency (and the end to end split by
pipeline stage: decode, preprocess, diameter, inference, postprocess) with the diameter estimated,
the end to end with the diameter given (no estimate: what the estimate costs), natively and
in headless Chromium (WASM backend, same thread count), their ratios, and the
page's cold start to ``window.piximi.ready``. A whole-cell model (``--models
cells``) reads a two-channel image: without ``--image``, the StarDist sample
written as cytoplasm and nuclear channels (:func:`tools.samples.two_channel_sample`);
``--nuclei ID`` also segments its nuclear channel with that model and links each
cell to its nucleus, timed as the ``nuclei`` stage and counted in the end to end. ``--augment`` also
times the end to end averaged over scales (``augment=True``), diameter estimated. Absolute times on a shared
2-core machine are noisy; compare the ratios. The end-to-end modes (given, estimated, averaged) run
in turn, one run of each per round, and the cost of the estimate (of the average) is the median of
each round's ratio, so that a change in the machine's load between two blocks of runs does not
land on one side of it. Both runtimes first run each
model ``--warmup`` times unmeasured: the page's first runs are slower (about
250, then 125-195 ms against a steady 60-80 ms for the default model's
inference) while Chromium compiles onnxruntime-web's hot WebAssembly code with
its optimizing tier, so the figures are the steady state of a session.

``--webgpu`` also segments a 128x128 crop of the image with each model on
WebGPU (SwiftShader: exact, but too slow to time) and compares the labels with
CPython's: the zoo table's "WebGPU = CPython" column.
"""
from __future__ import annotations

import argparse
import base64
import statistics
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


#: The stages of ``piximi_py.pipeline.segment_async``'s timings, both runtimes ("diameter": the
#: estimate, with no diameter given).
STAGES = ("decode", "preprocess", "diameter", "inference", "postprocess", "nuclei")


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def native(image_bytes: bytes, threads: int, repeats: int, model: str | None = None, warmup: int = 1,
           nuclei: str | None = None, augment: bool = False) -> dict:
    """Native timings of one model; ``nuclei``: a nuclei model id that also segments and links
    the nuclear channel of a whole-cell model's image (:func:`piximi_py.pipeline.add_nuclei`)."""
    import piximi_py
    from piximi_py.backends.onnxruntime import OnnxRuntimeBackend
    from piximi_py.io import read_image_bytes
    from piximi_py.models import default_models_dir, find_model, reads_channels, reads_color
    from piximi_py import run_sync
    from piximi_py.pipeline import add_nuclei, prepare_input, run_tile, segment_async

    models = piximi_py.load_models()
    spec = find_model(models, model)
    backend = OnnxRuntimeBackend(default_models_dir() / spec.file, threads=threads)
    nuclei_spec = find_model(models, nuclei) if nuclei and reads_channels(spec) else None
    nuclei_backend = nuclei_spec and OnnxRuntimeBackend(default_models_dir() / nuclei_spec.file, threads=threads)

    async def segment(diameter, averaged=False):
        seg = await segment_async(image_bytes, spec, backend, diameter=diameter, augment=averaged)
        return await add_nuclei(seg, nuclei_spec, nuclei_backend) if nuclei_spec else seg

    x = prepare_input(read_image_bytes(image_bytes, color=reads_color(spec), keep_channels=reads_channels(spec)),
                      spec)
    for _ in range(warmup):  # as the pipeline runs a tile: over its flips where the model averages them
        run_sync(run_tile(x, spec, backend))
    model_ms = median_ms(lambda: run_sync(run_tile(x, spec, backend)), repeats)
    out = {"model": spec.id, "shape": x.shape[-2:], "model_ms": model_ms, "diameter": spec.diameter}
    modes = _modes(spec.diameter or None, augment)
    runs = {mode: [] for mode, _, _ in modes}
    for i in range(warmup + repeats):  # the modes in turn: a drift in the machine's load moves each alike
        for mode, diameter, averaged in modes:
            t = time.perf_counter()
            timings = run_sync(segment(diameter, averaged)).timings
            if i >= warmup:
                runs[mode].append({**timings, "wall": (time.perf_counter() - t) * 1000})
    out.update(_summaries(runs, "wall"))
    out["e2e_ms"], out["stages_ms"] = out["auto_ms"], out["auto_stages_ms"]
    return out


def _modes(diameter, augment: bool) -> list:
    """(mode, diameter, averaged over scales) of each timed end to end: "fixed", the diameter given as
    the model's own (no estimate, no rescaling: the pipeline as it was before the size step); "auto",
    estimated, as the page and API run by default; "augment", estimated and averaged over scales."""
    return [("fixed", diameter, False), ("auto", None, False)] + ([("augment", None, True)] if augment else [])


def _summaries(runs: dict, total: str) -> dict:
    """Per mode of ``runs`` (``{mode: [timings of each run]}``, the modes run in turn): the median
    end to end (key ``total``) and stages, and the medians of the paired ratios of the estimate
    (auto / fixed) and of the average over scales (augment / auto): a ratio of two runs made one
    after the other, rather than of two medians taken minutes apart."""
    out = {}
    for mode, rs in runs.items():
        out[f"{mode}_ms"] = statistics.median(r[total] for r in rs)
        out[f"{mode}_stages_ms"] = {k: statistics.median(r.get(k, 0.0) for r in rs) for k in STAGES}
    for name, (a, b) in {"estimate_ratio": ("auto", "fixed"), "augment_ratio": ("augment", "auto")}.items():
        if a in runs and b in runs:
            out[name] = statistics.median(x[total] / y[total] for x, y in zip(runs[a], runs[b]))
    return out


def browser(images: dict, threads: int, repeats: int, models=(None,), warmup: int = 1,
            diameters: dict | None = None, nuclei: dict | None = None, augment: bool = False) -> dict:
    """Per model id: page timings (WASM) of its image file's bytes (``images[model]``) from one
    page session, with the diameter estimated ("auto") and given as the model's own
    (``diameters[model]``, "fixed"); plus the cold start. ``nuclei[model]``: a nuclei model id
    whose nuclei are segmented and linked too (whole-cell models)."""
    from bench import app_page

    results = {}
    with app_page(f"?threads={threads}") as (page, cold_ms):
        for model in models:
            entry = {"cold_ms": cold_ms}
            modes = [list(m) for m in _modes((diameters or {}).get(model), augment)]
            runs = page.evaluate(
                """async ([b64, n, model, warmup, modes, nuclei]) => {
                    const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                    const out = Object.fromEntries(modes.map(([mode]) => [mode, []]));
                    for (let i = 0; i < n + warmup; i++) {
                      for (const [mode, diameter, augment] of modes) {  // in turn, as natively
                        const r = await window.piximi.segment(bytes.slice(), {backend: "wasm", diameter,
                                                                              model: model || undefined,
                                                                              nuclei: nuclei || undefined,
                                                                              augment});
                        if (i >= warmup) out[mode].push({...r.timings, backend: r.backend, count: r.count});
                      }
                    }
                    return out;
                }""", [base64.b64encode(images[model]).decode(), repeats, model, warmup, modes,
                       (nuclei or {}).get(model)])
            first = next(iter(runs.values()))[0]
            entry.update(backend=first["backend"], **_summaries(runs, "total"))
            for mode, rs in runs.items():
                entry[f"{mode}_roundtrip_ms"] = (statistics.median(r["roundtrip"] for r in rs)
                                                 if "roundtrip" in rs[0] else float("nan"))
            # the model step: the inference stage of a run without the estimate (with it, the estimate's
            # first pass is the model step and the inference stage only reuses it)
            entry.update(model_ms=entry["fixed_stages_ms"]["inference"], e2e_ms=entry["auto_ms"],
                         roundtrip_ms=entry["auto_roundtrip_ms"], stages_ms=entry["auto_stages_ms"])
            results[model] = entry
    return results


def webgpu_parity(crop, models) -> dict:
    """Per model id: do WebGPU labels in the page equal CPython's on ``crop``? (and the worst object IoU)"""
    import io

    import numpy as np
    import tifffile

    import piximi_py
    from bench import app_page
    from piximi_py.metrics import average_precision, iou_matrix
    from tools.browser import segment_in_page

    buf = io.BytesIO()
    tifffile.imwrite(buf, crop)
    out = {}
    with app_page(timeout_ms=600_000, webgpu=True) as (page, _):
        for model in models:
            r = segment_in_page(page, buf.getvalue(), backend="webgpu", **({"model": model} if model else {}))
            if not r["ok"]:
                raise RuntimeError(f"{model or 'default'} on WebGPU: {r['name']}: {r['message']}")
            gpu = r["labels"]
            ref = piximi_py.segment_image(crop, model).labels
            equal = bool(np.array_equal(gpu, ref))
            iou = 1.0 if equal else (float(iou_matrix(ref, gpu).max(axis=1).min()) if ref.max() and gpu.max()
                                     else 0.0)
            out[model] = {"backend": r["backend"], "webgpu_equal": equal, "webgpu_min_iou": iou,
                          "webgpu_ap50": 1.0 if equal else float(average_precision(ref, gpu)),
                          "objects": int(ref.max())}
    return out


def shipped_variants() -> dict:
    """Shipped model id -> its zoo variant, the int8 companions (``ID_int8``) included."""
    from training.cli import SHIPPED

    out = {}
    for model_id, cfg in SHIPPED.items():
        out[model_id] = cfg["variant"]
        if cfg.get("int8"):
            out[f"{model_id}_int8"] = cfg["variant"] + "_int8"
    return out


def reads_channels(model: str | None) -> bool:
    """Does this model id read several image channels (a whole-cell model)?"""
    import piximi_py
    from piximi_py.models import find_model, reads_channels as multi

    return multi(find_model(piximi_py.load_models(), model))


def default_image(model: str | None) -> Path:
    """The StarDist sample; for a whole-cell model, written as its two channels."""
    from tools.samples import stardist_sample, two_channel_sample

    return two_channel_sample() if reads_channels(model) else stardist_sample()[0]


def write_index_latency(latency: dict, index_path: Path = ROOT / "models" / "index.json") -> None:
    """The model picker's speeds: ``latency_ms_512`` of each model id, natively and in the page, one run."""
    import json

    index = json.loads(index_path.read_text())
    for m in index["models"]:
        if m["id"] in latency:
            m["latency_ms_512"] = latency[m["id"]]
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    print(f"wrote the speeds shown by the model picker into {index_path}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", type=Path, help="image file (default: the StarDist 512x512 sample)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=5, help="unmeasured runs per model first, in both runtimes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", nargs="*", help="model ids (default: the default model)")
    ap.add_argument("--zoo", action="store_true", help="every shipped model; also record the page columns in models/zoo.json")
    ap.add_argument("--webgpu", action="store_true", help="also check WebGPU labels against CPython (128x128)")
    ap.add_argument("--picker", nargs="*", metavar="ID",
                    help="write the end-to-end times measured of these models (none named: all) into "
                         "models/index.json, the model picker's speeds; --zoo does it for every shipped model")
    ap.add_argument("--augment", action="store_true",
                    help="also time the end to end averaged over scales (augment=True), diameter estimated")
    ap.add_argument("--nuclei", metavar="ID",
                    help="whole-cell models: also segment the nuclear channel with this nuclei model and link "
                         "each cell to its nucleus (timed as the nuclei stage)")
    args = ap.parse_args(argv)
    models = args.models or (list(shipped_variants()) if args.zoo else [None])
    images = {m: args.image or default_image(m) for m in models}
    data = {m: p.read_bytes() for m, p in images.items()}
    nuclei = {m: args.nuclei for m in models if args.nuclei and reads_channels(m)}
    nat = {m: native(data[m], args.threads, args.repeats, m, args.warmup, nuclei.get(m), args.augment)
           for m in models}
    webs = browser(data, args.threads, args.repeats, models, args.warmup,
                   diameters={m: nat[m]["diameter"] or None for m in models}, nuclei=nuclei, augment=args.augment)
    for m in models:
        n, web = nat[m], webs[m]
        h, w = n["shape"]
        linked = f", nuclei by {nuclei[m]!r} linked" if m in nuclei else ""
        print(f"\nmodel {n['model']!r}{linked}, image {images[m].name} ({w}x{h}), {args.threads} threads, "
              f"median of {args.repeats} after {args.warmup} unmeasured")
        print("| measure | native onnxruntime | browser " + web["backend"] + " | browser / native |")
        print("|---|---|---|---|")
        print(f"| model only (ms; page: inference stage without the estimate) | {n['model_ms']:.0f} | "
              f"{web['model_ms']:.0f} | {web['model_ms'] / n['model_ms']:.2f} |")
        print(f"| end to end, in Python (ms) | {n['e2e_ms']:.0f} | {web['e2e_ms']:.0f} | {web['e2e_ms'] / n['e2e_ms']:.2f} |")
        print(f"| end to end, from JS incl. transfer (ms) | | {web['roundtrip_ms']:.0f} | {web['roundtrip_ms'] / n['e2e_ms']:.2f} |")
        for stage in STAGES:   # the end-to-end time split by pipeline stage (piximi_py.pipeline timings)
            a, b = n["stages_ms"][stage], web["stages_ms"][stage]
            if stage == "nuclei" and m not in nuclei:
                continue
            print(f"| stage {stage}, in Python (ms) | {a:.1f} | {b:.1f} | {b / a if a else float('nan'):.2f} |")
        mp = h * w / 1e6
        print(f"| end to end, diameter given (no estimate) (ms) | {n['fixed_ms']:.0f} | {web['fixed_ms']:.0f} | "
              f"{web['fixed_ms'] / n['fixed_ms']:.2f} |")
        print(f"| page per megapixel: estimated diameter / given (ms/MP) | | {web['auto_ms'] / mp:.0f} / "
              f"{web['fixed_ms'] / mp:.0f} | {web['estimate_ratio']:.2f} (cost of the estimate: median of "
              f"{args.repeats} paired runs; natively {n['estimate_ratio']:.2f}) |")
        if args.augment:
            print(f"| end to end, averaged over scales (augment) (ms) | {n['augment_ms']:.0f} | "
                  f"{web['augment_ms']:.0f} | {web['augment_ms'] / n['augment_ms']:.2f} |")
            print(f"| page per megapixel: averaged over scales / not (ms/MP) | | {web['augment_ms'] / mp:.0f} / "
                  f"{web['auto_ms'] / mp:.0f} | {web['augment_ratio']:.2f} (cost of the average: median of paired "
                  f"runs) |")
    print(f"\npage cold start to ready: {next(iter(webs.values()))['cold_ms']:.0f} ms")
    gpu = {}
    if args.webgpu:
        from piximi_py.io import read_image_bytes

        gpu = webgpu_parity(read_image_bytes(data[models[0]])[:128, :128].copy(), models)
        print("\n| model | WebGPU labels = CPython | AP@0.5 WebGPU vs CPython | worst object IoU | objects |\n"
              "|---|---|---|---|---|")
        for m, g in gpu.items():
            print(f"| {m or 'default'} | {'yes' if g['webgpu_equal'] else 'no'} ({g['backend']}) | "
                  f"{g['webgpu_ap50']:.3f} | {g['webgpu_min_iou']:.3f} | {g['objects']} |")
    if args.zoo:  # the zoo table's browser columns, keyed by zoo variant, into models/zoo.json
        from training.zoo_report import REPORT, update_report

        variant = shipped_variants()
        update_report(browser={variant[m]: {"model": m, "e2e_ms": webs[m]["e2e_ms"],
                                            "native_e2e_ms": nat[m]["e2e_ms"],
                                            **({k: gpu[m][k] for k in ("webgpu_equal", "webgpu_min_iou", "webgpu_ap50")}
                                               if m in gpu and gpu[m]["backend"] == "webgpu" else {})}
                               for m in models})
        print(f"wrote the browser columns into {REPORT}; `python build.py zoo-report --table-only` redraws ZOO.md")
    if args.zoo or args.picker is not None:
        write_index_latency({m: {"native": round(nat[m]["e2e_ms"]), "wasm": round(webs[m]["e2e_ms"])}
                             for m in models if m and (args.zoo or not args.picker or m in args.picker)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
