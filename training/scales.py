"""Real annotated images at other magnifications, and what the diameter step does with them.

A user's nuclei may be 8 or 150 px across. Held-out real images are
resized so that their median nucleus diameter takes each of a list of
values (:func:`rescaled_cases`: image bilinear with anti-aliasing, labels
nearest), and the pipeline is scored on them three ways: as it is (no
rescaling), with the true diameter given (the oracle), and with the
diameter estimated (:func:`piximi_py.estimate.estimate_diameter`).

``python build.py evaluate --scales`` prints both tables.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

import piximi_py
from piximi_py import rescale
from piximi_py.diameter import median_diameter
from piximi_py.io import read_image
from piximi_py.metrics import evaluate_instances
from piximi_py.pipeline import segment_async

from .data import resize_labels

#: Median nucleus diameters (px) the held-out images are rescaled to.
DIAMETERS = (8, 12, 20, 35, 60, 100, 150)
#: Largest side of a rescaled case: larger ones are cut to a central window first.
MAX_SIDE = 1536


def rescale_case(image: np.ndarray, labels: np.ndarray, factor: float, max_side: int = MAX_SIDE):
    """``image`` and ``labels`` enlarged by ``factor`` (central window so no side passes ``max_side``).

    The image keeps its dtype (rounded for integers) so the pipeline sees a
    file-like image.
    """
    side = int(max_side / factor)
    h, w = labels.shape
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    image, labels = image[y0:y0 + side, x0:x0 + side], labels[y0:y0 + side, x0:x0 + side]
    shape = rescale.rescaled_shape(labels.shape, factor)
    out = rescale.resize(image.astype(np.float32), shape)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        out = np.clip(np.round(out), info.min, info.max).astype(image.dtype)
    return out, resize_labels(labels, shape)


def rescaled_cases(pairs, diameters=DIAMETERS, min_objects: int = 3):
    """(name, image, labels, true diameter) for each image of ``pairs`` at each diameter.

    ``pairs`` yields ``(set, name, image path, mask path)`` (``training.evaluate.held_out_pairs``).
    Cases with fewer than ``min_objects`` whole nuclei are skipped.
    """
    for _, name, image_path, mask_path in pairs:
        image, labels = read_image(image_path), read_image(mask_path).astype(np.int32)
        d0, _ = median_diameter(labels)
        for target in diameters:
            img, lab = rescale_case(image, labels, target / d0)
            d, n = median_diameter(lab)
            if n >= min_objects:
                yield f"{name}@{target}", img, lab, d


def evaluate_scales(model_id: str | None = None, *, data_root=None, models_dir=None,
                    diameters=DIAMETERS, modes=("fixed", "oracle", "auto")) -> dict:
    """AP@0.5, mAP and F1 per target diameter and mode, and the estimate's error.

    Modes: ``fixed`` segments at the image's own scale, ``oracle`` is given
    the true median diameter, ``auto`` estimates it.
    """
    from . import data as TD
    from .evaluate import held_out_pairs

    models_dir = Path(models_dir or piximi_py.default_models_dir())
    spec = piximi_py.find_model(piximi_py.load_models(models_dir), model_id)
    backend = piximi_py._native_backend(str(models_dir / spec.file), None)
    fixed = dataclasses.replace(spec, diameter=0.0)
    rows = []
    for name, image, truth, d_true in rescaled_cases(held_out_pairs(data_root or TD.SHARED_DATA), diameters):
        row = {"image": name, "target": float(name.rsplit("@", 1)[1]), "diameter": d_true}
        for mode in modes:
            t = time.perf_counter()
            if mode == "fixed":
                seg = piximi_py.run_sync(segment_async(image, fixed, backend))
            else:
                seg = piximi_py.run_sync(segment_async(image, spec, backend,
                                                       diameter=d_true if mode == "oracle" else None))
            row[f"{mode}_ms"] = (time.perf_counter() - t) * 1000
            scores = evaluate_instances(truth, seg.labels)
            row.update({f"{mode}_{k}": scores[k] for k in ("ap50", "map", "f1")})
            if mode == "auto":
                row["estimate"] = seg.diameter
        rows.append(row)
    return {"model": spec.id, "model_diameter": spec.diameter, "rows": rows}


def estimate_error(row: dict) -> float:
    """Relative error of the estimated diameter (1.0 when none was found)."""
    return abs(row["estimate"] / row["diameter"] - 1) if row.get("estimate") else 1.0


def format_scales(report: dict, modes=("fixed", "oracle", "auto")) -> str:
    rows = report["rows"]
    head = "| nuclei (px) | images | " + " | ".join(f"{m} AP@0.5 / mAP" for m in modes)
    lines = [head + " | estimate within 15 % | median error |",
             "|---" * (len(modes) + 4) + "|"]
    for target in sorted({r["target"] for r in rows}) + ["all"]:
        sel = [r for r in rows if target == "all" or r["target"] == target]
        cells = [f"{np.mean([r[f'{m}_ap50'] for r in sel]):.3f} / {np.mean([r[f'{m}_map'] for r in sel]):.3f}"
                 for m in modes]
        errors = [estimate_error(r) for r in sel] if "auto" in modes else [np.nan]
        lines.append(f"| {target} | {len(sel)} | " + " | ".join(cells) +
                     f" | {np.mean(np.array(errors) <= 0.15):.0%} | {np.median(errors):.1%} |")
    return "\n".join(lines)
