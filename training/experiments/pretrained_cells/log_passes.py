"""An experiment of docs/research/cells.md (the ImageNet-pretrained encoder): log the diameter estimate's passes (scale, diameter, objects, cover) and each
image's true median diameter, for MODEL on SOURCE; JSON lines to OUT.
usage: python -m training.experiments.pretrained_cells.log_passes MODEL SOURCE OUT"""
import json, sys, numpy as np, piximi_py
from piximi_py import channels as CH
from piximi_py.backends.onnxruntime import OnnxRuntimeBackend
from piximi_py.diameter import median_diameter
from piximi_py.io import read_image
from piximi_py.estimate import estimate_diameter
from piximi_py.pipeline import prepare_input, check_invert
from training import cells as C, data as D, datasets as DS
fg = float(sys.argv[4]) if len(sys.argv) > 4 else 0.3
flow = float(sys.argv[5]) if len(sys.argv) > 5 else 0.7
spec = C.with_flow_error(C.with_foreground(C.cells_spec(), fg), flow)
backend = OnnxRuntimeBackend(sys.argv[1], threads=1)
with open(sys.argv[3], "w") as out:
    for path in D.source_images(DS.DATA_CACHE / sys.argv[2], C.MAX_IMAGES):
        truth = read_image(path.parent.parent / "masks" / path.name).astype(np.int32)
        image = read_image(path, keep_channels=True)
        nuc = 1 if image.ndim == 3 else None
        ch = CH.resolve_channels(image, spec.input_roles, {"cyto": 0, "nuclei": nuc}, None)
        x = prepare_input(image, spec, ch, check_invert(False, spec))
        d, passes = piximi_py.run_sync(estimate_diameter(x, spec, backend))
        true_d, n = median_diameter(truth)
        out.write(json.dumps({"image": path.name, "shape": list(image.shape), "true": true_d, "cells": n, "est": d,
                              "passes": [[p.scale, p.diameter, p.objects, p.cover, p.whole] for p in passes]}) + "\n")
        out.flush()
