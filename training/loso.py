"""Leave-one-source-out: the accuracy a user with a microscope we never trained on can expect.

For each source (:func:`training.data.source_of`), a fold model is trained
on every other source (the same variant, a shorter schedule) and scored on
every image of the left-out source, through the ``piximi_py`` pipeline with
the diameter estimated, as the page runs it. The headline is the mean over
sources. The shipped models are scored on the same images beside it: on a
source they trained on, that is only a random split (their held-out
images), and it is marked so.

``python build.py evaluate --by-source`` prints the table (folds trained
on first use: ``python build.py loso-train``).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path

import numpy as np

from . import data as D

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "loso"
#: The variant the folds train (the shipped default's recipe) and their schedule.
FOLD_VARIANT = "unet_s2d4_w24_sized"
FOLD_ITERATIONS = 1000
#: Sources with a fold of their own; the images of the others only ever train.
FOLD_SOURCES = ("mnfinder", "dsb_256x256", "dsb_360x360", "dsb_520x696", "kromp_dapi", "bitdepth_dapi")
#: Sets never trained on by anything (``python -m training.datasets NAME`` fetches them): each is a
#: source that every model trained on the others never saw, so the fold recipe trained on all the
#: training sources is the fold of every one of them: one run (:func:`fold_dir`), or else
#: ``runs/zoo/FOLD_VARIANT``.
EVAL_ONLY_SETS = ("aits_u2os", "koyuncu_hoechst")
#: Images scored per source at most (chosen by a hash of the name, stable as sets grow).
MAX_IMAGES = 40


def gray_sets(data_root: Path) -> list[Path]:
    from .evaluate import set_root
    from .zoo import GRAY_ALL

    return [r for r in (set_root(s, data_root) for s in (*GRAY_ALL, *EVAL_ONLY_SETS)) if r.is_dir()]


@functools.lru_cache(maxsize=None)
def image_sources(root: Path) -> tuple:
    """``(image path, source)`` of every image of the set at ``root`` (sizes read from the headers)."""
    from piximi_py.io import describe_image

    found = []
    for path in sorted((root / "images").glob("*.tif")) if root.is_dir() else []:
        sizes = describe_image(path.read_bytes(), path.name)["sizes"]
        found.append((path, D.source_of(root.name, (sizes["Y"], sizes["X"]))))
    return tuple(found)


def source_pairs(source: str, data_root: Path = D.SHARED_DATA, max_images: int = MAX_IMAGES):
    """(set, name, image path, mask path) of up to ``max_images`` images of ``source``."""
    found = []
    for root in gray_sets(data_root):
        for path, image_source in image_sources(root):
            if image_source == source:
                name = f"{root.name}/{path.stem}"
                found.append((hashlib.sha1(name.encode()).hexdigest(), root.name, name, path,
                              root / "masks" / path.name))
    return [f[1:] for f in sorted(found)[:max_images]]


def fold_dir(source: str) -> Path:
    """The run of the fold that leaves ``source`` out; the sets nothing trains on share one (the
    recipe on every training source: a run per set would train the same model again)."""
    return RUNS / ("without_eval_only_sets" if source in EVAL_ONLY_SETS else f"without_{source}")


def fold_model(source: str, data_root: Path = D.SHARED_DATA) -> Path | None:
    """The ONNX file of a model of the fold recipe that never saw ``source``: its fold, or for a
    source of :data:`EVAL_ONLY_SETS` the recipe trained on every training source; None if absent."""
    if (fold_dir(source) / "model.onnx").exists():
        return fold_dir(source) / "model.onnx"
    everything = ROOT / "runs" / "zoo" / FOLD_VARIANT / "model.onnx"
    if source in sources_in_sets(EVAL_ONLY_SETS, data_root) and everything.exists():
        return everything
    return None


def evaluated_sources(data_root: Path = D.SHARED_DATA) -> tuple:
    """:data:`FOLD_SOURCES` and the sources of the :data:`EVAL_ONLY_SETS` that are here."""
    return FOLD_SOURCES + tuple(sorted(sources_in_sets(EVAL_ONLY_SETS, data_root)))


def train_folds(sources=None, *, data_root: Path = D.SHARED_DATA, iterations: int = FOLD_ITERATIONS,
                threads: int = 2, start: Path | None = None, lr: float | None = None) -> list[Path]:
    """Train (or keep) one fold model per source (default :func:`evaluated_sources`), without that
    source; returns their ONNX files.

    With ``start``, a folder of earlier fold runs (e.g. longer ones from a GPU, on fewer sets), each
    fold continues from the checkpoint there that never saw its source (:func:`start_checkpoint`).
    """
    from .export import export_onnx
    from .zoo import train_variant

    files = []
    for source in evaluated_sources(data_root) if sources is None else sources:
        onnx_path = fold_dir(source) / "model.onnx"
        if not onnx_path.exists():
            extra = {"lr": lr} if lr else {}
            if start is not None:
                extra["init_from"] = start_checkpoint(Path(start), source, data_root)
            ckpt = train_variant(FOLD_VARIANT, RUNS, data_root=data_root, iterations=iterations, threads=threads,
                                 run_name=fold_dir(source).name,
                                 exclude_sources=list(EVAL_ONLY_SETS) if source in EVAL_ONLY_SETS else [source],
                                 **extra)
            export_onnx(ckpt, onnx_path)
        files.append(onnx_path)
    return files


def never_saw(run: dict, source: str, data_root: Path = D.SHARED_DATA) -> bool:
    """Whether a training run (a checkpoint's ``run`` record) and the runs it started from never
    trained on an image of ``source``; ``FileNotFoundError`` when a set it names is not here to tell."""
    from .evaluate import set_root

    sets = [Path(s).name for s in run.get("sets", [])]
    missing = [s for s in sets if not set_root(s, data_root).is_dir()]
    if missing:
        raise FileNotFoundError(f"cannot tell whether a run saw {source}: {', '.join(missing)} not here "
                                "(../shared/data, python -m training.datasets NAME)")
    seen = source in sources_in_sets(sets, data_root) and source not in run.get("exclude_sources", [])
    return bool(sets) and not seen and (not run.get("start") or never_saw(run["start"], source, data_root))


def start_checkpoint(start: Path, source: str, data_root: Path = D.SHARED_DATA) -> Path:
    """The checkpoint a fold of ``source`` continues from: ``start/without_SOURCE/model.pt``, else
    ``start/everything/model.pt`` (for sources no earlier fold left out); refused if it saw ``source``."""
    import torch

    for path in (start / fold_dir(source).name / "model.pt", start / "everything" / "model.pt"):
        if path.exists():
            if not never_saw(torch.load(path, map_location="cpu", weights_only=True).get("run", {}), source,
                             data_root):
                raise ValueError(f"{path} was trained on images of {source}: it cannot start its fold")
            return path
    raise FileNotFoundError(f"no checkpoint to start the fold of {source} from in {start}")


def fold_schedule(sources=FOLD_SOURCES) -> str:
    """How the fold models present were trained, from their checkpoints: iterations, device, time,
    and the runs they started from."""
    import torch

    runs = [torch.load(fold_dir(s) / "model.pt", map_location="cpu", weights_only=True).get("run", {})
            for s in sources if (fold_dir(s) / "model.pt").exists()]
    return _schedule(runs) if runs else f"{FOLD_ITERATIONS} iterations"


def _schedule(runs: list[dict]) -> str:
    its = sorted(r.get("iterations", 0) for r in runs)
    text = f"{its[0]}" + (f" to {its[-1]}" if its[-1] != its[0] else "") + f" iterations of batch {runs[0].get('batch')}"
    if runs[0].get("device", "cpu") != "cpu":
        text += f", {max(r.get('seconds', 0) for r in runs):.0f} s each side by side on one GPU"
    else:
        text += " on the CPU"
    starts = [r["start"] for r in runs if r.get("start")]
    if starts:
        sets = sorted({Path(s).name for r in starts for s in r.get("sets", [])})
        text += (f" at learning rate {runs[0].get('lr')}, continuing folds of {_schedule(starts)} on fewer sets "
                 f"({', '.join(sets)}; each fold without its source)")
    return text


def score(spec, onnx_path: Path, pairs, augment: bool = False) -> list[dict]:
    """Per-image AP@0.5, mAP and F1 of one model file run as ``spec`` says, diameter estimated
    (``augment``: averaged over scales, :func:`piximi_py.pipeline.predict_masks_averaged`)."""
    import piximi_py
    from piximi_py.backends.onnxruntime import OnnxRuntimeBackend
    from piximi_py.io import read_image
    from piximi_py.metrics import evaluate_instances
    from piximi_py.pipeline import segment_async

    backend = OnnxRuntimeBackend(str(onnx_path))
    rows = []
    for set_name, name, image_path, mask_path in pairs:
        truth = read_image(mask_path).astype(np.int32)
        seg = piximi_py.run_sync(segment_async(read_image(image_path), spec, backend, augment=augment))
        rows.append({"image": name, "set": set_name, "diameter": seg.diameter,
                     **evaluate_instances(truth, seg.labels)})
    return rows


def _mean(rows, key):
    return round(float(np.mean([r[key] for r in rows])), 4) if rows else float("nan")


def evaluate_by_source(models=("nuclei",), sources=None, *, data_root: Path = D.SHARED_DATA,
                       models_dir=None, folds: bool = True, augment: bool = False) -> dict:
    """Fold models on their left-out source, and the shipped ``models`` on every source
    (default :func:`evaluated_sources`); with ``augment``, every model averaged over scales."""
    import piximi_py

    sources = evaluated_sources(data_root) if sources is None else sources
    models_dir = Path(models_dir or piximi_py.default_models_dir())
    specs = piximi_py.load_models(models_dir)
    default = piximi_py.find_model(specs, None)
    report = {"sources": {}, "fold_variant": FOLD_VARIANT, "fold_iterations": FOLD_ITERATIONS,
              "fold_schedule": fold_schedule(sources), "augment": augment}
    for source in sources:
        pairs = source_pairs(source, data_root)
        entry = {"images": len(pairs)}
        fold = fold_model(source, data_root) if folds else None
        if fold is not None:
            spec = dataclasses.replace(default, id=f"without_{source}")
            rows = score(spec, fold, pairs, augment)
            entry["fold"] = {k: _mean(rows, k) for k in ("ap50", "map", "f1")}
            entry["fold"]["trained_on"] = "every other source" if fold.parent.parent == RUNS else \
                "every training source (this set is for evaluation only)"
        for model_id in models:
            spec = piximi_py.find_model(specs, model_id)
            rows = score(spec, models_dir / spec.file, pairs, augment)
            seen = trained_on(model_id, source, data_root)
            if seen:  # only its held-out images count, and they are a random split
                rows = [r for r in rows if D.is_validation(r["image"])]
            entry[model_id] = {"seen_in_training": seen, "images": len(rows),
                               **{k: _mean(rows, k) for k in ("ap50", "map", "f1")}}
        report["sources"][source] = entry
        print(source, json.dumps(entry), flush=True)
    with_fold = [e["fold"] for e in report["sources"].values() if "fold" in e]
    report["eval_only_sets"] = [s for s in EVAL_ONLY_SETS if s in sources]  # a set's source is its name
    if with_fold:
        report["unseen_mean"] = {k: round(float(np.mean([f[k] for f in with_fold])), 4)
                                 for k in ("ap50", "map", "f1")}
        report["unseen_min_ap50"] = min(f["ap50"] for f in with_fold)
    return report


def sources_in_sets(sets, data_root: Path = D.SHARED_DATA) -> set[str]:
    """Every source (:func:`training.data.source_of`) with an image in one of ``sets``."""
    from .evaluate import set_root

    return {source for name in sets for _, source in image_sources(set_root(name, data_root))}


def trained_on(model_id: str, source: str, data_root: Path = D.SHARED_DATA) -> bool:
    """Whether the shipped ``model_id`` saw images of ``source`` (in its training split)."""
    from .cli import SHIPPED
    from .zoo import VARIANTS

    base = model_id.removesuffix("_int8")
    variant = SHIPPED[base]["variant"] if base in SHIPPED else None
    return variant is not None and source in sources_in_sets(VARIANTS[variant]["sets"], data_root)


def format_by_source(report: dict, models=("nuclei",)) -> str:
    lines = ["| left-out source | images | fold model AP@0.5 / mAP / F1 | " +
             " | ".join(f"`{m}` AP@0.5 / mAP" for m in models) + " |",
             "|---" * (3 + len(models)) + "|"]
    for source, e in report["sources"].items():
        fold = e.get("fold")
        cells = [f"{fold['ap50']:.3f} / {fold['map']:.3f} / {fold['f1']:.3f}" if fold else "—"]
        if fold and fold.get("trained_on", "").startswith("every training source"):
            cells[0] += " (trained on every training source; this set is never trained on)"
        for m in models:
            r = e[m]
            cells.append(f"{r['ap50']:.3f} / {r['map']:.3f}" + (" (seen: random split)" if r["seen_in_training"]
                                                               else " (unseen)"))
        lines.append(f"| {source} | {e['images']} | " + " | ".join(cells) + " |")
    if "unseen_mean" in report:
        u = report["unseen_mean"]
        lines.append(f"| **mean of left-out sources** | | **{u['ap50']:.3f} / {u['map']:.3f} / {u['f1']:.3f}** |"
                     + " |" * len(models))
    if report.get("augment"):
        lines.append("\nEvery model averaged over scales (augment).")
    return "\n".join(lines)
