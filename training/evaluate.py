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
    "gray": [("dsb2018_stage1test_gray", "validation"), ("stardist_wheel", "all"), ("mnfinder", "validation")],
    "rgb": [("dsb2018_stage1test_color", "validation")],
}


def set_root(set_name: str, data_root: Path) -> Path:
    """Where a set lives: under ``data_root`` or, for sets fetched from packages, the data cache."""
    from .datasets import DATA_CACHE

    root = Path(data_root) / set_name
    return root if root.is_dir() else DATA_CACHE / set_name


def held_out_pairs(data_root: Path, mode: str = "gray"):
    """(set, name, image path, mask path) of every held-out image available."""
    for set_name, part in HELD_OUT[mode]:
        root = set_root(set_name, data_root)
        if not root.is_dir():
            continue
        for path in sorted((root / "images").glob("*.tif")):
            name = f"{set_name}/{path.stem}"
            if part == "validation" and not D.is_validation(name):
                continue
            yield set_name, name, path, root / "masks" / path.name


def classical_baseline(image: np.ndarray) -> np.ndarray:
    """Otsu threshold + distance-transform watershed (scikit-image), a common default."""
    from skimage.filters import gaussian, threshold_otsu
    from skimage.morphology import remove_small_objects

    img = image.astype(np.float32)
    if img.ndim == 3:
        img = img.mean(axis=-1)
    img = gaussian(img, 1.0)
    mask = img > threshold_otsu(img)
    if mask.mean() > 0.5:  # dark nuclei on a bright background
        mask = ~mask
    return distance_watershed(remove_small_objects(ndi.binary_fill_holes(mask), 12))


def distance_watershed(foreground: np.ndarray, min_distance: int = 4) -> np.ndarray:
    """Split a binary mask by a watershed on its distance transform, from its local maxima."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    dist = ndi.distance_transform_edt(foreground)
    peaks = peak_local_max(dist, min_distance=min_distance, labels=ndi.label(foreground)[0],
                           exclude_border=False)
    markers = np.zeros(foreground.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=foreground)


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


def _crop_scale(run: dict, variant: dict) -> str:
    """How a model's training crops were scaled, for its card."""
    lo, hi = run.get("scale_range") or variant.get("scale_range") or (0.6, 1.6)
    diameter = run.get("diameter") or variant.get("diameter")
    if diameter:
        return (f"each image rescaled so that its median nucleus is {diameter:g} px across, the model's "
                f"`diameter`, times a random {lo:g}–{hi:g}")
    return f"scale {lo:g}–{hi:g}"


def model_card(spec, report: dict, checkpoint: Path, shipped: dict) -> str:
    """Markdown model card for one shipped model from its evaluation report and checkpoint."""
    import torch

    from .zoo import COMMON, VARIANTS

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    cfg, run = ckpt["config"], ckpt.get("run", {})
    variant = {**COMMON, **VARIANTS[shipped["variant"]]}
    params = sum(v.numel() for k, v in ckpt["state_dict"].items() if "running_" not in k and "num_batches" not in k)
    sets = ", ".join(f"`{Path(s).name}`" for s in run.get("sets", variant["sets"]))
    encoder = cfg["encoder_name"] + (" (ImageNet-pretrained start)" if "weights" in cfg else "")
    stem = ""
    if cfg.get("space_to_depth", 1) > 1:
        k = cfg["space_to_depth"]
        stem = (f" behind a {k}×{k} space-to-depth stem (the network runs at 1/{k} resolution; "
                f"a depth-to-space head restores full-resolution probabilities)")
    start = (f", starting from `{variant['prune_from']}` with {cfg['inner_ratio']:.1%} of each conv block's inner "
             "channels kept (`training.prune`)" if variant.get("prune_from") else "")
    earlier = run.get("start") or {}
    if earlier.get("iterations"):  # a run continued from another (training.train's init_from)
        start += (f", continuing a run of {earlier['iterations']} iterations of batch {earlier.get('batch')} on "
                  f"{earlier.get('device', 'cpu')} on " + ", ".join(f"`{Path(s).name}`" for s in earlier.get("sets", ())))
    chosen = ("thresholds set in `training.cli.SHIPPED`, which says why" if shipped.get("postprocess")
              else "thresholds chosen on training images")
    trim = spec.outline_contrast
    if trim:
        chosen += (f"; each object then trimmed to {trim:g} of its contrast over the background around it, "
                   "`piximi_py.postprocess.trim_to_contrast`")
    if spec.min_relative_size:
        chosen += (f"; objects under {spec.min_relative_size:g} of the image's median object area dropped, "
                   "`piximi_py.postprocess.remove_relatively_small`")
    teacher = (f", plus the KL divergence to the probabilities of `{Path(variant['teacher']).name}` (distillation)"
               if variant.get("teacher") else "")
    return f"""## `{spec.id}` — {spec.name}

{spec.description}

| | |
|---|---|
| file | `{spec.file}` ({spec.bytes / 1e6:.1f} MB, sha256 `{spec.sha256[:16]}…`); bioimage.io description `{spec.id}.rdf.yaml` |
| architecture | U-Net, {encoder} encoder{stem}, depth {cfg['depth']}, softmax head; {params:,} parameters; ONNX opset 17, float32, dynamic batch/height/width (multiples of {spec.input_multiple}) |
| input | {spec.channels} channel(s), percentile-normalized (p{spec.normalize['low']:g} → 0, p{spec.normalize['high']:g} → 1); tiles of {spec.tile_size} px with {spec.tile_overlap} px overlap |
| output | per-pixel probabilities of background / nucleus interior / nucleus boundary ({variant['boundary_width']}-pixel rim) → instances by seeded growth (`piximi_py.postprocess`, foreground ≥ {spec.postprocess.get('foreground_threshold')}, seeds ≥ {spec.postprocess.get('seed_threshold')}, {chosen}) |
| training data | training split (75 %, by a hash of the image name: `training.data.is_validation`) of {sets}; synthetic nuclei (`training.synthetic`) as {run.get('synthetic_fraction', variant['synthetic_fraction']):.0%} of crops |
| training | `training.zoo` variant `{shipped['variant']}`{start}: {ckpt.get('iteration')} iterations (of a {shipped['iterations']}-iteration schedule) × batches of {run.get('batch', variant['batch'])} random {run.get('crop', variant['crop'])}² crops ({_crop_scale(run, variant)}, flips, 90° rotations, gamma/contrast, blur, noise), AdamW, warm-up + cosine LR (peak {variant['lr']:g}), cross-entropy weighted 1/1/2 by class plus {variant['touching_weight']:g}× on pixels where nuclei touch{teacher}, seed {variant['seed']}; on {run.get('device', 'cuda')} |

Accuracy on held-out real images (never used for training), measured with
`python build.py evaluate` through the same `piximi_py` pipeline the page runs
(native onnxruntime). Baseline: Otsu threshold + distance-transform watershed
(scikit-image) on the same images.

{format_summary(report)}
"""
