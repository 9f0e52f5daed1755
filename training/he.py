"""Nuclei of stained slides (H&E): evaluation by source, and the fluorescence model fine-tuned
on the hematoxylin density of H&E images.

Three routes are compared on each H&E source (``training.datasets.HE_SETS``), as
the issue asks:

- the fluorescence models reading the hematoxylin density (``stain="hematoxylin"``,
  no H&E training at all, so every source is unseen);
- the RGB model ``nuclei_he`` (trained on DSB2018 colour images);
- the default fluorescence model fine-tuned on the hematoxylin density of H&E
  images (:data:`VARIANT`): one fold per left-out source, trained on the other
  sources only, scored on the source it never saw;
- the same fine-tuned on the RGB image itself (``inputs="rgb"``, its first
  convolution widened to three channels), folds only unless it wins.

The sources only ever scored (``training.datasets.HE_EVAL_ONLY_SETS``) are scored by the
shipped model in the fold column: it never saw them either.

Commands: ``python build.py he-train [--inputs rgb --folds-only]``, ``he-export``
(the model on every source into ``models/`` as ``nuclei_hematoxylin``), then
``python build.py he-evaluate [--record]``.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from . import data as D
from . import datasets as DS

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "he"
#: The shipped fluorescence model the H&E variant starts from. The shipped nuclei_hematoxylin started
#: from this file as it was on 2026-12-04; a run now starts from the current default (ENTRY says which).
PARENT = "nuclei_unet_s2d4_w24.onnx"
VARIANT = "he_hematoxylin_s2d4_w24"
DIAMETER = 20.0
SETTINGS = {"batch": 8, "crop": 192, "lr": 1e-3, "seed": 0, "touching_weight": 3.0, "boundary_width": 2,
            "warmup": 0.05, "log_every": 50, "eval_every": 10 ** 9, "diameter": DIAMETER,
            "scale_range": (0.7, 1.45)}
ITERATIONS = 4000
FOLD_ITERATIONS = 2400
MAX_IMAGES = 24
#: Smallest seed and object (px at the model's nucleus size, 20 px across) tried by
#: :func:`tune_thresholds`: stroma and chromatin texture leave small false objects.
MIN_SEED_SIZES = (4, 12, 30)
MIN_SIZES = (12, 40, 90)
#: The routes without H&E training scored on every source: a shipped model id, or
#: ``ID@hematoxylin`` for that fluorescence model reading the hematoxylin density.
ROUTES = ("nuclei_unet@hematoxylin", "nuclei@hematoxylin", "nuclei_he")
FILE = f"nuclei_{VARIANT.removeprefix('he_')}.onnx"
FILE_INT8 = FILE.replace(".onnx", "_int8.onnx")
#: The shipped H&E models (:func:`ship`), scored on each source's held-out split.
SHIPPED_IDS = ("nuclei_hematoxylin", "nuclei_hematoxylin_int8")
ENTRY = {
    "id": "nuclei_hematoxylin", "task": "nuclei-brightfield", "default": True, "stain": "hematoxylin",
    "name": "Nuclei, H&E / stained brightfield via the hematoxylin stain (space-to-depth U-Net, 1.1M params)",
    "description": "The fluorescence default of 2026-12-04 (nuclei, before it was retrained on more "
                   "sources) fine-tuned on the hematoxylin density of H&E "
                   "slides (colour deconvolution with Ruifrok-Johnston vectors, "
                   "piximi_py.preprocess.hematoxylin_density: nuclei bright as in fluorescence), nuclei "
                   "rescaled to 20 px across. Trained on MoNuSeg (TCGA, many organs and hospitals; CC BY-NC-SA "
                   "4.0), CoNSeP (colorectal; research use) and the DSB2018 colour images (CC0): three sources. "
                   "Experimental: on H&E sources it never saw it finds about half of the nuclei "
                   "(leave-one-source-out in models/README.md), far from the fluorescence models on fluorescence.",
}


def he_sets() -> list[Path]:
    """The H&E sets the models train on, in the data cache, converted on first use (needs the
    git mirrors)."""
    return [DS.FETCHERS[name]() for name in DS.HE_SETS]


def eval_only_sets() -> list[Path]:
    """The H&E sets only ever scored (``training.datasets.HE_EVAL_ONLY_SETS``), as :func:`he_sets`."""
    return [DS.FETCHERS[name]() for name in DS.HE_EVAL_ONLY_SETS]


#: What the fine-tuned model reads: the hematoxylin density (one channel, as the parent), the
#: same trained with stain leakage augmented ("mixed"), or the RGB image itself (the parent's
#: first convolution widened to three channels).
INPUTS = ("hematoxylin", "rgb", "mixed")
#: Inputs "mixed": the hematoxylin density with up to this share of the eosin and residual
#: densities mixed in per crop, either way (:func:`training.data.mix_stains`).
STAIN_MIX = 0.25


def _fold_key(inputs: str) -> str:
    """The report's key for the folds reading ``inputs``."""
    return "fold" if inputs == "hematoxylin" else f"fold_{inputs}"


