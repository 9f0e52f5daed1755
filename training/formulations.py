"""What the boundary class buys: instances from one model's probabilities, three ways.

    python build.py evaluate --formulations [--model ID ...] [--models-dir runs/zoo/models]

The models predict background / nucleus interior / nucleus boundary.
On the held-out images (``training.evaluate``), the same probabilities become
instances by

* ``interior seeds``: the shipped rule (``piximi_py.postprocess``): connected
  interiors are seeds, every foreground pixel joins the nearest seed of its
  foreground component;
* ``foreground components``: each connected component of the foreground is one
  object, what a foreground/background formulation gives without splitting;
* ``foreground + distance watershed``: the foreground split by a watershed on
  its distance transform, seeded at its local maxima (as the classical
  baseline splits its Otsu mask), the usual way to split a binary mask.

The foreground (``1 - P(background)`` above the model's threshold), the hole
filling and the size filter are the same for all three, so the rows differ
only in how touching nuclei are told apart. For one model the network is the
same in all three rows; models trained with and without the boundary class
(zoo variants, ``--models-dir runs/zoo/models``) compare the targets.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from piximi_py import postprocess
from piximi_py.metrics import evaluate_instances

from . import data as D
from .evaluate import distance_watershed, held_out_pairs

METHODS = ("interior seeds", "foreground components", "foreground + distance watershed")


def instances(prob: np.ndarray, method: str, post: dict) -> np.ndarray:
    """Labels from ``(3, H, W)`` probabilities by one of :data:`METHODS`."""
    foreground, seeds = postprocess.threshold_probabilities(prob, post["foreground_threshold"],
                                                           post["seed_threshold"])
    if method == "interior seeds":
        return postprocess.masks_to_labels(foreground, seeds, min_seed_size=post["min_seed_size"],
                                           min_size=post["min_size"])
    if method == "foreground components":
        labels = ndi.label(foreground)[0]
    elif method == "foreground + distance watershed":
        labels = distance_watershed(foreground)
    else:
        raise ValueError(f"unknown method {method!r}: one of {METHODS}")
    return postprocess.finish_labels(labels, post["min_size"])


def compare(model_id: str | None = None, *, data_root: Path = D.SHARED_DATA, models_dir: Path | None = None) -> dict:
    """Per set and overall: AP@0.5, mAP and F1 of each of :data:`METHODS` on the held-out images
    (the colour ones for an RGB model), for a model of ``models_dir/index.json`` (default: the
    shipped models)."""
    import piximi_py
    from piximi_py.backends.onnxruntime import OnnxRuntimeBackend
    from piximi_py.io import read_image
    from piximi_py.models import default_models_dir, find_model
    from piximi_py.pipeline import predict_probabilities, prepare_input

    models_dir = Path(models_dir or default_models_dir())
    spec = find_model(piximi_py.load_models(models_dir), model_id)
    backend = OnnxRuntimeBackend(models_dir / spec.file)
    rows = []
    for set_name, name, image_path, mask_path in held_out_pairs(data_root, "rgb" if spec.channels == 3 else "gray"):
        truth = read_image(mask_path).astype(np.int32)
        image = read_image(image_path, color=spec.channels == 3)
        prob = piximi_py.run_sync(predict_probabilities(prepare_input(image, spec), spec, backend))
        for method in METHODS:
            rows.append({"set": set_name, "image": name, "method": method,
                         **evaluate_instances(truth, instances(prob, method, spec.postprocess))})
    if not rows:
        raise SystemExit(f"no held-out images under {data_root} "
                         "(../shared/data is only present on the project's own machines)")
    summary = {}
    for method in METHODS:
        for group in sorted({r["set"] for r in rows}) + ["all"]:
            sel = [r for r in rows if r["method"] == method and group in ("all", r["set"])]
            summary.setdefault(method, {})[group] = {
                "images": len(sel), **{k: round(float(np.mean([r[k] for r in sel])), 4) for k in ("ap50", "map", "f1")}}
    return {"model": spec.id, "summary": summary}


def format_comparison(report: dict) -> str:
    """Markdown: one row per method, AP@0.5 / mAP / F1 over all images, then AP@0.5 per set."""
    summary = report["summary"]
    sets = [g for g in next(iter(summary.values())) if g != "all"]
    lines = ["| instances from the probabilities | AP@0.5 | mAP | F1 | " +
             " | ".join(f"AP@0.5 {g} ({summary[METHODS[0]][g]['images']})" for g in sets) + " |",
             "|---|---|---|---|" + "---|" * len(sets)]
    for method, groups in summary.items():
        a = groups["all"]
        lines.append(f"| {method} | {a['ap50']:.3f} | {a['map']:.3f} | {a['f1']:.3f} | " +
                     " | ".join(f"{groups[g]['ap50']:.3f}" for g in sets) + " |")
    return "\n".join(lines)
