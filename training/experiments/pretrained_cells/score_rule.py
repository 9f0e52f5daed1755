"""An experiment of docs/research/cells.md (the ImageNet-pretrained encoder): AP@0.5 / mAP / F1 of MODEL on SOURCE with the diameter chosen from the logged
passes (LOG) by the current rule and by 'coarsest pass at the model's size' when unconfirmed;
both given to the pipeline as the diameter, foreground FG (default 0.3), flow check FLOW (0.7).
usage: python -m training.experiments.pretrained_cells.score_rule MODEL SOURCE LOG [FG [FLOW]]"""
import json, sys, numpy as np, piximi_py
from piximi_py.backends.onnxruntime import OnnxRuntimeBackend
from piximi_py.io import read_image
from piximi_py.metrics import evaluate_instances
from piximi_py.pipeline import segment_async
from training import cells as C, data as D, datasets as DS
from training.experiments.pretrained_cells.rules import rules
fg = float(sys.argv[4]) if len(sys.argv) > 4 else 0.3
flow = float(sys.argv[5]) if len(sys.argv) > 5 else 0.7
spec = C.with_flow_error(C.with_foreground(C.cells_spec(), fg), flow)
backend = C.RepeatedRuns(OnnxRuntimeBackend(sys.argv[1], threads=1))
logged = {json.loads(l)["image"]: json.loads(l) for l in open(sys.argv[3])}
res = {"current": [], "coarsest_at_size": []}
for path in D.source_images(DS.DATA_CACHE / sys.argv[2], C.MAX_IMAGES):
    truth = read_image(path.parent.parent / "masks" / path.name).astype(np.int32)
    planes = read_image(path, keep_channels=True)
    channels = {"cyto": 0, "nuclei": 1 if planes.ndim == 3 else None}
    choice = rules(logged[path.name])
    for k in res:
        d = choice[k] or 30.0
        seg = piximi_py.run_sync(segment_async(planes, spec, backend, channels=channels, diameter=d))
        res[k].append(evaluate_instances(truth, seg.labels))
    backend.forget()
print(sys.argv[1], sys.argv[2], "fg", fg, "flow", flow, {k: {m: round(float(np.mean([r[m] for r in v])), 3) for m in ("ap50", "map", "f1")}
                       for k, v in res.items()}, flush=True)