def fold_dir(source: str, inputs: str = "hematoxylin") -> Path:
    return RUNS / f"{'' if inputs == 'hematoxylin' else inputs + '_'}without_{source}"


def _channels(inputs: str) -> dict:
    if inputs not in INPUTS:
        raise ValueError(f"unknown input {inputs!r}: one of {INPUTS}")
    return {"hematoxylin": {"channels": 1, "stain": "hematoxylin"},
            "mixed": {"channels": 1, "stain": "hematoxylin", "stain_mix": STAIN_MIX},
            "rgb": {"channels": 3, "stain": ""}}[inputs]


def widen_to_rgb(model):
    """The one-channel ``model`` reading RGB instead: the first convolution's weights are shared
    by the three channels with the sign flipped (stained nuclei are dark where the parent's are
    bright); the rest is the parent's."""
    import torch

    from .models.unet import Unet
    from .train import shipped_config

    wide = Unet(**{**shipped_config(ROOT / "models" / PARENT), "in_channels": 3})
    state = model.state_dict()
    first = next(k for k, v in state.items() if v.ndim == 4 and v.shape[1] == model.space_to_depth ** 2)
    # pixel_unshuffle puts channel c's cells at c * r**2 + k: repeat the one channel's weights per colour
    state[first] = -torch.cat([state[first]] * 3, dim=1) / 3
    wide.load_state_dict(state)
    return wide


def initial_checkpoint(sets, out: Path, *, seed: int = 0, inputs: str = "hematoxylin") -> Path:
    """:data:`PARENT` rebuilt in PyTorch (widened to RGB for ``inputs="rgb"``, :func:`widen_to_rgb`)
    with batch norms calibrated on crops of ``sets`` as the model will read them, so that
    fine-tuning starts from the shipped model's function."""
    from .prune import calibrate_batch_norms, calibration_crops
    from .train import model_config, save_checkpoint, shipped_config, unet_from_onnx

    ch = _channels(inputs)
    crops = calibration_crops(sets, D.SHARED_DATA, channels=ch["channels"], batch=SETTINGS["batch"],
                              crop=SETTINGS["crop"], seed=seed, stain=ch["stain"], diameter=DIAMETER)
    model = unet_from_onnx(ROOT / "models" / PARENT, **shipped_config(ROOT / "models" / PARENT))
    if inputs == "rgb":
        model = widen_to_rgb(model)
    model = calibrate_batch_norms(model, crops)
    enc = _encoder_settings()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, model_config(model, ch["channels"], enc["encoder"], enc["depth"], enc["encoder_kwargs"]),
                    out, 0)
    return out


def train_one(out: Path, sets, *, iterations: int, exclude_sources=(), threads: int = 2,
              inputs: str = "hematoxylin", device: str = "cpu", workers: int = 0, budget: float = 0,
              seed: int = SETTINGS["seed"]) -> Path:
    """Fine-tune :data:`PARENT` on ``sets`` (less ``exclude_sources``) into ``out/model.pt`` and
    export ``out/model.onnx``; on ``device`` with ``workers`` data loaders, for ``budget``
    seconds of training instead of ``iterations`` when given; ``seed`` draws the crops (and the
    batch-norm calibration's)."""
    from .export import export_onnx
    from .train import train

    kept = [s for s in sets if s.name not in exclude_sources]
    start = initial_checkpoint(kept, out / "init.pt", inputs=inputs, seed=seed)
    settings = {**SETTINGS, **_encoder_settings(), **_channels(inputs), "seed": seed}
    ckpt = train(out, sets=[str(s) for s in kept], iterations=iterations, init_from=start, threads=threads,
                 exclude_sources=exclude_sources, device=device, workers=workers, time_budget_s=budget,
                 **settings)
    export_onnx(ckpt, out / "model.onnx")
    return out / "model.onnx"


