"""The model zoo: every U-Net variant we train, and one accelerator run that trains them all.

``VARIANTS`` is the single list of what the zoo holds; ``python build.py
zoo-train`` trains one or all of them (CPU or GPU), and :mod:`training.zoo_report`
evaluates, times and tabulates whatever was trained.

On a lent GPU machine (16 cores, one GPU, minutes of time) the whole zoo is
trained in one command, several variants at once on the one GPU::

    python -m training.zoo gpu-run --data-root .gpu/data --out $OUT

Phase 1 trains the independent variants side by side (and fine-tunes SAM
when its checkpoint is given); phase 2 trains the students that learn from
a phase-1 teacher. Checkpoints are float16 and packed into a few files, as
the machine hands back at most 8.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GRAY = ["dsb2018_stage1test_gray", "mnfinder"]
#: every real fluorescence set with a licence to train on, for the size-aware models
#: (``python -m training.datasets NAME`` fetches the last four)
GRAY_ALL = ["dsb2018_stage1test_gray", "stardist_wheel", "mnfinder", "dsb2018_train", "kromp_dapi", "bitdepth_dapi"]
#: the size-aware models' nucleus diameter (px) and the random rescaling around it: wide enough for
#: the diameter estimate's error and the spread of sizes within one image
SIZED = {"diameter": 20.0, "scale_range": (0.55, 1.8)}
COLOR = ["dsb2018_stage1test_color", "dsb2018_stage1test_gray", "mnfinder"]

#: name -> training settings (keyword arguments of :func:`training.train.train`).
#: ``phase`` 2 variants need their ``teacher`` (a phase-1 variant) first; a ``teacher``
#: ending in ``.onnx`` is a shipped model in ``models/``, rebuilt in PyTorch from the file;
#: ``prune_from`` starts from a trained variant, or a shipped ``.onnx`` model, pruned by
#: :mod:`training.prune`.
VARIANTS = {
    "unet_w16_real": {"encoder": "vanilla", "encoder_kwargs": {"base_width": 16}, "depth": 4,
                      "sets": GRAY, "synthetic_fraction": 0.0, "lr": 2e-3},
    "unet_w16": {"encoder": "vanilla", "encoder_kwargs": {"base_width": 16}, "depth": 4,
                 "sets": GRAY, "synthetic_fraction": 0.3, "lr": 2e-3},
    # no full-resolution level: conv kernels run ~7x slower in WebAssembly than natively (ZOO.md)
    "unet_s2d_w16": {"encoder": "vanilla", "encoder_kwargs": {"base_width": 16, "space_to_depth": 2}, "depth": 4,
                     "sets": GRAY, "synthetic_fraction": 0.3, "lr": 2e-3},
    # narrower or coarser still, for the page's speed (models/ZOO.md: none runs within 2x of native); the
    # "_distilled" ones also learn the probabilities of nuclei_unet (the shipped unet_w16)
    "unet_s2d_w12": {"encoder": "vanilla", "encoder_kwargs": {"base_width": 12, "space_to_depth": 2}, "depth": 4,
                     "sets": GRAY, "synthetic_fraction": 0.3, "lr": 2e-3},
    "unet_s2d_w12_distilled": {"encoder": "vanilla", "encoder_kwargs": {"base_width": 12, "space_to_depth": 2},
                               "depth": 4, "sets": GRAY, "synthetic_fraction": 0.3, "lr": 2e-3,
                               "teacher": "nuclei_unet_w16.onnx"},
    "unet_s2d_w16_distilled": {"encoder": "vanilla", "encoder_kwargs": {"base_width": 16, "space_to_depth": 2},
                               "depth": 4, "sets": GRAY, "synthetic_fraction": 0.3, "lr": 2e-3,
                               "teacher": "nuclei_unet_w16.onnx"},
    "unet_s2d_w8_distilled": {"encoder": "vanilla", "encoder_kwargs": {"base_width": 8, "space_to_depth": 2},
                              "depth": 4, "sets": GRAY, "synthetic_fraction": 0.3, "lr": 3e-3,
                              "teacher": "nuclei_unet_w16.onnx"},
    "unet_s2d4_w24_distilled": {"encoder": "vanilla", "encoder_kwargs": {"base_width": 24, "space_to_depth": 4},
                                "depth": 3, "sets": GRAY, "synthetic_fraction": 0.3, "lr": 2e-3,
                                "teacher": "nuclei_unet_w16.onnx"},
    "unet_s2d4_w24_slim_distilled": {"encoder": "vanilla", "depth": 3, "sets": GRAY, "synthetic_fraction": 0.3,
                                     "encoder_kwargs": {"base_width": 24, "space_to_depth": 4,
                                                        "decoder_channels": [64, 32, 16]},
                                     "lr": 2e-3, "teacher": "nuclei_unet_w16.onnx"},
    # structured pruning: half of each block's inner channels (training.prune), then a short fine-tune
    "unet_s2d4_w24_pruned50": {"encoder": "vanilla", "depth": 3, "sets": GRAY, "synthetic_fraction": 0.3,
                               "encoder_kwargs": {"base_width": 24, "space_to_depth": 4, "inner_ratio": 0.5},
                               "lr": 5e-4, "teacher": "nuclei_unet_w16.onnx",
                               "prune_from": "unet_s2d4_w24_distilled", "phase": 2},
    # the same from the shipped default file (its checkpoint is not kept): 5/8 of the inner channels,
    # chosen by activation (training.prune), fine-tuned with the unpruned default as teacher; its row
    # pruned the distilled default, which the file held until 2026-12-05
    "unet_s2d4_w24_inner62": {"encoder": "vanilla", "depth": 3, "sets": GRAY, "synthetic_fraction": 0.3,
                              "encoder_kwargs": {"base_width": 24, "space_to_depth": 4, "inner_ratio": 0.625},
                              "lr": 5e-4, "teacher": "nuclei_unet_s2d4_w24.onnx",
                              "prune_from": "nuclei_unet_s2d4_w24.onnx"},
    # the same pruning of the default since 2026-12-05 (size-aware, every training source), as it was trained
    "unet_s2d4_w24_sized_all_inner62": {"encoder": "vanilla", "depth": 3, "sets": GRAY_ALL, "synthetic_fraction": 0.15,
                                        "encoder_kwargs": {"base_width": 24, "space_to_depth": 4, "inner_ratio": 0.625},
                                        "lr": 5e-4, "teacher": "nuclei_unet_s2d4_w24.onnx",
                                        "prune_from": "nuclei_unet_s2d4_w24.onnx", **SIZED},
    # the same at 3/4 of the inner channels: one more point of the accuracy / size curve
    "unet_s2d4_w24_inner75": {"encoder": "vanilla", "depth": 3, "sets": GRAY, "synthetic_fraction": 0.3,
                              "encoder_kwargs": {"base_width": 24, "space_to_depth": 4, "inner_ratio": 0.75},
                              "lr": 5e-4, "teacher": "nuclei_unet_s2d4_w24.onnx",
                              "prune_from": "nuclei_unet_s2d4_w24.onnx"},
    # the training target, measured (models/ZOO.md, "what the boundary class buys"): one schedule, no
    # teacher, with the boundary class (2-pixel rims) and without it (boundary_width 0: every object
    # pixel is "interior", a foreground/background target)
    "unet_s2d4_w24_3class": {"encoder": "vanilla", "encoder_kwargs": {"base_width": 24, "space_to_depth": 4},
                             "depth": 3, "sets": GRAY, "synthetic_fraction": 0.3, "lr": 2e-3},
    "unet_s2d4_w24_fg": {"encoder": "vanilla", "encoder_kwargs": {"base_width": 24, "space_to_depth": 4},
                         "depth": 3, "sets": GRAY, "synthetic_fraction": 0.3, "lr": 2e-3, "boundary_width": 0},
    # size-aware (issue: any microscope): all real sets, crops at the pipeline's nucleus diameter
    "unet_s2d4_w24_sized": {"encoder": "vanilla", "encoder_kwargs": {"base_width": 24, "space_to_depth": 4},
                            "depth": 3, "sets": GRAY_ALL, "synthetic_fraction": 0.15, "lr": 2e-3, **SIZED},
    # the same, continued on every set of GRAY_ALL from a run of it on fewer sets (the leave-one-source-out
    # folds' second stage, training.loso.train_folds(start=...), on every training source): the default
    # since 2026-12-05 (docs/research/nuclei.md, "Sources never trained on")
    "unet_s2d4_w24_sized_all": {"encoder": "vanilla", "encoder_kwargs": {"base_width": 24, "space_to_depth": 4},
                                "depth": 3, "sets": GRAY_ALL, "synthetic_fraction": 0.15, "lr": 1e-3, **SIZED,
                                "start_from": "unet_s2d4_w24_sized"},
    "unet_mnv2": {"encoder": "mobilenet_v2", "encoder_kwargs": {"weights": "imagenet"}, "depth": 5,
                  "sets": GRAY, "synthetic_fraction": 0.3, "lr": 1e-3},
    # EfficientNet-Lite0 (ImageNet) instead of MobileNetV2, same decoder and schedule as unet_mnv2
    "unet_effl0": {"encoder": "efficientnet_lite0", "encoder_kwargs": {"weights": "imagenet"}, "depth": 5,
                   "sets": GRAY, "synthetic_fraction": 0.3, "lr": 1e-3},
    "squeeze_unet": {"encoder": "squeeze", "encoder_kwargs": {"base_width": 16, "decoder_block": "fire"},
                     "depth": 4, "sets": GRAY, "synthetic_fraction": 0.3, "lr": 2e-3},
    "unet_he_mnv2": {"encoder": "mobilenet_v2", "encoder_kwargs": {"weights": "imagenet"}, "depth": 5,
                     "channels": 3, "sets": COLOR, "synthetic_fraction": 0.2, "lr": 1e-3},
    "unet_w8": {"encoder": "vanilla", "encoder_kwargs": {"base_width": 8}, "depth": 4,
                "sets": GRAY, "synthetic_fraction": 0.3, "lr": 3e-3, "phase": 2},
    "unet_w8_distilled": {"encoder": "vanilla", "encoder_kwargs": {"base_width": 8}, "depth": 4,
                          "sets": GRAY, "synthetic_fraction": 0.3, "lr": 3e-3, "phase": 2,
                          "teacher": "unet_mnv2", "teacher_fallback": "unet_w16"},
}
COMMON = {"batch": 16, "crop": 192, "seed": 0, "touching_weight": 3.0, "boundary_width": 2, "warmup": 0.05,
          "log_every": 100, "eval_every": 10 ** 9}


def train_variant(name: str, out: Path, *, data_root: Path, device: str = "cpu", workers: int = 0,
                  time_budget_s: float = 0, iterations: int | None = None, threads: int = 2,
                  run_name: str | None = None, **overrides) -> Path:
    """Train one variant into ``out/name/model.pt`` (``out/run_name/`` if given); ``overrides``
    replace the variant's settings (e.g. ``exclude_sources`` for a leave-one-source-out fold)."""
    from .train import train

    cfg = {**COMMON, **VARIANTS[name], **overrides}
    cfg.pop("phase", None)
    fallback = cfg.pop("teacher_fallback", None)
    from .evaluate import set_root

    roots = [set_root(s, data_root) for s in cfg.pop("sets")]
    missing = [r.name for r in roots if not r.is_dir()]
    if missing:
        print(f"{name}: without {', '.join(missing)} (../shared/data holds the first two sets of "
              "zoo.GRAY_ALL; python -m training.datasets NAME fetches the others)", flush=True)
    cfg["sets"] = [str(r) for r in roots if r.name not in missing]
    if cfg.get("prune_from"):
        from .prune import calibration_crops, prune_checkpoint, prune_shipped

        ratio, parent = cfg["encoder_kwargs"]["inner_ratio"], cfg.pop("prune_from")
        start = Path(out) / name / "pruned_init.pt"
        if parent.endswith(".onnx"):
            # batch norms see crops as the model will: at its nucleus diameter when it has one
            crops = calibration_crops(cfg["sets"], data_root, channels=cfg.get("channels", 1), batch=cfg["batch"],
                                      crop=cfg["crop"], seed=cfg["seed"], diameter=cfg.get("diameter"))
            cfg["init_from"] = prune_shipped(ROOT / "models" / parent, start, ratio, crops)
        else:
            cfg["init_from"] = prune_checkpoint(Path(out) / parent / "model.pt", start, ratio)
    if cfg.get("start_from"):
        cfg["init_from"] = Path(out) / cfg.pop("start_from") / "model.pt"
        if not cfg["init_from"].exists():
            raise FileNotFoundError(f"{name} continues {cfg['init_from']}: train that variant first "
                                    "(python build.py zoo-train --variant NAME, or tools/device_train.sh)")
    if cfg.get("teacher", "").endswith(".onnx"):
        cfg["teacher"] = ROOT / "models" / cfg["teacher"]
    elif cfg.get("teacher"):
        teacher = Path(out) / cfg["teacher"] / "model.pt"
        if not teacher.exists() and fallback:
            teacher = Path(out) / fallback / "model.pt"
        cfg["teacher"] = teacher
    if iterations:
        cfg["iterations"] = iterations
    return train(Path(out) / (run_name or name), data_root=data_root, device=device, workers=workers,
                 time_budget_s=time_budget_s, threads=threads, save_half=device != "cpu", **cfg)


