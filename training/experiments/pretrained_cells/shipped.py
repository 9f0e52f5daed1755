"""An experiment of docs/research/cells.md (the ImageNet-pretrained encoder): the shipped schedule (training.cells.STAGES, every source) with the
ImageNet-pretrained MobileNetV2 encoder of fold.py, into runs/exp/mnv2/imagenet/shipped/; stage by
stage and resumable (a stage with its model.onnx is kept). With STOP_AFTER=1 only the first stage.
usage: [STOP_AFTER=1] python -m training.experiments.pretrained_cells.shipped"""
import os, time
from pathlib import Path
from training import cells as C
C.RECIPE = {**C.RECIPE, "encoder": "mobilenet_v2", "depth": 5, "encoder_kwargs": {"weights": "imagenet"}}
C.RUNS = Path("runs/exp/mnv2/imagenet/shipped")
stages = C.STAGES[:int(os.environ.get("STOP_AFTER", len(C.STAGES)))]
t0 = time.time()
# the name training.cells.VARIANT had when this ran (session 27), which the scripts beside it read
print(C.train_run("cells_flows_s2d4_w40", stages), round(time.time() - t0), "s", flush=True)