def _encoder_settings() -> dict:
    from .cli import SHIPPED
    from .zoo import VARIANTS

    cfg = VARIANTS[next(c["variant"] for c in SHIPPED.values() if c["file"] == PARENT)]
    return {"encoder": cfg["encoder"], "encoder_kwargs": cfg["encoder_kwargs"], "depth": cfg["depth"]}


def train_all(*, folds: bool = True, threads: int = 2, iterations: int = ITERATIONS,
              fold_iterations: int = FOLD_ITERATIONS, inputs: str = "hematoxylin",
              final: bool = True, sources=None, budget: float = 0, fold_budget: float = 0,
              **where) -> list[Path]:
    """The leave-one-source-out folds (of ``sources`` only, when given), then (``final``) the
    model on every source. ``budget`` / ``fold_budget``: seconds of training each instead of
    iterations; ``where``: ``device`` and ``workers`` (:func:`train_one`)."""
    sets = he_sets()
    unknown = set(sources or ()) - {s.name for s in sets}
    if unknown:
        raise SystemExit(f"unknown H&E source(s) {sorted(unknown)}: one of {[s.name for s in sets]}")
    done = []
    for root in sets if folds else ():
        if sources is None or root.name in sources:
            done.append(train_one(fold_dir(root.name, inputs), sets, iterations=fold_iterations,
                                  exclude_sources=(root.name,), threads=threads, inputs=inputs,
                                  budget=fold_budget, **where))
    if final:
        name = VARIANT if inputs == "hematoxylin" else f"{VARIANT}_{inputs}"
        done.append(train_one(RUNS / name, sets, iterations=iterations, threads=threads, inputs=inputs,
                              budget=budget, **where))
    return done


def route_spec(route: str):
    """The model spec of a route: a shipped id, or ``ID@hematoxylin`` for that shipped model
    reading the hematoxylin density."""
    import piximi_py

    specs = {s.id: s for s in piximi_py.load_models()}
    model_id, _, stain = route.partition("@")
    spec = specs[model_id]
    return dataclasses.replace(spec, stain=stain) if stain else spec


def fold_spec(inputs: str = "hematoxylin"):
    """A fine-tuned model's spec: the shipped ``nuclei_hematoxylin`` where it is this variant,
    else the default model's, reading the hematoxylin density or RGB (``inputs``)."""
    import piximi_py

    if inputs == "rgb":
        return dataclasses.replace(route_spec("nuclei"), **_channels(inputs))
    shipped = next((s for s in piximi_py.load_models() if s.id == ENTRY["id"] and s.file == FILE), None)
    return shipped or route_spec("nuclei@hematoxylin")


def score(spec, onnx_path: Path, paths: list[Path]) -> list[dict]:
    """Per-image AP@0.5, mAP and F1 of ``onnx_path`` run through the pipeline as ``spec`` says
    (diameter estimated)."""
    import piximi_py
    from piximi_py.backends.onnxruntime import OnnxRuntimeBackend
    from piximi_py.io import read_image
    from piximi_py.metrics import evaluate_instances
    from piximi_py.pipeline import segment_async

    backend = OnnxRuntimeBackend(str(onnx_path))
    rows = []
    for path in paths:
        truth = read_image(path.parent.parent / "masks" / path.name).astype(np.int32)
        seg = piximi_py.run_sync(segment_async(read_image(path, color=True), spec, backend))
        rows.append({"image": path.stem, "diameter": seg.diameter, **evaluate_instances(truth, seg.labels)})
    return rows


def _summary(rows) -> dict:
    return {k: round(float(np.mean([r[k] for r in rows])), 4) if rows else float("nan")
            for k in ("ap50", "map", "f1")}


