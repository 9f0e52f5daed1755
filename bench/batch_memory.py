"""Memory over a long batch in the page: 200 real images through
window.piximi.segment(..., {batch: true}) (the batch zip is built as it goes),
the worker's WebAssembly heap and live Python objects recorded every 10 images,
and the main page's JavaScript heap after a forced garbage collection (DevTools
protocol ``HeapProfiler.collectGarbage``: without it the figure is whatever
the collector has not yet reclaimed).

    .venv/bin/python -m bench.batch_memory [--images 200]

Images: 256×256 crops of the StarDist sample (CC0) at 200 offsets (real
nuclei, every crop different). Growth = heap after the last 50 vs after the
first 50. Writes bench/batch_memory.json.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    import numpy as np
    import tifffile

    from bench import app_page
    from tools.samples import stardist_sample

    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=200)
    args = ap.parse_args(argv)
    sample = tifffile.imread(stardist_sample()[0])
    rng = np.random.default_rng(0)
    rows = []
    with app_page("?backend=wasm", timeout_ms=300_000) as (page, _):
        page.evaluate("window.piximi.memory()")
        devtools = page.context.new_cdp_session(page)
        t0 = time.perf_counter()
        for i in range(args.images):
            y, x = rng.integers(0, 256, 2)
            b = io.BytesIO()
            tifffile.imwrite(b, sample[y:y + 256, x:x + 256])
            count = page.evaluate("""async ([b64, name]) => {
              const u = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
              return (await window.piximi.segment(u, {filename: name, batch: true})).count; }""",
                                  [base64.b64encode(b.getvalue()).decode(), f"img{i:03d}.tif"])
            if (i + 1) % 10 == 0:
                m = page.evaluate("window.piximi.memory()")
                devtools.send("HeapProfiler.collectGarbage")
                js = devtools.send("Runtime.getHeapUsage")["usedSize"]
                rows.append({"images": i + 1, "count_last": count, "s": time.perf_counter() - t0,
                             "wasm_heap_mib": m["wasm_heap_bytes"] / 2**20,
                             "python_objects": m["python_objects"],
                             "python_blocks": m["python_blocks"],
                             "batch_zip_mib": m["batch_zip_bytes"] / 2**20,
                             "page_js_heap_mib": (js or 0) / 2**20})
                r = rows[-1]
                print(f"{r['images']:4d} images  wasm heap {r['wasm_heap_mib']:7.1f} MiB  "
                      f"python objects {r['python_objects']:7d}  zip {r['batch_zip_mib']:5.2f} MiB  "
                      f"page JS heap {r['page_js_heap_mib']:6.1f} MiB  {r['s']:6.1f} s", flush=True)
    first = next(r for r in rows if r["images"] == 50)
    last = rows[-1]
    summary = {"images": args.images, "wasm_heap_first50_mib": first["wasm_heap_mib"],
               "wasm_heap_last_mib": last["wasm_heap_mib"],
               "growth_pct": 100 * (last["wasm_heap_mib"] / first["wasm_heap_mib"] - 1),
               "python_objects_first50": first["python_objects"],
               "python_objects_last": last["python_objects"],
               "page_js_heap_first50_mib": first["page_js_heap_mib"],
               "page_js_heap_last_mib": last["page_js_heap_mib"], "rows": rows}
    print(f"wasm heap after 50: {first['wasm_heap_mib']:.1f} MiB, after {args.images}: "
          f"{last['wasm_heap_mib']:.1f} MiB ({summary['growth_pct']:+.1f}%); page JS heap after GC "
          f"{first['page_js_heap_mib']:.1f} -> {last['page_js_heap_mib']:.1f} MiB")
    (ROOT / "bench" / "batch_memory.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
