"""Decoding compressed TIFFs: the page (Pyodide: tifffile with this project's LZW, JPEG and
Zstandard decoders, ``piximi_py.codecs``) against CPython (tifffile with imagecodecs' native
codecs), one run, one machine.

    python -m bench.decode [--size 1024] [--repeats 3] [--threads 2]

The image is the StarDist sample (real uint16 nuclei) tiled to ``--size`` squared and
written uncompressed, Deflate, LZW, PackBits, Zstandard (uint16, with the horizontal
predictor where tifffile uses one) and JPEG (8-bit: JPEG TIFFs are 8-bit). Each file is
segmented in the page with the diameter given (no estimate) and without measurements;
the table gives the decode stage of its timings (``piximi_py.pipeline`` in the worker)
and CPython's ``piximi_py.io.read_image_bytes`` of the same bytes, medians of
``--repeats``. Absolute times on a shared 2-core machine are noisy; compare within a run.
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: (row name, tifffile compression, predictor, 8-bit)
CASES = (("uncompressed", None, None, False), ("Deflate", "zlib", "horizontal", False),
         ("LZW", "lzw", "horizontal", False), ("PackBits", "packbits", None, False),
         ("Zstandard", "zstd", "horizontal", False), ("JPEG (8-bit)", "jpeg", None, True))


def test_image(size: int) -> np.ndarray:
    """The StarDist sample (512², uint16) tiled to ``size`` x ``size``."""
    from piximi_py.io import read_image
    from tools.samples import stardist_sample

    plane = read_image(stardist_sample()[0])
    reps = -(-size // plane.shape[0])
    return np.ascontiguousarray(np.tile(plane, (reps, reps))[:size, :size])


def tiff_bytes(image: np.ndarray, compression, predictor, eight_bit: bool) -> bytes:
    import tifffile

    if eight_bit:
        lo, hi = np.percentile(image, (0.1, 99.9))
        image = (np.clip((image - lo) / max(hi - lo, 1), 0, 1) * 255).astype(np.uint8)
    buf = io.BytesIO()
    tifffile.imwrite(buf, image, compression=compression, predictor=predictor,
                     rowsperstrip=64 if compression else None)
    return buf.getvalue()


def native_ms(data: bytes, repeats: int) -> float:
    from bench.__main__ import median_ms
    from piximi_py.io import read_image_bytes

    read_image_bytes(data)
    return median_ms(lambda: read_image_bytes(data), repeats)


def page_ms(page, data: bytes, repeats: int, diameter: float) -> tuple[float, int]:
    """Median decode stage in the page, and the object count (all runs agree on it)."""
    from tools.browser import segment_in_page

    runs = [segment_in_page(page, data, backend="wasm", diameter=diameter, measure=False)
            for _ in range(repeats + 1)]
    bad = next((r for r in runs if not r["ok"]), None)
    if bad:
        raise RuntimeError(f"{bad['name']}: {bad['message']}")
    return statistics.median(r["timings"]["decode"] for r in runs[1:]), int(runs[-1]["count"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.decode", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import piximi_py
    from bench import app_page

    image = test_image(args.size)
    files = {name: tiff_bytes(image, comp, pred, eight) for name, comp, pred, eight in CASES}
    diameter = piximi_py.find_model(piximi_py.load_models(), None).diameter
    rows = []
    with app_page(f"?threads={args.threads}") as (page, _):
        for name, data in files.items():
            web, count = page_ms(page, data, args.repeats, diameter)
            nat = native_ms(data, args.repeats)
            rows.append((name, len(data), nat, web, count))
    mp = args.size ** 2 / 1e6
    print(f"\nthe StarDist sample tiled to {args.size}x{args.size}, uint16 (JPEG: 8-bit), median of "
          f"{args.repeats}, {args.threads} threads; the page on WASM")
    print("| compression | file (MB) | CPython + imagecodecs (ms) | page (ms) | page / CPython | page (ms/MP) | objects |")
    print("|---|---|---|---|---|---|---|")
    for name, size, nat, web, count in rows:
        print(f"| {name} | {size / 1e6:.2f} | {nat:.1f} | {web:.1f} | {web / nat:.1f} | {web / mp:.0f} | {count} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