def evaluate_by_source(*, routes=ROUTES, folds=INPUTS, shipped_variant: bool = True,
                       max_images: int = MAX_IMAGES) -> dict:
    """Every route on every H&E source, the fold models (of the inputs ``folds`` names) on the
    source each never saw, and the model trained on all sources on each source's held-out split.

    On a source nothing trains on (:func:`eval_only_sets`) the shipped model is its "fold": it
    never saw that source either."""
    import piximi_py

    models_dir = piximi_py.default_models_dir()
    report = {"variant": VARIANT, "fold_iterations": FOLD_ITERATIONS, "iterations": ITERATIONS,
              "max_images": max_images, "sources": {}, "eval_only": list(DS.HE_EVAL_ONLY_SETS)}
    specs = {s.id: s for s in piximi_py.load_models(models_dir)}
    shipped = specs.get(ENTRY["id"])
    for root in [*he_sets(), *eval_only_sets()]:
        source = root.name
        paths = D.source_images(root, max_images, annotated_only=True)
        entry = {"images": len(paths)}
        for route in routes:
            spec = route_spec(route)
            entry[route] = _summary(score(spec, models_dir / spec.file, paths))
        if source in DS.HE_EVAL_ONLY_SETS:
            if shipped is not None and shipped.file == FILE and "hematoxylin" in folds:
                entry["fold"] = _summary(score(shipped, models_dir / shipped.file, paths))
                entry["fold_model"] = ENTRY["id"]
            report["sources"][source] = entry
            print(source, json.dumps(entry), flush=True)
            continue
        for inputs in folds:
            onnx_path = fold_dir(source, inputs) / "model.onnx"
            if not onnx_path.exists():
                continue
            spec = tuned_spec(onnx_path, fold_spec(inputs), exclude_sources=(source,))
            key = _fold_key(inputs)
            entry[key] = _summary(score(spec, onnx_path, paths))
            entry[f"{key}_thresholds"] = {k: spec.postprocess[k] for k in ("foreground_threshold", "seed_threshold",
                                                                           "min_seed_size", "min_size")}
        held_out = D.source_images(root, max_images, validation_only=True, annotated_only=True)
        for model_id in SHIPPED_IDS if shipped_variant else ():
            spec = specs.get(model_id)
            if spec is not None and spec.file.startswith(FILE.removesuffix(".onnx")):
                entry[model_id] = {"images": len(held_out),
                                   **_summary(score(spec, models_dir / spec.file, held_out))}
        report["sources"][source] = entry
        print(source, json.dumps(entry), flush=True)
    for key in (*routes, *map(_fold_key, INPUTS)):
        rows = [e[key] for e in report["sources"].values() if key in e]
        if rows:
            report.setdefault("mean", {})[key] = {k: round(float(np.mean([r[k] for r in rows])), 4)
                                                  for k in ("ap50", "map", "f1")}
    if "fold" in report.get("mean", {}):
        report["fold_mean"] = report["mean"]["fold"]  # as training.cells names it
    return report


def format_report(report: dict, routes=ROUTES) -> str:
    """The leave-one-source-out table, Markdown."""
    def cell(r):
        return f"{r['ap50']:.3f} / {r['map']:.3f} / {r['f1']:.3f}" if r else "—"

    names = {"nuclei_unet@hematoxylin": "`nuclei_unet` on the hematoxylin density",
             "nuclei@hematoxylin": "`nuclei` on the hematoxylin density",
             "nuclei_he": "`nuclei_he` (RGB; trained on DSB2018 colour)",
             "fold": "**fine-tuned on the hematoxylin density, fold (never saw the source)**",
             "fold_mixed": "fine-tuned on the hematoxylin density, stain leakage augmented, fold",
             "fold_rgb": "fine-tuned on RGB, fold (never saw the source)"}
    keys = [*routes, "fold", *(k for k in ("fold_mixed", "fold_rgb") if k in report.get("mean", {}))]
    lines = ["| left-out source | images | " + " | ".join(names.get(k, k) for k in keys) + " | "
             + " | ".join(f"shipped `{m}` (held-out split, seen source)" for m in SHIPPED_IDS) + " |",
             "|---" * (len(keys) + 2 + len(SHIPPED_IDS)) + "|"]
    for source, e in report["sources"].items():
        if e.get("fold_model"):  # a source nothing trains on: the shipped model never saw it
            source = f"{source} (scored only; fold column: shipped `{e['fold_model']}`)"
        lines.append(f"| {source} | {e['images']} | " + " | ".join(cell(e.get(k)) for k in keys) + " | "
                     + " | ".join(f"{cell(e[m])} ({e[m]['images']} images)" if m in e else "—"
                                  for m in SHIPPED_IDS) + " |")
    mean = report.get("mean", {})
    lines.append("| **mean** | | " + " | ".join(f"**{cell(mean.get(k))}**" for k in keys) + " |"
                 + " |" * len(SHIPPED_IDS))
    return "\n".join(lines)


def tune_thresholds(onnx_path: Path, spec, max_per_source: int = 4, exclude_sources=()) -> dict:
    """Foreground and seed thresholds with the best mean AP@0.5 on training-split images
    (never the held-out ones, nor any image of ``exclude_sources``), each segmented at its
    true median nucleus diameter."""
    from piximi_py.io import read_image
    from piximi_py.pipeline import prepare_input

    from .zoo_report import tune_on_images

    paths = [p for root in he_sets() if root.name not in exclude_sources
             for p in [p for p in D.source_images(root, 10 ** 6, annotated_only=True)
                       if not D.is_validation(f"{root.name}/{p.stem}")][:max_per_source]]
    return tune_on_images(onnx_path, spec, paths, lambda path: prepare_input(read_image(path, color=True), spec),
                          MIN_SEED_SIZES, MIN_SIZES)


