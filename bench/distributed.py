"""Benchmark: images per second on a Dask LocalCluster of 1, 2, ... worker processes.

    python -m bench.distributed [--workers 1 2] [--images 48] [--size 256] [--input DIR]

Segments the same images (default: 48 crops of the StarDist sample, flipped
and rotated, ``--size`` pixels square; or every image under ``--input``)
with the whole per-image job of ``python -m piximi_py segment --scheduler``
(read, segment, measure, write), one onnxruntime thread per worker. Each
cluster is started and warmed up (every worker loads its session) before the
timed run, so the figures are throughput, not start-up. Prints images/s per
worker count and the scaling efficiency ``rate(n) / (n * rate(1))``. The
figures are only as good as the machine is idle: compare them on one machine.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_images(folder: Path, count: int, size: int) -> list[tuple[str, str]]:
    """``count`` real images: crops of the StarDist sample at 8 orientations."""
    import tifffile

    from tools.samples import stardist_sample

    image = tifffile.imread(stardist_sample()[0])
    h, w = image.shape
    step = max(1, (min(h, w) - size) // 3)
    crops = [image[y:y + size, x:x + size] for y in range(0, h - size + 1, step)
             for x in range(0, w - size + 1, step)]
    views = [lambda a, k=k, f=f: np.rot90(a.T if f else a, k) for f in (0, 1) for k in range(4)]
    items = []
    for i in range(count):
        a = views[(i // len(crops)) % len(views)](crops[i % len(crops)])
        path = folder / f"img{i:05d}.tif"
        tifffile.imwrite(path, np.ascontiguousarray(a))
        items.append((str(path), path.stem))
    return items


def measure(items, n_workers: int, out: Path) -> dict:
    from distributed import Client, LocalCluster

    from piximi_py.distributed import run_batch

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(n_workers)
        # warm-up: every worker opens its onnxruntime session and imports everything
        run_batch(items[:2 * n_workers], out / "warmup", scheduler=client, log=None, overwrite=True)
        report = run_batch(items, out / f"w{n_workers}", scheduler=client, log=None, overwrite=True)
    assert report["segmented"] == len(items), report["failures"]
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.distributed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--images", type=int, default=48, help="number of generated images")
    ap.add_argument("--size", type=int, default=256, help="side of the generated images")
    ap.add_argument("--input", type=Path, help="segment these images instead (a folder)")
    args = ap.parse_args(argv)

    from piximi_py.distributed import expand_inputs

    with tempfile.TemporaryDirectory(prefix="piximi-bench-") as tmp:
        tmp = Path(tmp)
        if args.input:
            items = expand_inputs([args.input])
            what = f"{len(items)} images from {args.input}"
        else:
            (tmp / "in").mkdir()
            items = make_images(tmp / "in", args.images, args.size)
            what = f"{len(items)} crops {args.size}x{args.size} of the StarDist sample"
        rows = []
        for n in args.workers:
            report = measure(items, n, tmp)
            rows.append((n, report["wall_s"], report["images_per_s"],
                         report["timings_ms"]["total"]["mean"]))
            print(f"{n} worker(s): {report['images_per_s']:.2f} images/s", file=sys.stderr, flush=True)

    base = next((r[2] for r in rows if r[0] == 1), None)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"\n{what}; {cores} cores, load average (1, 5, 15 min) at the end: {load}")
    print("| workers | wall (s) | images/s | mean ms per image in a task | speed-up | efficiency |")
    print("|---|---|---|---|---|---|")
    for n, wall, rate, ms in rows:
        speedup = f"{rate / base:.2f}" if base else ""
        efficiency = f"{rate / (n * base):.0%}" if base else ""
        print(f"| {n} | {wall:.2f} | {rate:.2f} | {ms:.0f} | {speedup} | {efficiency} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
