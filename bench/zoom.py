"""Zoom and pan on a large segmented image in the page: frame intervals while the user moves.

    .venv/bin/python -m bench.zoom [--size 4096] [--model nuclei_fast] [--json bench/zoom.json]

Opens the real StarDist sample (512x512) and the same image mirrored and tiled
to ``--size`` squared (16-bit), segments each in headless Chromium (WASM), then
records ``requestAnimationFrame`` timestamps while Playwright's mouse zooms in
with the wheel around the pointer (20 notches), pans by dragging (30 moves) and
zooms out again (20 notches), one input per frame at most. Prints per image the
median, 95th percentile and worst frame interval and the frames slower than
50 ms. Smooth means the large image's figures equal the small one's: the view
is a CSS transform of the canvases, composited, never redrawn while moving.
Headless Chromium composites in software here, a lower bound for a real GPU.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECORD_JS = """() => {
  window.__frames = []; window.__recording = true;
  const tick = (t) => { window.__frames.push(t); if (window.__recording) requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
}"""
NEXT_FRAME_JS = "() => new Promise((r) => requestAnimationFrame(() => r()))"


def interactions(page) -> list[float]:
    """Zoom in, pan, zoom out over the viewport; the frame timestamps (ms) recorded meanwhile."""
    box = page.locator("#viewport").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.evaluate(RECORD_JS)
    for _ in range(20):
        page.mouse.wheel(0, -120)
        page.evaluate(NEXT_FRAME_JS)
    page.mouse.down()
    for i in range(30):
        page.mouse.move(cx + 8 * i, cy + 5 * i)
        page.evaluate(NEXT_FRAME_JS)
    page.mouse.up()
    for _ in range(20):
        page.mouse.wheel(0, 120)
        page.evaluate(NEXT_FRAME_JS)
    page.evaluate("window.__recording = false")
    return page.evaluate("window.__frames")


def summarize(frames: list[float]) -> dict:
    d = np.diff(np.asarray(frames, dtype=float))
    return {"frames": int(d.size), "median_ms": float(np.median(d)), "p95_ms": float(np.percentile(d, 95)),
            "max_ms": float(d.max()), "over_50ms": int((d > 50).sum())}


def main(argv=None) -> int:
    import tifffile

    from bench import app_page
    from bench.large_page import tiled_image

    ap = argparse.ArgumentParser(prog="python -m bench.zoom", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--model", default="nuclei_fast", help="segments the images first (the overlay is drawn)")
    ap.add_argument("--json", default=str(ROOT / "bench" / "zoom.json"))
    args = ap.parse_args(argv)
    tmp = ROOT / ".cache" / "large_page"
    tmp.mkdir(parents=True, exist_ok=True)
    rows = {}
    with app_page("?backend=wasm", timeout_ms=1_800_000) as (page, _):
        page.set_viewport_size({"width": 1280, "height": 900})
        page.select_option("#model", args.model)
        for size in (512, args.size):
            path = tmp / f"tiled_{size}.tif"
            if not path.exists():
                tifffile.imwrite(path, tiled_image(size))
            page.evaluate("document.querySelector('#status').textContent = 'pending'")
            page.set_input_files("#file", str(path))
            page.wait_for_function("document.querySelector('#status').textContent.startsWith('Done')"
                                   " || !document.querySelector('#error').hidden", polling=1000)
            if page.is_visible("#error"):
                raise SystemExit(f"{path.name}: {page.text_content('#error')}")
            page.click("#zoom-fit")
            rows[size] = {"objects": page.text_content("#count"), **summarize(interactions(page))}
    print(f"\nzoom + pan in the page (headless Chromium, software compositing), model {args.model}\n")
    print("| image | objects | frames | median frame (ms) | p95 (ms) | worst (ms) | frames > 50 ms |")
    print("|---|---|---|---|---|---|---|")
    for size, r in rows.items():
        print(f"| {size}² | {r['objects']} | {r['frames']} | {r['median_ms']:.1f} | {r['p95_ms']:.1f} | "
              f"{r['max_ms']:.1f} | {r['over_50ms']} |")
    Path(args.json).write_text(json.dumps({"model": args.model, "sizes": rows}, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