def _launch(args_list, log_path: Path, env=None, module: str = "training.zoo"):
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, "-m", module, *args_list], stdout=log,
                            stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def _wait(procs: dict, deadline: float) -> dict:
    codes = {}
    for name, p in procs.items():
        try:
            codes[name] = p.wait(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            codes[name] = "killed at the deadline"
    return codes


def pack(run_dir: Path, out: Path, limit: int = 15 * 2 ** 20) -> list[Path]:
    """Bundle every ``run_dir/*/model.pt`` into as few files under ``limit`` bytes as possible."""
    import torch

    items = sorted(((p.stat().st_size, p.parent.name, p) for p in Path(run_dir).glob("*/model.pt")), reverse=True)
    bundles: list[list] = []
    for size, name, path in items:
        for b in bundles:
            if b[0] + size < limit:
                b[0] += size
                b[1].append((name, path))
                break
        else:
            bundles.append([size, [(name, path)]])
    files = []
    for i, (_, members) in enumerate(bundles):
        f = Path(out) / f"unets_{i}.pt"
        torch.save({name: torch.load(path, map_location="cpu", weights_only=True) for name, path in members}, f)
        files.append(f)
    return files


def unpack(bundle: Path, run_dir: Path) -> list[str]:
    """Write each checkpoint of a :func:`pack` bundle to ``run_dir/name/model.pt``."""
    import torch

    names = []
    for name, ckpt in torch.load(bundle, map_location="cpu", weights_only=True).items():
        (Path(run_dir) / name).mkdir(parents=True, exist_ok=True)
        torch.save(ckpt, Path(run_dir) / name / "model.pt")
        names.append(name)
    return names


def unpack_runs(bundle: Path, zoo_dir: Path = ROOT / "runs" / "zoo", loso_dir: Path | None = None, *,
                export: bool = False) -> list[str]:
    """:func:`unpack` a GPU run's bundle: variants into ``zoo_dir``, the leave-one-source-out folds
    (runs ``without_SOURCE``) into ``loso_dir`` (default :data:`training.loso.RUNS`), where
    :mod:`training.loso` looks for them; with ``export``, each as ``model.onnx`` beside its
    ``model.pt`` too (what :mod:`training.loso` scores). Returns the run names."""
    from .export import export_onnx
    from .loso import RUNS

    loso_dir = Path(loso_dir or RUNS)
    names = unpack(bundle, zoo_dir)
    for name in names:
        run = Path(zoo_dir) / name
        if name.startswith("without_"):
            (loso_dir / name).mkdir(parents=True, exist_ok=True)
            (run / "model.pt").replace(loso_dir / name / "model.pt")
            run.rmdir()
            run = loso_dir / name
        if export:
            export_onnx(run / "model.pt", run / "model.onnx")
    return names


#: Largest median nucleus diameter (px) an image travels at to a GPU run (:func:`pack_data`): the
#: size-aware crops never see nuclei wider than the diameter times the top of its random rescaling.
PACK_MAX_DIAMETER = 40.0


def pack_data(data_root: Path, out: Path, sets=GRAY_ALL, max_diameter: float = PACK_MAX_DIAMETER,
              eight_bit: bool = False) -> list[Path]:
    """The sets ``sets`` (found as :func:`training.evaluate.set_root` finds them), one ``.tar.xz``
    each in ``out``: what the GPU machine, which has none of them, trains on.

    Images whose median object is wider than ``max_diameter`` travel shrunk to it, and with
    ``eight_bit`` 16-bit images travel as 8 bits (:func:`travel_pair`), so that more sets fit the
    64 MiB one device call carries (``pack-data`` prints the total).
    """
    import tarfile
    import tempfile

    from .evaluate import set_root

    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name in sets:
        root = set_root(name, data_root)
        if not root.is_dir():
            print(f"{name}: not found, left out (python -m training.datasets NAME fetches it)", flush=True)
            continue
        with tempfile.TemporaryDirectory() as tmp, tarfile.open(out / f"{name}.tar.xz", "w:xz") as tf:
            for path in sorted(root.rglob("*")):
                if not path.is_file() or path.parent.name == "masks":
                    continue
                mask = root / "masks" / path.name
                if path.parent.name == "images" and mask.exists():
                    image, labels = travel_pair(path, mask, name, max_diameter, Path(tmp), eight_bit)
                    tf.add(image, f"{name}/images/{path.name}")
                    tf.add(labels, f"{name}/masks/{path.name}")
                else:
                    tf.add(path, f"{name}/{path.relative_to(root)}")
        files.append(out / f"{name}.tar.xz")
    return files


def travel_pair(image_path: Path, mask_path: Path, set_name: str, max_diameter: float, tmp: Path,
                eight_bit: bool = False):
    """The image and mask files as they travel: the files themselves, or copies.

    Shrunk so that the median object is ``max_diameter`` px across (image anti-aliased, labels
    nearest), unless that would change the image's source (:func:`training.data.source_of`): the
    size-aware models shrink them further anyway. With ``eight_bit``, a 16-bit image as 8 bits, each
    plane from its minimum to its 99.99th percentile: the training normalizes each plane between
    percentiles anyway, and the low bits of a noisy 16-bit image are what xz cannot compress.
    """
    import tifffile

    from piximi_py.diameter import median_diameter
    from piximi_py.rescale import rescaled_shape

    from .data import resize_image, resize_labels, source_of

    labels = tifffile.imread(mask_path)
    diameter = median_diameter(labels)[0]
    shape = rescaled_shape(labels.shape, max_diameter / diameter) if diameter > max_diameter else labels.shape
    shrink = shape != labels.shape and source_of(set_name, shape) == source_of(set_name, labels.shape)
    if not (shrink or eight_bit):
        return image_path, mask_path
    image = tifffile.imread(image_path)
    to_8bit = eight_bit and image.dtype == np.uint16
    if not (shrink or to_8bit):
        return image_path, mask_path
    shape = shape if shrink else labels.shape
    planes_first = image.ndim == 3 and image.shape[1:] == labels.shape  # (C, H, W), as whole-cell sets keep them
    small = np.asarray(image, np.float32)
    if shrink:
        small = resize_image(np.moveaxis(small, 0, -1) if planes_first else small, shape)
        small = np.moveaxis(small, -1, 0) if planes_first else small
    dtype = np.uint8 if to_8bit else image.dtype
    if to_8bit:
        planes = small if planes_first else small[None] if small.ndim == 2 else np.moveaxis(small, -1, 0)
        for plane in planes:
            low, high = float(plane.min()), float(np.percentile(plane, 99.99))
            plane[...] = (plane - low) * (255.0 / max(high - low, 1e-6))
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        small = np.clip(np.rint(small), info.min, info.max)
    (tmp / "images").mkdir(exist_ok=True)
    (tmp / "masks").mkdir(exist_ok=True)
    tifffile.imwrite(tmp / "images" / image_path.name, small.astype(dtype))
    tifffile.imwrite(tmp / "masks" / image_path.name, resize_labels(labels, shape).astype(labels.dtype))
    return tmp / "images" / image_path.name, tmp / "masks" / image_path.name


def gpu_run(data_root: Path, out: Path, *, run_dir: Path = ROOT / "runs" / "zoo", phase1: float = 270,
            phase2: float = 150, sam_checkpoint: Path | None = None, sam_decoder: float = 150,
            sam_joint: float = 200, workers: int = 3, device: str = "cuda", variants=None,
            folds=()) -> dict:
    """Train the zoo (and SAM) on one accelerator within fixed time budgets; results into ``out``.

    ``folds``: sources (:data:`training.loso.FOLD_SOURCES`) whose leave-one-source-out fold model
    (:data:`training.loso.FOLD_VARIANT` without that source, run ``without_SOURCE``) trains in
    phase 1 beside the variants, with the same budget.
    """
    from .loso import FOLD_VARIANT

    run_dir, out = Path(run_dir), Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    names = list(VARIANTS) if variants is None else variants
    common = ["--data-root", str(data_root), "--out", str(run_dir), "--device", device, "--workers", str(workers)]
    t0 = time.time()
    procs = {}
    if sam_checkpoint:
        procs["sam"] = _launch(["sam", "--checkpoint", str(sam_checkpoint), "--data-root", str(data_root),
                                "--out", str(out), "--device", device, "--decoder-seconds", str(sam_decoder),
                                "--joint-seconds", str(sam_joint)], run_dir / "sam.log", env)
    first = {n: _launch(["one", n, "--budget", str(phase1), *common], run_dir / f"{n}.log", env)
             for n in names if VARIANTS[n].get("phase", 1) == 1}
    for source in folds:
        run = f"without_{source}"
        first[run] = _launch(["one", FOLD_VARIANT, "--budget", str(phase1), "--exclude-source", source,
                              "--run-name", run, *common], run_dir / f"{run}.log", env)
    codes = _wait(first, t0 + phase1 + 120)
    t1 = time.time()
    second = {n: _launch(["one", n, "--budget", str(phase2), *common], run_dir / f"{n}.log", env)
              for n in names if VARIANTS[n].get("phase", 1) == 2}
    codes.update(_wait(second, t1 + phase2 + 90))
    if "sam" in procs:
        codes.update(_wait({"sam": procs["sam"]}, time.time() + 60))
    return gpu_report(run_dir, out, codes, t0)


def gpu_report(run_dir: Path, out: Path, codes: dict, t0: float) -> dict:
    """The end of a GPU run: its checkpoints packed into ``out`` (:func:`pack`), the runs' logs in
    ``out/log.txt``, and what each run's process returned, printed and returned."""
    files = pack(run_dir, out)
    with open(out / "log.txt", "w") as log:
        for path in sorted(Path(run_dir).glob("*.log")):
            log.write(f"===== {path.name}\n{path.read_text()}\n")
    report = {"exit": codes, "files": [f.name for f in files], "seconds": round(time.time() - t0, 1)}
    print(json.dumps(report, indent=1), flush=True)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.zoo")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("one", help="train one variant")
    p.add_argument("name", choices=sorted(VARIANTS))
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--out", default=str(ROOT / "runs" / "zoo"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--budget", type=float, default=0, help="seconds of training (default: fixed iterations)")
    p.add_argument("--iterations", type=int)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--exclude-source", action="append", default=[],
                   help="leave out this source's images (a leave-one-source-out fold)")
    p.add_argument("--run-name", help="run folder under --out (default: the variant's name)")
    p = sub.add_parser("sam", help="fine-tune SAM (decoder, then jointly) within time budgets")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--decoder-seconds", type=float, default=150)
    p.add_argument("--joint-seconds", type=float, default=200)
    p = sub.add_parser("gpu-run", help="the whole zoo (and SAM) on one accelerator")
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--phase1", type=float, default=270)
    p.add_argument("--phase2", type=float, default=150)
    p.add_argument("--sam-checkpoint")
    p.add_argument("--sam-decoder", type=float, default=150)
    p.add_argument("--sam-joint", type=float, default=200)
    p.add_argument("--device", default="cuda")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--variants", nargs="*")
    p.add_argument("--run-dir", default=str(ROOT / "runs" / "zoo"), help="where the runs train")
    p.add_argument("--folds", action="store_true",
                   help="also train the leave-one-source-out folds (training.loso) in phase 1")
    p = sub.add_parser("pack-data", help="the real sets a GPU run trains on, as .tar.xz files in DIR")
    p.add_argument("dir")
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--sets", nargs="*", default=GRAY_ALL, help="default: training.zoo.GRAY_ALL")
    p = sub.add_parser("unpack", help="checkpoints a GPU run returned (unets_*.pt) -> runs/loso, runs/zoo, "
                                      "each also as model.onnx")
    p.add_argument("bundles", nargs="+")
    args = parser.parse_args(argv)
    if args.cmd == "pack-data":
        files = pack_data(Path(args.data_root), Path(args.dir), sets=args.sets)
        print("\n".join(f"{f} ({f.stat().st_size / 2 ** 20:.1f} MiB)" for f in files))
        print(f"{sum(f.stat().st_size for f in files) / 2 ** 20:.1f} MiB in all (a device call carries 64 MiB)")
    elif args.cmd == "unpack":
        for bundle in args.bundles:
            print("\n".join(unpack_runs(Path(bundle), export=True)))
    elif args.cmd == "one":
        train_variant(args.name, Path(args.out), data_root=Path(args.data_root), device=args.device,
                      workers=args.workers, time_budget_s=args.budget, iterations=args.iterations,
                      threads=args.threads, run_name=args.run_name,
                      **({"exclude_sources": args.exclude_source} if args.exclude_source else {}))
    elif args.cmd == "sam":
        from .sam_finetune import finetune_sam

        sets = [Path(args.data_root) / s for s in ("dsb2018_stage1test_gray", "mnfinder")]
        report = finetune_sam(Path(args.out), Path(args.checkpoint), device=args.device,
                              sets=[s for s in sets if s.is_dir()], decoder_seconds=args.decoder_seconds,
                              joint_seconds=args.joint_seconds)
        print(json.dumps({k: v for k, v in report.items() if k not in ("decoder", "joint")}))
    else:
        from .loso import FOLD_SOURCES

        gpu_run(Path(args.data_root), Path(args.out), phase1=args.phase1, phase2=args.phase2,
                sam_checkpoint=Path(args.sam_checkpoint) if args.sam_checkpoint else None,
                sam_decoder=args.sam_decoder, sam_joint=args.sam_joint, workers=args.workers,
                device=args.device, variants=args.variants, folds=FOLD_SOURCES if args.folds else (),
                run_dir=Path(args.run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
