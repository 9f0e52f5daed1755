"""An experiment of docs/research/cells.md (the ImageNet-pretrained encoder): the MobileNetV2 Usiigaci fold on Usiigaci with the diameter estimated and given
(each image's true median cell diameter), foreground 0.3, flow check 0.7.
usage: python -m training.experiments.pretrained_cells.diameter"""
import numpy as np, piximi_py
from piximi_py.backends.onnxruntime import OnnxRuntimeBackend
from piximi_py.diameter import median_diameter
from piximi_py.io import read_image
from piximi_py.metrics import evaluate_instances
from piximi_py.pipeline import segment_async
from training import cells as C, data as D, datasets as DS

spec = C.with_flow_error(C.with_foreground(C.cells_spec(), 0.3), 0.7)
backend = OnnxRuntimeBackend("runs/exp/mnv2/imagenet/without_cells_usiigaci_stage2/model.onnx")
rows = []
for path in D.source_images(DS.DATA_CACHE / "cells_usiigaci", C.MAX_IMAGES):
    truth = read_image(path.parent.parent / "masks" / path.name).astype(np.int32)
    planes = read_image(path, keep_channels=True)
    true_d = median_diameter(truth)[0]
    est = piximi_py.run_sync(segment_async(planes, spec, backend, channels={"cyto": 0, "nuclei": None}))
    given = piximi_py.run_sync(segment_async(planes, spec, backend, channels={"cyto": 0, "nuclei": None},
                                             diameter=true_d))
    rows.append((est.diameter / true_d, evaluate_instances(truth, est.labels), evaluate_instances(truth, given.labels)))
ratios = np.array([r[0] for r in rows])
print("estimate / truth: median", round(float(np.median(ratios)), 3), "within 15 %:",
      int((abs(ratios - 1) <= 0.15).sum()), "of", len(rows))
for i, name in ((1, "estimated"), (2, "given")):
    print(name, {m: round(float(np.mean([r[i][m] for r in rows])), 3) for m in ("ap50", "map", "f1")})
