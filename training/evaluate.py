"""Accuracy of shipped models on held-out real images, next to a classical baseline.

Held-out = the validation split of each training set (see
:func:`training.data.split`) plus sets never used for training
(``stardist_wheel``). Images go through the same ``piximi_py`` pipeline the
page runs, with native onnxruntime.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

import piximi_py
from piximi_py.io import read_image
from piximi_py.metrics import evaluate_instances

from . import data as D

HELD_OUT = {
    "gray": [("dsb2018_stage1test_gray", "validation"), ("stardist_wheel", "all")],
    "rgb": [("dsb2018_stage1test_color", "validation")],
}


def held_out_pairs(data_root: Path, mode: str = "gray"):
    """(set, name, image path, mask path) of every held-out image available."""
    for set_name, part in HELD_OUT[mode]:
        root = Path(data_root) / set_name
        if not root.is_dir():
            continue
        for path in sorted((root / "images").glob("*.tif")):
            name = f"{set_name}/{path.stem}"
            if part == "validation" and not D.is_validation(name):
                continue
            yield set_name, name, path, root / "masks" / path.name


def classical_baseline(image: np.ndarray) -> np.ndarray:
    """Otsu threshold + distance-transform watershed (scikit-image), a common default."""
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import watershed

    img = image.astype(np.float32)
    if img.ndim == 3:
        img = img.mean(axis=-1)
    img = gaussian(img, 1.0)
    mask = img > threshold_otsu(img)
    if mask.mean() > 0.5:  # dark nuclei on a bright background
        mask = ~mask
    mask = remove_small_objects(ndi.binary_fill_holes(mask), 12)
    dist = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(dist, min_distance=4, labels=ndi.label(mask)[0], exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=mask)


def evaluate_model(model_id: str | None = None, *, data_root: Path = D.SHARED_DATA,
                   models_dir=None, mode: str = "gray", baseline: bool = True) -> dict:
    """Per-image and per-set AP@0.5, mAP@0.5:0.95 and F1 of a model (and the baseline)."""
    rows = []
    for set_name, name, image_path, mask_path in held_out_pairs(data_root, mode):
        truth = read_image(mask_path).astype(np.int32)
        result = piximi_py.segment_image(image_path, model_id, models_dir=models_dir)
        row = {"set": set_name, "image": name, **evaluate_instances(truth, result.labels)}
        if baseline:
            base = evaluate_instances(truth, classical_baseline(read_image(image_path)))
            row.update({f"baseline_{k}": base[k] for k in ("ap50", "map", "f1")})
        rows.append(row)
    if not rows:
        raise SystemExit(f"no held-out images under {data_root} "
                         "(../shared/data is only present on the project's own machines)")
    summary = {}
    keys = ["ap50", "map", "f1"] + (["baseline_ap50", "baseline_map", "baseline_f1"] if baseline else [])
    for group in sorted({r["set"] for r in rows}) + ["all"]:
        sel = [r for r in rows if group == "all" or r["set"] == group]
        summary[group] = {"images": len(sel), **{k: round(float(np.mean([r[k] for r in sel])), 4) for k in keys}}
    return {"model": model_id, "summary": summary, "images": rows}


def format_summary(report: dict) -> str:
    lines = ["| held-out set | images | AP@0.5 | mAP@0.5:0.95 | F1@0.5 | baseline AP@0.5 | baseline mAP |",
             "|---|---|---|---|---|---|---|"]
    for group, s in report["summary"].items():
        lines.append(f"| {group} | {s['images']} | {s['ap50']:.3f} | {s['map']:.3f} | {s['f1']:.3f} | "
                     f"{s.get('baseline_ap50', float('nan')):.3f} | {s.get('baseline_map', float('nan')):.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    rep = evaluate_model(sys.argv[1] if len(sys.argv) > 1 else None)
    print(format_summary(rep))
    print(json.dumps(rep["summary"], indent=1))


def model_card(spec, report: dict, train_cfg: dict, params: int, stages=()) -> str:
    """Markdown model card for one shipped model from an evaluation report."""
    stages_text = "; ".join(
        f"stage {i}: {st['iterations']} iterations at peak LR {st['lr']:g}, {st['boundary_width']}-pixel "
        f"boundary rim, touching-pixel weight {st['touching_weight']:g}"
        + (f" (from stage {i - 1}'s weights)" if "init_from" in st else "")
        for i, st in enumerate(stages, 1))
    return f"""## `{spec.id}` — {spec.name}

{spec.description}

| | |
|---|---|
| file | `{spec.file}` ({spec.bytes / 1e6:.1f} MB, sha256 `{spec.sha256[:16]}…`) |
| architecture | U-Net, vanilla encoder (base width {train_cfg['base_width']}, depth {train_cfg['depth']}), BatchNorm + ReLU, softmax head; {params:,} parameters; ONNX opset 17, float32, dynamic batch/height/width (multiples of {spec.input_multiple}) |
| input | 1 channel, percentile-normalized (p{spec.normalize['low']:g} → 0, p{spec.normalize['high']:g} → 1); tiles of {spec.tile_size} px with {spec.tile_overlap} px overlap |
| output | per-pixel probabilities of background / nucleus interior / nucleus boundary → instances by seeded nearest-seed growth (`piximi_py.postprocess`) |
| training data | the training split (75 %) of `dsb2018_stage1test_gray` (Data Science Bowl 2018 / BBBC038, CC0): 29 images; split by a hash of the image name (`training.data.is_validation`); no synthetic data |
| training | `python build.py train` (CPU, 2 threads): batches of {train_cfg['batch']} random {train_cfg['crop']}² crops (scale 0.6–1.6, flips, 90° rotations, gamma/contrast, blur, noise), AdamW + one-cycle LR, cross-entropy weighted 1/1/2 by class, seed {train_cfg['seed']}; {stages_text} |

Accuracy on held-out real images (never used for training or model selection),
measured with `python build.py evaluate` through the same `piximi_py` pipeline
the page runs (native onnxruntime). Baseline: Otsu threshold + distance-transform
watershed (scikit-image).

{format_summary(report)}
"""
