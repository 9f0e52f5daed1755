"""One 3×3 convolution in the page against native: the ceiling of the model step's page / native ratio.

    python -m bench.conv_peak [--threads 1 2] [--runs 20] [--channels 4 8 16 24 32 48 64 96] [--mmac 100]

Our segmentation models spend nearly all of their onnxruntime-web time in
convolutions (per-operator profiles in ``models/ZOO.md``). This times a single
``Conv`` (C channels in, C out, 3×3, padding 1) followed by ``Relu``, on an input
sized so that each case costs about ``--mmac`` million multiply-adds, in
onnxruntime-web's WASM build (headless Chromium, cross-origin isolated; median
of the last half of ``--runs`` runs, after the browser's optimizing tier has
compiled the hot code) and in native onnxruntime (median of ``--runs`` after a
warm-up), both with each of ``--threads`` threads, in one run of this machine.
It prints milliseconds, multiply-adds per second and the ratio page / native.

Why this is a ceiling: with a few channels the convolution is bound by memory
traffic in both runtimes and the ratio is small; with the channel counts a
useful U-Net has, both run near their arithmetic peak, and the ratio is the
ratio of the two peaks. WebAssembly SIMD is 128 bits wide (4 float32 lanes)
and has no fused multiply-add outside the relaxed-SIMD proposal, which
onnxruntime-web 1.30's kernels do not use; onnxruntime's native kernels use the
CPU's widest vectors (AVX-512 with fused multiply-add on this machine: 16 lanes).
A model whose convolutions have such widths cannot run closer to native than
this ratio, whatever its layout. Writes ``bench/conv_peak.json``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.zoo_page import in_browser, native_ms  # noqa: E402


def conv_model(channels: int, size: int, path: Path) -> Path:
    """An ONNX file with one 3×3 ``Conv`` (``channels`` in and out, seeded weights) and a ``Relu``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(channels)
    weight = numpy_helper.from_array((rng.standard_normal((channels, channels, 3, 3)) * 0.1).astype(np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(channels, np.float32), "b")
    shape = [1, channels, size, size]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["conv"], ["y"])],
        f"conv{channels}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def side_for(channels: int, mmac: float) -> int:
    """The image side (a multiple of 4) at which one 3×3 convolution costs about ``mmac`` million multiply-adds."""
    return max(16, int((mmac * 1e6 / (9 * channels * channels)) ** 0.5) // 4 * 4)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.conv_peak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--channels", type=int, nargs="+", default=[4, 8, 16, 24, 32, 48, 64, 96])
    ap.add_argument("--mmac", type=float, default=100.0, help="million multiply-adds per case")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "conv_peak.json")
    args = ap.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files, x = {}, {}
        for c in args.channels:
            side = side_for(c, args.mmac)
            key = f"conv{c}"
            files[key] = conv_model(c, side, Path(tmp) / f"{key}.onnx")
            x[key] = np.random.default_rng(c + 1).standard_normal((1, c, side, side)).astype(np.float32)
            rows.append({"channels": c, "side": side, "mmac": 9 * c * c * side * side / 1e6})
        for threads in args.threads:
            page = in_browser(files, [(key, "wasm", x[key], args.runs) for key in files],
                              threads=threads, webgpu=False)
            for row, key in zip(rows, files):
                r = page[key]
                if "error" in r:
                    raise RuntimeError(f"{key} in the page: {r['error']}")
                times = r["times"]
                row[f"page_ms_{threads}"] = statistics.median(times[len(times) // 2:])
                row[f"native_ms_{threads}"] = native_ms(files[key], x[key], threads, args.runs)

    print(f"\none 3×3 Conv + Relu, C in = C out, about {args.mmac:.0f} M multiply-adds each; page = onnxruntime-web "
          "WASM in headless Chromium, native = onnxruntime, one run of this machine")
    head = "| C | input | M MAC |"
    rule = "|---|---|---|"
    for t in args.threads:
        head += f" native {t}t: ms (GMAC/s) | page {t}t: ms (GMAC/s) | page / native {t}t |"
        rule += "---|---|---|"
    print(head)
    print(rule)
    for row in rows:
        line = f"| {row['channels']} | {row['side']}² | {row['mmac']:.0f} |"
        for t in args.threads:
            n, p = row[f"native_ms_{t}"], row[f"page_ms_{t}"]
            line += (f" {n:.2f} ({row['mmac'] / n:.0f}) | {p:.2f} ({row['mmac'] / p:.0f}) | {p / n:.2f} |")
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "runs": args.runs, "rows": rows}, indent=1) + "\n")
        print(f"wrote {args.json.relative_to(ROOT) if args.json.is_relative_to(ROOT) else args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
