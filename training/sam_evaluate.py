"""Prompt segmentation on held-out real nuclei (``python build.py sam-evaluate``).

Held-out images are those of :func:`training.evaluate.held_out_pairs` (the
validation split of ``dsb2018_stage1test_gray`` plus ``stardist_wheel``);
with ``--diameters`` each one is rescaled so that its nuclei are that many
pixels across (:mod:`training.scales`), and results are grouped by size.
For every ground-truth nucleus:

* **box**: its bounding box with each side moved by up to 10 % of the
  object's size (uniform, seeded per image), one prompt -> IoU with the object;
* **click**: one positive click at the object's centre (the centroid, or the
  innermost pixel when the centroid falls outside a non-convex object) -> IoU.

Prompts go through :class:`piximi_py.sam.SamPredictor` with native
onnxruntime, exactly as the page runs them. Reported: mean IoU over objects
(all sets pooled, and per set), for each encoder/decoder variant, plus median
native latency of the encoder (one 256x256 window) and decoder (one prompt).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from piximi_py import run_sync
from piximi_py.io import read_image
from piximi_py.sam import SamPredictor, load_sam_spec

from . import data as D
from .evaluate import held_out_pairs

ROOT = Path(__file__).resolve().parents[1]
FP32_ENCODER = ROOT / "runs" / "sam" / "sam_encoder_fp32.onnx"


def object_prompts(truth: np.ndarray, rng: np.random.Generator, jitter: float = 0.1):
    """(label, jittered box, centre click) for every object of a label image."""
    h, w = truth.shape
    out = []
    for lab, sl in enumerate(ndi.find_objects(truth), start=1):
        if sl is None:
            continue
        obj = truth[sl] == lab
        y0, y1, x0, x1 = sl[0].start, sl[0].stop - 1, sl[1].start, sl[1].stop - 1
        bw, bh = x1 - x0 + 1, y1 - y0 + 1
        d = rng.uniform(-jitter, jitter, 4) * [bw, bh, bw, bh]
        box = np.array([x0, y0, x1, y1], float) + d
        box = np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])
        # a box of an object on the last row or column may collapse there: keep it one pixel wide
        box[:2] = np.minimum(box[:2], [w - 2, h - 2])
        box[2:] = np.maximum(box[2:], box[:2] + 1)
        cy, cx = ndi.center_of_mass(obj)
        iy, ix = int(round(cy)), int(round(cx))
        if not obj[min(iy, obj.shape[0] - 1), min(ix, obj.shape[1] - 1)]:
            dist = ndi.distance_transform_edt(np.pad(obj, 1))[1:-1, 1:-1]
            iy, ix = np.unravel_index(int(np.argmax(dist)), dist.shape)
            cy, cx = float(iy), float(ix)
        out.append((lab, box, np.array([x0 + cx, y0 + cy])))
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _seed(name: str) -> int:
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:4], "big")


def held_out_images(data_root: Path, diameters=None):
    """(group, name, image, labels) of every held-out image; with ``diameters``, each image
    rescaled so that its median nucleus is each of them across (``training.scales``), grouped
    by that size."""
    from .scales import rescaled_cases

    pairs = held_out_pairs(data_root, "gray")
    if not diameters:
        for set_name, name, image_path, mask_path in pairs:
            yield set_name, name, read_image(image_path, color=True), read_image(mask_path).astype(np.int32)
        return
    for name, image, labels, _ in rescaled_cases(pairs, diameters):
        yield f"{float(name.rsplit('@', 1)[1]):g} px", name, image, labels


def segmentation_diameter(image: np.ndarray) -> float | None:
    """The nucleus diameter the default nuclei model estimates for ``image`` (what the page
    sizes click windows by once an image is segmented)."""
    import piximi_py

    return piximi_py.segment_image(image).diameter


def evaluate_predictor(predictor: SamPredictor, data_root: Path = D.SHARED_DATA, *, max_objects: int = 0,
                       modes=("box", "click", "click_sized"), diameters=None) -> dict:
    """Per-object IoU of box and click prompts on every held-out image (at each of ``diameters``)."""
    rows = []
    encoder_calls = 0
    t0 = time.perf_counter()
    for set_name, name, image, truth in held_out_images(data_root, diameters):
        rng = np.random.default_rng(_seed(name))
        prompts = object_prompts(truth, rng)
        if max_objects and len(prompts) > max_objects:
            keep = np.sort(rng.choice(len(prompts), max_objects, replace=False))
            prompts = [prompts[i] for i in keep]
        run_sync(predictor.set_image(image, name))
        diameter = segmentation_diameter(image) if "click_sized" in modes else None
        misses = predictor.cache.misses
        for lab, box, centre in prompts:
            gt = truth == lab
            row = {"set": set_name, "image": name, "label": lab, "area": int(gt.sum())}
            if "box" in modes:
                mask, iou = run_sync(predictor.predict(boxes=box))
                row["box_iou"], row["box_pred_iou"] = _iou(mask, gt), iou
            if "click" in modes:
                mask, iou = run_sync(predictor.predict(points=centre[None], labels=[1]))
                row["click_iou"], row["click_pred_iou"] = _iou(mask, gt), iou
            if "click_sized" in modes:  # as in the page after segmenting: windows sized by its diameter
                mask, iou = run_sync(predictor.predict(points=centre[None], labels=[1], diameter=diameter))
                row["click_sized_iou"], row["click_sized_pred_iou"] = _iou(mask, gt), iou
            rows.append(row)
        encoder_calls += predictor.cache.misses - misses
        predictor.cache.clear(name)
    if not rows:
        return {}
    summary = {}
    groups = sorted({r["set"] for r in rows}, key=lambda g: (len(g), g))
    for group in groups + ["all"]:
        sel = [r for r in rows if group == "all" or r["set"] == group]
        summary[group] = {"images": len({r["image"] for r in sel}), "objects": len(sel)}
        for m in modes:
            summary[group][f"{m}_miou"] = round(float(np.mean([r[f"{m}_iou"] for r in sel])), 4)
            summary[group][f"{m}_iou>=0.5"] = round(float(np.mean([r[f"{m}_iou"] >= 0.5 for r in sel])), 4)
    return {"summary": summary, "encoder_calls": encoder_calls,
            "seconds": round(time.perf_counter() - t0, 1), "objects": rows}


def native_latency(encoder_path: Path, decoder_path: Path, threads: int = 2, repeats: int = 7) -> dict:
    """Median ms of one encoder run (256x256 window) and one box-prompt decoder run."""
    from piximi_py.backends.onnxruntime import OnnxRuntimeBackend

    enc = OnnxRuntimeBackend(encoder_path, threads=threads)
    dec = OnnxRuntimeBackend(decoder_path, threads=threads)
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 256, 256), dtype=np.float32)
    emb = enc.run_sync(x)
    feed = {"embeddings": emb, "point_coords": np.array([[[60, 70], [120, 150]]], np.float32),
            "point_labels": np.array([[2, 3]], np.float32)}
    dec.run_named_sync(feed)

    def median(fn):
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t) * 1000)
        return round(float(np.median(ts)), 1)

    return {"encoder_ms": median(lambda: enc.run_sync(x)),
            "decoder_ms": median(lambda: dec.run_named_sync(feed)), "threads": threads}


def evaluate_sam(encoders=None, decoders=("decoder",), *, models_dir=None,
                 data_root: Path = D.SHARED_DATA, max_objects: int = 0, threads: int = 2,
                 checkpoint_note: str = "", model: str = "sam", diameters=None) -> dict | None:
    """Evaluate every (encoder, decoder) pair; ``None`` (with a message) without held-out data."""
    from piximi_py.backends.onnxruntime import OnnxRuntimeBackend
    from piximi_py.models import default_models_dir

    if not any(True for _ in held_out_pairs(data_root, "gray")):
        print(f"sam-evaluate: no held-out images under {data_root} "
              "(../shared/data is only present on the project's own machines); skipped")
        return None
    models_dir = Path(models_dir or default_models_dir())
    spec = load_sam_spec(models_dir, model)

    def path(role):
        if role == "encoder_fp32" and role not in spec.files and spec.id == "sam":
            return models_dir / FP32_ENCODER.name if (models_dir / FP32_ENCODER.name).exists() else FP32_ENCODER
        return models_dir / spec.files[role]["file"]

    if encoders is None:  # LiteMedSAM: its fp32 reference and int8; others: their native encoder
        encoders = ("encoder_fp32", "encoder_int8") if spec.id == "sam" else (spec.runtimes["native"]["encoder"],)
    unknown = [r for r in (*encoders, *decoders) if r not in spec.files and not (r == "encoder_fp32" and spec.id == "sam")]
    if unknown:
        raise SystemExit(f"sam-evaluate: {spec.id} has no files for {unknown}; it has {sorted(spec.files)}")
    report = {"model": spec.id, "note": checkpoint_note, "variants": {}}
    for e in encoders:
        for d in decoders:
            if not path(e).exists():
                print(f"sam-evaluate: {path(e)} missing (run `python build.py sam-export`); skipped")
                continue
            predictor = SamPredictor(OnnxRuntimeBackend(path(e), threads=threads),
                                     OnnxRuntimeBackend(path(d), threads=threads), spec)
            res = evaluate_predictor(predictor, data_root, max_objects=max_objects, diameters=diameters)
            res["latency"] = native_latency(path(e), path(d), threads)
            res["files"] = {"encoder": path(e).name, "decoder": path(d).name,
                            "encoder_bytes": path(e).stat().st_size, "decoder_bytes": path(d).stat().st_size}
            report["variants"][f"{e}+{d}"] = res
            print(format_sam_summary({"variants": {f"{e}+{d}": res}}), flush=True)
    return report


def format_sam_summary(report: dict) -> str:
    lines = ["| variant | set | images | objects | box mIoU | click mIoU | click mIoU, window from the "
             "segmentation's diameter | box IoU≥0.5 | click IoU≥0.5 | encoder ms | decoder ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, res in report["variants"].items():
        lat = res.get("latency", {})
        for group, s in res["summary"].items():
            lines.append(f"| {name} | {group} | {s['images']} | {s['objects']} | {s.get('box_miou', float('nan')):.3f} | "
                         f"{s.get('click_miou', float('nan')):.3f} | {s.get('click_sized_miou', float('nan')):.3f} | "
                         f"{s.get('box_iou>=0.5', float('nan')):.3f} | "
                         f"{s.get('click_iou>=0.5', float('nan')):.3f} | {lat.get('encoder_ms', '')} | "
                         f"{lat.get('decoder_ms', '')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    rep = evaluate_sam()
    if rep:
        print(format_sam_summary(rep))
        print(json.dumps({k: v["summary"] for k, v in rep["variants"].items()}, indent=1))