def tuned_spec(onnx_path: Path, spec, exclude_sources=()):
    """``spec`` with the post-processing thresholds of :func:`tune_thresholds` for ``onnx_path``:
    a fold's are tuned as the shipped model's are, on the sources it trained on (never
    ``exclude_sources``)."""
    post = tune_thresholds(onnx_path, spec, exclude_sources=exclude_sources)
    return dataclasses.replace(spec, postprocess=post)


def ship(models_dir: Path | None = None) -> dict:
    """Export the model trained on every source into ``models/`` as ``nuclei_hematoxylin`` (and
    its int8 copy), thresholds tuned on training images, with index entries and rdf.yaml."""
    import torch

    import piximi_py

    from .export import export_onnx, register_model
    from .rdf import write_rdf
    from .train import input_multiple
    from .zoo_report import TEMPLATE, calibration_tiles, recorded_figures, ship_int8

    models_dir = Path(models_dir or piximi_py.default_models_dir())
    checkpoint = RUNS / VARIANT / "model.pt"
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    export_onnx(checkpoint, models_dir / FILE)
    spec = dataclasses.replace(route_spec("nuclei@hematoxylin"), file=FILE,
                               input_multiple=input_multiple(ckpt["config"]), diameter=DIAMETER)
    post = tune_thresholds(models_dir / FILE, spec)
    metrics, latency = recorded_figures(models_dir, ENTRY["id"], FILE, post)
    entry = {**TEMPLATE, **ENTRY, "file": FILE, "channels": 1, "input_multiple": spec.input_multiple,
             "postprocess": post, "diameter": DIAMETER, "normalize": spec.normalize,
             "metrics": metrics, "latency_ms_512": latency}
    entry = register_model(models_dir / "index.json", entry)
    write_rdf(models_dir, entry, ckpt)
    ship_int8(models_dir, entry, FILE_INT8,
              calibration_tiles(1, sets=[str(p) for p in he_sets()], stain="hematoxylin"))
    return entry


def write_card(report: dict, page: Path = ROOT / "models" / "README.md") -> None:
    """Replace (or add) the ``nuclei_hematoxylin`` card of ``models/README.md`` with this evaluation."""
    import piximi_py

    from .export import replace_card

    spec = next(s for s in piximi_py.load_models() if s.id == ENTRY["id"])
    card = (f"## `nuclei_hematoxylin` (and `nuclei_hematoxylin_int8`)\n\n{spec.description}\n\n"
            "- Input: the hematoxylin density of an RGB image (`stain: hematoxylin`), percentile-normalized; "
            f"nuclei rescaled to {spec.diameter:g} px across (diameter estimated or given).\n"
            f"- Output: background / nucleus interior / nucleus boundary; thresholds {spec.postprocess} "
            "(tuned on training images).\n"
            f"- Training: from `{PARENT}` (batch norms recalibrated on hematoxylin crops), {ITERATIONS} "
            f"iterations at lr {SETTINGS['lr']:g}, batch {SETTINGS['batch']} of {SETTINGS['crop']}² crops "
            f"rescaled to nuclei of {DIAMETER:g} px (× {SETTINGS['scale_range'][0]}–{SETTINGS['scale_range'][1]}), "
            "on 2 CPU cores (`python build.py he-train`); each set's validation split held out.\n"
            f"- Data: {', '.join(DS.HE_SETS)}; scored only, never trained on: {', '.join(DS.HE_EVAL_ONLY_SETS)} "
            "(`python -m training.datasets NAME`; each set's README.md gives the repository, commit, paths and "
            "licence).\n"
            "- Licence of the training data: MoNuSeg CC BY-NC-SA 4.0 (non-commercial), CoNSeP research use "
            "(terms not stated where it was fetched), DSB2018 CC0.\n\n"
            f"Leave-one-source-out, `python build.py he-evaluate` (folds: {FOLD_ITERATIONS} iterations on the "
            "other training sources; on a source nothing trains on, the shipped model; diameter estimated; "
            "AP@0.5 / mAP / F1):\n\n" + format_report(report) + "\n\n")
    replace_card(page, "nuclei_hematoxylin", card)
