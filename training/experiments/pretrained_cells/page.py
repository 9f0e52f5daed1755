"""An experiment of docs/research/cells.md (the ImageNet-pretrained encoder): the model time of
ONNX files in the page (onnxruntime-web WASM, 2 threads) and natively, one 1x2x512x512 input, one
run; by default the shipped width-40 cells file beside the MobileNetV2 Usiigaci fold (session 26).
Session 27's run: models/cells_flows_s2d4_w40.onnx, runs/exp/mnv2/imagenet/shipped/cells_flows_s2d4_w40/model.onnx,
models/cells_flows_s2d4_w40_int8.onnx and that folder's model_int8.onnx (``int8``). The width-40
files left models/ when the MobileNetV2 model shipped (session 28): git show 8bd4821:models/FILE > FILE.
usage: python -m training.experiments.pretrained_cells.page [NAME=FILE ...]"""
import statistics
import sys
from pathlib import Path

from bench.zoo_page import in_browser, inputs, native_ms

pairs = sys.argv[1:] or ["w40=models/cells_flows_s2d4_w40.onnx",
                         "mnv2=runs/exp/mnv2/imagenet/without_cells_usiigaci_stage2/model.onnx"]
files = {name: Path(path) for name, path in (pair.split("=", 1) for pair in pairs)}
full, _ = inputs(2)
native = {k: native_ms(p, full, 2, 20) for k, p in files.items()}
page = in_browser(files, [(k, "wasm", full, 20) for k in files], threads=2, webgpu=False)
for k in files:
    t = page[k].get("times")
    w = statistics.median(t[len(t) // 2:]) if t else None
    print(k, "native", round(native[k], 1), "ms; page", w and round(w, 1), "ms", page[k].get("error") or "")
