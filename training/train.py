"""Train a nuclei U-Net on real annotated data.

Run through ``python build.py train`` (see ``--help``). Needs PyTorch
(``pip install -e .[train]``) and the annotated sets in ``../shared/data``,
which a fresh clone does not have: the command then says so and stops.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from piximi_py.metrics import evaluate_instances
from piximi_py.postprocess import probabilities_to_labels
from piximi_py.preprocess import pad_to_multiple

from . import data as D
from .models import Unet

GRAY_SETS = ("dsb2018_stage1test_gray",)


def predict_probabilities(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """Whole-image probabilities (C, H, W) for a normalized image, torch side."""
    x = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
    x, crop = pad_to_multiple(x, 2 ** model.depth)
    with torch.no_grad():
        p = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None])[0].numpy()
    return p[(slice(None),) + crop]


def evaluate(model, samples, **post) -> dict:
    model.eval()
    rows = []
    for s in samples:
        labels = probabilities_to_labels(predict_probabilities(model, s.image), **post)
        rows.append(evaluate_instances(s.labels, labels))
    model.train()
    return {k: float(np.mean([r[k] for r in rows])) for k in ("ap50", "map", "f1")}


def train(out: Path, *, data_root: Path = D.SHARED_DATA, sets=GRAY_SETS, channels: int = 1,
          base_width: int = 16, depth: int = 4, iterations: int = 1500, batch: int = 8,
          crop: int = 192, lr: float = 2e-3, seed: int = 0, log_every: int = 50,
          eval_every: int = 250, threads: int = 2, touching_weight: float = 3.0,
          init_from: Path | None = None, warmup: float = 0.1, boundary_width: int = 2) -> Path:
    """Train and save ``out/model.pt`` plus ``out/log.jsonl``; returns the .pt path.

    ``init_from`` starts from another checkpoint's weights (fine-tuning), e.g.
    to adapt a trained model to new targets in a few hundred iterations.
    """
    missing = [s for s in sets if not (Path(data_root) / s).is_dir()]
    if missing:
        raise SystemExit(f"training data not found: {', '.join(str(Path(data_root) / s) for s in missing)} "
                         "(../shared/data is only present on the project's own machines)")
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    mode = "rgb" if channels == 3 else "gray"
    samples = [s for name in sets for s in D.load_set(Path(data_root) / name, mode)]
    train_set, val_set = D.split(samples)
    print(f"train {len(train_set)} images, validation {len(val_set)} images", flush=True)
    # sample images in proportion to their area so big fields are not under-seen
    weights = np.array([s.labels.size for s in train_set], float) ** 0.5
    weights /= weights.sum()
    model = Unet("vanilla", in_channels=channels, classes=3, depth=depth, base_width=base_width)
    if init_from is not None:
        model.load_state_dict(torch.load(init_from, map_location="cpu", weights_only=True)["state_dict"])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=iterations, pct_start=warmup)
    class_weight = torch.tensor([1.0, 1.0, 2.0])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "log.jsonl", "w")
    t0, running = time.time(), []
    for it in range(1, iterations + 1):
        idx = rng.choice(len(train_set), size=batch, p=weights)
        crops = [D.random_crop(train_set[i], crop, rng, boundary_width=boundary_width) for i in idx]
        x = torch.from_numpy(np.stack([c[0] for c in crops]))
        y = torch.from_numpy(np.stack([c[1] for c in crops]))
        touching = torch.from_numpy(np.stack([c[2] for c in crops]))
        prob = model(x)
        # pixels between touching nuclei decide splits and merges: weight them up
        weight = class_weight[y] + touching_weight * touching
        loss = (F.nll_loss(torch.log(prob.clamp_min(1e-7)), y, reduction="none") * weight).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running.append(loss.item())
        if it % log_every == 0:
            row = {"iteration": it, "loss": float(np.mean(running)), "seconds": round(time.time() - t0, 1)}
            running = []
            if it % eval_every == 0 or it == iterations:
                row.update({f"val_{k}": v for k, v in evaluate(model, val_set).items()})
                torch.save({"state_dict": model.state_dict(), "config": model_config(model, channels, base_width)},
                           out / "model.pt")
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
    torch.save({"state_dict": model.state_dict(), "config": model_config(model, channels, base_width)},
               out / "model.pt")
    return out / "model.pt"


def model_config(model: Unet, channels: int, base_width: int) -> dict:
    return {"encoder_name": "vanilla", "in_channels": channels, "classes": 3,
            "depth": model.depth, "base_width": base_width}


def load_checkpoint(path: Path) -> Unet:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = Unet(**ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
