"""An experiment of docs/research/stained.md (an ImageNet-pretrained encoder on stained slides):
the H&E recipe (training.he: the hematoxylin density, nuclei at 20 px, its settings and sources)
with a U-Net on torchvision's ImageNet MobileNetV2 (depth 5, as the whole-cell model) trained
from that start instead of fine-tuning the fluorescence parent; the fold without SOURCE (or, with
SOURCE "all", the model on every source), then scored as ``python build.py he-evaluate
--max-images 12`` scores a fold: thresholds tuned on the sources it trained on, then the left-out
source's 12 images (with "all": each source only ever scored), diameter estimated. SEED (default
0, the first runs) draws the crops; other seeds run under ``seed<N>/``.
usage: python -m training.experiments.he_pretrained.fold SOURCE [ITERATIONS [THREADS [SEED]]]"""
import json
import sys
from pathlib import Path

from training import data as D, he as H
from training.export import export_onnx
from training.train import train

ENCODER = {"encoder": "mobilenet_v2", "encoder_kwargs": {"weights": "imagenet"}, "depth": 5}
RUNS = H.ROOT / "runs" / "exp" / "he_mnv2"
MAX_IMAGES = 12


def run_dir(source: str, seed: int = 0, runs: Path = RUNS) -> Path:
    name = "all" if source == "all" else f"without_{source}"
    return runs / name if seed == 0 else runs / f"seed{seed}" / name


def score_run(out: Path, spec, exclude=(), **logged) -> dict:
    """The model ``out/model.onnx`` scored as ``he-evaluate`` scores a fold: thresholds tuned
    without ``exclude``, then each left-out source's images (none left out: the sources only
    ever scored); written to ``out/score.json``."""
    spec = H.tuned_spec(out / "model.onnx", spec, exclude_sources=exclude)
    sets = H.he_sets()
    scored = [s for s in sets if s.name in exclude] if exclude else H.eval_only_sets()
    report = {}
    for root in scored:
        rows = H.score(spec, out / "model.onnx", D.source_images(root, MAX_IMAGES, annotated_only=True))
        report[root.name] = H._summary(rows)
        print(json.dumps({"model": str(out), "source": root.name, **logged,
                          "thresholds": spec.postprocess, **report[root.name]}), flush=True)
    (out / "score.json").write_text(json.dumps(report, indent=1))
    return report


def run(source: str, iterations: int, threads: int = 2, seed: int = 0) -> dict:
    exclude = () if source == "all" else (source,)
    out = run_dir(source, seed)
    if not (out / "model.onnx").exists():
        ckpt = train(out, sets=[str(s) for s in H.he_sets()], iterations=iterations, threads=threads,
                     exclude_sources=exclude, **{**H.SETTINGS, **ENCODER, "channels": 1, "stain": "hematoxylin",
                                                 "seed": seed})
        export_onnx(ckpt, out / "model.onnx")
    return score_run(out, H.fold_spec(), exclude, iterations=iterations, seed=seed)


if __name__ == "__main__":
    args = sys.argv[1:]
    run(args[0], int(args[1]) if len(args) > 1 else H.FOLD_ITERATIONS, int(args[2]) if len(args) > 2 else 2,
        int(args[3]) if len(args) > 3 else 0)
