"""The shipped H&E recipe (training.he.train_one: the fluorescence parent fine-tuned on the
hematoxylin density) trained again at another SEED and scored as :mod:`.fold` scores the
MobileNetV2 model: the fold without SOURCE (``he.FOLD_ITERATIONS``), or with SOURCE "all" the
model on every source (``he.ITERATIONS``, scored on the sources only ever scored). The second
seed of both, to tell their difference from the spread between runs (docs/research/stained.md).
usage: python -m training.experiments.he_pretrained.recipe SOURCE SEED [THREADS]"""
import sys

from training import he as H

from .fold import run_dir, score_run

RUNS = H.ROOT / "runs" / "exp" / "he_recipe"


def run(source: str, seed: int, threads: int = 2) -> dict:
    exclude = () if source == "all" else (source,)
    iterations = H.ITERATIONS if source == "all" else H.FOLD_ITERATIONS
    out = run_dir(source, seed, RUNS)
    if not (out / "model.onnx").exists():
        H.train_one(out, H.he_sets(), iterations=iterations, exclude_sources=exclude, threads=threads, seed=seed)
    return score_run(out, H.fold_spec(), exclude, iterations=iterations, seed=seed)


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 2)
