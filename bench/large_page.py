"""A large 16-bit image segmented in the page (headless Chromium, WASM):
wall time, time per megapixel and the worker's WebAssembly heap afterwards
(it only grows, so it is the peak), against one 512×512 image.

    .venv/bin/python -m bench.large_page --size 4096 [--size 8192]

The image is the real StarDist sample (CC0) mirrored and tiled to N×N.
Writes bench/large_page.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tiled_image(size: int):
    import numpy as np
    import tifffile

    from tools.samples import stardist_sample

    base = tifffile.imread(stardist_sample()[0]).astype(np.uint16)
    block = np.block([[base, base[:, ::-1]], [base[::-1], base[::-1, ::-1]]])
    reps = -(-size // block.shape[0])
    return np.tile(block, (reps, reps))[:size, :size].copy()


def main(argv=None) -> int:
    import tifffile

    from bench import app_page

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, action="append")
    args = ap.parse_args(argv)
    tmp = ROOT / ".cache" / "large_page"
    tmp.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in [512] + (args.size or [4096]):
        path = tmp / f"tiled_{size}.tif"
        if not path.exists():
            tifffile.imwrite(path, tiled_image(size))
        with app_page("?backend=wasm", timeout_ms=1_800_000) as (page, _):  # a fresh worker (and heap) per size
            heap0 = page.evaluate("window.piximi.memory()")["wasm_heap_bytes"]
            t = time.perf_counter()
            with page.expect_file_chooser() as fc:
                page.click("#file")
            fc.value.set_files(str(path))
            page.wait_for_function("document.querySelector('#status').textContent.startsWith('Done')"
                                   " || !document.querySelector('#error').hidden", polling=1000)
            wall = time.perf_counter() - t
            err = page.text_content("#error") if page.is_visible("#error") else ""
            mem = page.evaluate("window.piximi.memory()")
            count = page.text_content("#count")
            timings = page.eval_on_selector_all("#timings tr", "rs => rs.map(r => r.textContent)")
        mp = size * size / 1e6
        rows.append({"size": size, "megapixels": mp, "seconds": wall, "s_per_megapixel": wall / mp,
                     "objects": count, "error": err, "timings": timings,
                     "wasm_heap_mib_before": heap0 / 2**20,
                     "wasm_heap_mib_after": mem["wasm_heap_bytes"] / 2**20})
        r = rows[-1]
        print(f"{size:>6}²  {mp:6.1f} MP  {wall:7.1f} s  {wall / mp:6.2f} s/MP  wasm heap "
              f"{r['wasm_heap_mib_before']:.0f} -> {r['wasm_heap_mib_after']:.0f} MiB  "
              f"{count} objects {err}", flush=True)
        (ROOT / "bench" / "large_page.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
