"""Large-image figures (CPython, native onnxruntime): peak memory and time per
megapixel of tiled inference on an N×N 16-bit image vs one 512×512 image.

    .venv/bin/python -m bench.large --size 8192 [--size 2048]

Each size runs in a fresh process (peak RSS = ru_maxrss). The image is the real
StarDist sample (CC0) tiled to N×N with mirrored copies, so the content is
real nuclei at the real density. Writes bench/large.json.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _one(size: int) -> dict:
    import numpy as np
    import tifffile

    sys.path.insert(0, str(ROOT))
    from tools.samples import stardist_sample

    import piximi_py

    base = tifffile.imread(stardist_sample()[0]).astype(np.uint16)
    reps = -(-size // base.shape[0])
    block = np.block([[base, base[:, ::-1]], [base[::-1], base[::-1, ::-1]]])
    image = np.tile(block, (reps, reps))[:size, :size].copy()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    piximi_py.segment_image(image[:512, :512])  # load the model, warm up
    t = time.perf_counter()
    res = piximi_py.segment_image(image)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mp = size * size / 1e6
    return {"size": size, "megapixels": mp, "objects": res.count, "seconds": wall,
            "s_per_megapixel": wall / mp, "timings_ms": res.timings,
            "peak_rss_mib": peak, "rss_before_mib": rss0, "image_mib": image.nbytes / 2**20}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, action="append")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(_one(args.one)))
        return 0
    rows = []
    for size in [512] + (args.size or [8192]):
        out = subprocess.run([sys.executable, "-m", "bench.large", "--one", str(size)], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{r['size']:>6}²  {r['megapixels']:7.1f} MP  {r['seconds']:8.2f} s  "
              f"{r['s_per_megapixel']:6.3f} s/MP  peak RSS {r['peak_rss_mib']:7.0f} MiB  "
              f"{r['objects']} objects", flush=True)
    (ROOT / "bench" / "large.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
