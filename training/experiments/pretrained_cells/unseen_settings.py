"""An experiment of docs/research/cells.md (why DeepCell reads lower after the second stage):
the MobileNetV2 shipped schedule's first stage and the shipped model (both stages) on the two
whole-cell sources no model trained on (DeepCell, LIVECell), at each foreground threshold and
flow check of the folds' grid (:data:`training.cells.FOREGROUND_THRESHOLDS`, 0.6 and 0.7), the
rest as shipped. A measurement only: the shipped settings stay chosen on the three folds.
usage: python -m training.experiments.pretrained_cells.unseen_settings [MODEL ...]"""
import json, sys
from training import cells as C, data as D, datasets as DS

SHIPPED = "runs/exp/mnv2/imagenet/shipped/cells_flows_s2d4_w40"
models = sys.argv[1:] or [SHIPPED + "/model.onnx", SHIPPED + "_stage2/model.onnx"]
specs = {(fg, flow): C.with_flow_error(C.with_foreground(C.cells_spec(), fg), flow)
         for fg in C.FOREGROUND_THRESHOLDS for flow in (0.6, 0.7)}
for model in models:
    for name in ("cells_deepcell", "cells_livecell"):
        rows = C.score_settings(specs, model, D.source_images(DS.DATA_CACHE / name, C.MAX_IMAGES))
        for (fg, flow), r in rows.items():
            print(json.dumps({"model": model, "source": name, "foreground": fg, "flow_check": flow,
                              **{m: round(C._mean(r, m), 3) for m in ("ap50", "map", "f1")}}), flush=True)
