"""An experiment of docs/research/cells.md (the ImageNet-pretrained encoder): the MobileNetV2 first stage quantized as cells_int8 is (training.zoo_report.quantize_int8,
calibrated on 2 tiles a set as training.cells.ship does), then scored like score_shipped.py.
usage: python -m training.experiments.pretrained_cells.int8"""
import subprocess, sys
from pathlib import Path
from training import cells as C
from training.zoo_report import calibration_tiles, quantize_int8
src = Path("runs/exp/mnv2/imagenet/shipped/cells_flows_s2d4_w40/model.onnx")
dst = src.with_name("model_int8.onnx")
if not dst.exists():
    quantize_int8(src, dst, calibration_tiles(2, sets=[str(p) for p in C.cell_sets()]))
print(dst, dst.stat().st_size, "bytes; float", src.stat().st_size, flush=True)
subprocess.run([sys.executable, "-m", "training.experiments.pretrained_cells.score_shipped", str(dst)], check=True)
