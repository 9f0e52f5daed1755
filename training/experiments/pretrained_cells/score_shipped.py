"""An experiment of docs/research/cells.md (the ImageNet-pretrained encoder): MODEL (default: the MobileNetV2 shipped schedule's first stage) on the two
whole-cell sources no model trained on (DeepCell, LIVECell) at the width-40 model's shipped settings
(foreground 0.3, flow check 0.7; flips averaged, steps 60, smallest cluster 80: cells_spec(),
whose foreground and flow check the MobileNetV2 model's shipping changed to 0.6 and 0.6).
usage: python -m training.experiments.pretrained_cells.score_shipped [MODEL [held-out]]"""
import json, sys
from training import cells as C, data as D, datasets as DS
model = sys.argv[1] if len(sys.argv) > 1 else "runs/exp/mnv2/imagenet/shipped/cells_flows_s2d4_w40/model.onnx"
spec = C.with_flow_error(C.with_foreground(C.cells_spec(), 0.3), 0.7)
for name in ("cells_deepcell", "cells_livecell"):
    rows = C.score(spec, model, D.source_images(DS.DATA_CACHE / name, C.MAX_IMAGES))
    print(json.dumps({"model": model, "source": name, **{m: round(C._mean(rows, m), 3) for m in ("ap50", "map", "f1")}}), flush=True)
if len(sys.argv) > 2:  # and on the held-out split of the three training sources
    for name in C.CELLS:
        rows = C.score(spec, model, D.source_images(DS.DATA_CACHE / name, C.MAX_IMAGES, validation_only=True))
        print(json.dumps({"model": model, "held_out": name, "images": len(rows),
                          **{m: round(C._mean(rows, m), 3) for m in ("ap50", "map", "f1")}}), flush=True)
