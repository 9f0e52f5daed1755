"""An experiment of docs/research/cells.md (the ImageNet-pretrained encoder): the whole-cell fold without SOURCE with an ImageNet-pretrained MobileNetV2
encoder (depth 5, as nuclei_he) instead of the recipe's space-to-depth width-40 encoder; the
recipe's fold schedule and seed otherwise. Scored on the source it never saw and on the
phase-contrast sources only ever scored, at the width-40 folds' nested settings.
usage: python -m training.experiments.pretrained_cells.fold SOURCE [WEIGHTS: imagenet|none]"""
import json, os, sys, time
from pathlib import Path
from training import cells as C, data as D, datasets as DS
from training.export import export_onnx
from training.train import train
from training.zoo import COMMON

source = sys.argv[1]
weights = sys.argv[2] if len(sys.argv) > 2 else "imagenet"
recipe = {**C.RECIPE, "encoder": "mobilenet_v2", "depth": 5,
          "encoder_kwargs": {"weights": None if weights == "none" else weights}}
out_root = Path(f"runs/exp/mnv2/{weights}")
if os.environ.get("TINY"):
    C.FOLD_STAGES, C.MAX_IMAGES, out_root = ((3, 2e-3), (3, 1e-3)), 2, Path("/tmp/mnv2tiny")
NESTED = {"cells_bbbc018": (0.3, 0.7), "cells_usiigaci": (0.3, 0.7), "cells_bbbc030": (0.4, 0.6)}
t0 = time.time()
prev = None
for k, (iterations, lr) in enumerate(C.FOLD_STAGES):
    out = out_root / (f"without_{source}" + ("" if k == 0 else f"_stage{k + 1}"))
    if not (out / "model.onnx").exists():
        ckpt = train(out, data_root=D.SHARED_DATA, sets=[str(p) for p in C.cell_sets()],
                     **{**COMMON, **recipe}, iterations=iterations, lr=lr, threads=2,
                     exclude_sources=[source], init_from=prev)
        export_onnx(ckpt, out / "model.onnx")
    prev = out / "model.pt"
print("trained", source, weights, round(time.time() - t0), "s", flush=True)
fg, err = NESTED[source]
scored = [source] + (["cells_deepcell", "cells_livecell"] if source == "cells_usiigaci" else [])
results = {}
for name in scored:
    paths = D.source_images(DS.DATA_CACHE / name, C.MAX_IMAGES)
    specs = {f"fg{f}_err{e}": C.with_flow_error(C.with_foreground(C.cells_spec(), f), e)
             for f, e in {(fg, err), (0.3, 0.7), (0.4, 0.7)}}
    rows = C.score_settings(specs, out / "model.onnx", paths)
    results[name] = {key: {m: round(C._mean(r, m), 3) for m in ("ap50", "map", "f1")} for key, r in rows.items()}
    print(json.dumps({"source": name, "nested": f"fg{fg}_err{err}", "scores": results[name]}), flush=True)
(out_root / f"score_{source}.json").write_text(json.dumps(results, indent=1))
