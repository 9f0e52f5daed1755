"""An experiment of docs/research/stained.md (an ImageNet-pretrained encoder on stained slides):
the H&E recipe (training.he: the hematoxylin density, nuclei at 20 px, its settings and sources)
with a U-Net on torchvision's ImageNet MobileNetV2 (depth 5, as the whole-cell model) trained
from that start instead of fine-tuning the fluorescence parent; the fold without SOURCE (or, with
SOURCE "all", the model on every source), then scored as ``python build.py he-evaluate
--max-images 12`` scores a fold: thresholds tuned on the sources it trained on, then the left-out
source's 12 images (with "all": each source only ever scored), diameter estimated.
usage: python -m training.experiments.he_pretrained.fold SOURCE [ITERATIONS [THREADS]]"""
import dataclasses
import json
import sys

from training import data as D, he as H
from training.export import export_onnx
from training.train import train

ENCODER = {"encoder": "mobilenet_v2", "encoder_kwargs": {"weights": "imagenet"}, "depth": 5}
RUNS = H.ROOT / "runs" / "exp" / "he_mnv2"
MAX_IMAGES = 12


def run(source: str, iterations: int, threads: int = 2) -> dict:
    sets = H.he_sets()
    exclude = () if source == "all" else (source,)
    out = RUNS / (f"without_{source}" if exclude else "all")
    if not (out / "model.onnx").exists():
        ckpt = train(out, sets=[str(s) for s in sets], iterations=iterations, threads=threads,
                     exclude_sources=exclude, **{**H.SETTINGS, **ENCODER, "channels": 1, "stain": "hematoxylin"})
        export_onnx(ckpt, out / "model.onnx")
    spec = H.fold_spec()
    post = H.tune_thresholds(out / "model.onnx", spec, exclude_sources=exclude)
    spec = dataclasses.replace(spec, postprocess=post)
    scored = [s for s in [*sets, *H.eval_only_sets()] if s.name in exclude] if exclude else H.eval_only_sets()
    report = {}
    for root in scored:
        rows = H.score(spec, out / "model.onnx", D.source_images(root, MAX_IMAGES, annotated_only=True))
        report[root.name] = H._summary(rows)
        print(json.dumps({"model": str(out), "source": root.name, "iterations": iterations,
                          "thresholds": post, **report[root.name]}), flush=True)
    (out / "score.json").write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else H.FOLD_ITERATIONS,
        int(sys.argv[3]) if len(sys.argv) > 3 else 2)
