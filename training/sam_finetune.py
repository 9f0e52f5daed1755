"""Fine-tune LiteMedSAM's prompt encoder + mask decoder on real nuclei (``python build.py sam-finetune``).

The image encoder stays frozen, so its embeddings are computed once per
window (with the exported fp32 ONNX encoder) and the decoder trains on them.
Data: the training split of ``dsb2018_stage1test_gray`` only (the validation
split and ``stardist_wheel`` are what ``sam-evaluate`` measures). Prompts are
simulated as the page makes them, in the window :mod:`piximi_py.sam` would
choose for that prompt:

* a box around the object, each side jittered by up to 15 % of its size;
* one positive click inside the object (biased towards its centre);
* several clicks (1-3 positive, 0-2 negative around the object);
* a box with a few clicks.

Loss on the single-mask output: binary cross-entropy + Dice, plus the MSE of
the IoU head against the IoU actually reached.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from piximi_py.io import read_image
from piximi_py.sam import (SamSpec, Window, encoder_input, load_sam_spec, normalize_image,
                           prompt_window)

from . import data as D

ROOT = Path(__file__).resolve().parents[1]
SIZE = 256


def _nearest_resize(labels: np.ndarray, shape) -> np.ndarray:
    """Label image resized by nearest neighbour with half-pixel centres."""
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0]).astype(int), labels.shape[0] - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1]).astype(int), labels.shape[1] - 1)
    return labels[rows][:, cols]


def build_windows(data_root: Path = D.SHARED_DATA, sets=("dsb2018_stage1test_gray",), spec: SamSpec | None = None,
                  max_objects: int = 40, seed: int = 0):
    """Training windows: (image name, normalized image, labels, window, [(label, kind)])."""
    spec = spec or load_sam_spec()
    rng = np.random.default_rng(seed)
    out = {}
    for set_name in sets:
        root = Path(data_root) / set_name
        for path in sorted((root / "images").glob("*.tif")):
            name = f"{set_name}/{path.stem}"
            if D.is_validation(name):
                continue
            image = read_image(path, color=True)
            truth = read_image(root / "masks" / path.name).astype(np.int32)
            objs = [(i + 1, sl) for i, sl in enumerate(ndi.find_objects(truth)) if sl is not None]
            if len(objs) > max_objects:
                objs = [objs[i] for i in rng.choice(len(objs), max_objects, replace=False)]
            for lab, sl in objs:
                box = np.array([sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1], float)
                if box[2] <= box[0] or box[3] <= box[1]:
                    continue
                size = np.array([box[2] - box[0] + 1, box[3] - box[1] + 1] * 2)
                jit = np.clip(box + rng.uniform(-0.15, 0.15, 4) * size, 0,
                              [truth.shape[1] - 1, truth.shape[0] - 1] * 2)
                if jit[2] <= jit[0] or jit[3] <= jit[1]:
                    jit = box
                centre = np.array([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]])
                for kind, win in (("box", prompt_window(truth.shape, jit[None], crop=spec.crop)),
                                  ("click", prompt_window(truth.shape, None, centre, np.array([1]), spec.crop))):
                    key = (name, win)
                    if key not in out:
                        out[key] = {"name": name, "image": image, "truth": truth, "window": win, "objects": []}
                    out[key]["objects"].append((lab, kind))
    return list(out.values())


def precompute(windows, encoder_path: Path, spec: SamSpec, threads: int = 2):
    """Embeddings (float16) and model-frame label maps of every training window."""
    from piximi_py.backends.onnxruntime import OnnxRuntimeBackend

    enc = OnnxRuntimeBackend(encoder_path, threads=threads)
    norm_cache = {}
    items = []
    t0 = time.time()
    for k, w in enumerate(windows):
        if w["name"] not in norm_cache:
            norm_cache = {w["name"]: normalize_image(w["image"], **spec.normalize)}
        win: Window = w["window"]
        x, (nh, nw) = encoder_input(norm_cache[w["name"]], win, SIZE)
        emb = enc.run_sync(x)[0].astype(np.float16)
        crop = w["truth"][win.y:win.y + win.h, win.x:win.x + win.w]
        lab = np.zeros((SIZE, SIZE), np.int32)
        lab[:nh, :nw] = _nearest_resize(crop, (nh, nw))
        objects = []
        for label, kind in w["objects"]:
            ys, xs = np.nonzero(crop == label)
            full = (w["truth"] == label).sum()
            if len(ys) == 0 or len(ys) < full:  # object cut by the window: no clean target
                continue
            if (lab == label).sum() < 4:
                continue
            objects.append((label, kind))
        if objects:
            items.append({"emb": emb, "labels": lab, "objects": objects, "window": win, "shape": (nh, nw)})
        if k % 50 == 0:
            print(f"precompute {k}/{len(windows)} windows, {time.time() - t0:.0f} s", flush=True)
    return items


def simulate_prompt(mask: np.ndarray, kind: str, rng: np.random.Generator):
    """SAM decoder coords (N, 2) and labels (N,) in the model frame for one object mask."""
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], float)
    size = np.array([box[2] - box[0] + 1, box[3] - box[1] + 1] * 2)
    dist = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]

    def inside(n):
        w = dist[ys, xs] ** 2
        idx = rng.choice(len(ys), n, p=w / w.sum())
        return np.stack([xs[idx], ys[idx]], 1).astype(float)

    def outside(n):
        ring = ndi.binary_dilation(mask, iterations=max(2, int(size[:2].max() * 0.3))) & ~mask
        oy, ox = np.nonzero(ring)
        if len(oy) == 0:
            return np.zeros((0, 2))
        idx = rng.choice(len(oy), n)
        return np.stack([ox[idx], oy[idx]], 1).astype(float)

    def jitter_box(f):
        b = box + rng.uniform(-f, f, 4) * size
        b[2], b[3] = max(b[2], b[0] + 1), max(b[3], b[1] + 1)
        return np.clip(b, 0, SIZE - 1)

    if kind == "click":
        r = rng.random()
        if r < 0.6:
            pts, labs = inside(1), [1]
        else:
            npos, nneg = rng.integers(1, 4), rng.integers(0, 3)
            neg = outside(nneg)
            pts, labs = np.concatenate([inside(npos), neg]), [1] * npos + [0] * len(neg)
        return (np.concatenate([pts, [[0, 0]]]).astype(np.float32),
                np.array(list(labs) + [-1], np.float32))
    b = jitter_box(0.15).reshape(2, 2)
    if rng.random() < 0.2:
        npos, nneg = rng.integers(1, 3), rng.integers(0, 2)
        neg = outside(nneg)
        pts = np.concatenate([inside(npos), neg, b])
        labs = [1] * npos + [0] * len(neg) + [2, 3]
        return pts.astype(np.float32), np.array(labs, np.float32)
    return b.astype(np.float32), np.array([2, 3], np.float32)


def finetune_decoder(out: Path = ROOT / "runs" / "sam_ft", *, iterations: int = 600, batch: int = 4,
                     lr: float = 1e-4, threads: int = 2, seed: int = 0, max_objects: int = 40,
                     data_root: Path = D.SHARED_DATA, checkpoint: Path | None = None,
                     encoder_onnx: Path = ROOT / "runs" / "sam" / "sam_encoder_fp32.onnx",
                     time_budget_s: float = 0) -> Path:
    """Train; writes ``out/model.pt`` (full LiteMedSAM state dict) and ``out/log.jsonl``."""
    import torch
    import torch.nn.functional as F

    from .models.sam import SamPromptDecoder, load_lite_medsam
    from .sam_export import fetch_checkpoint

    if not (Path(data_root) / "dsb2018_stage1test_gray").is_dir():
        raise SystemExit(f"training data not found under {data_root} "
                         "(../shared/data is only present on the project's own machines)")
    if not Path(encoder_onnx).exists():
        raise SystemExit(f"{encoder_onnx} missing: run `python build.py sam-export` first")
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    spec = load_sam_spec()
    windows = build_windows(data_root, spec=spec, max_objects=max_objects, seed=seed)
    print(f"{len(windows)} training windows", flush=True)
    items = precompute(windows, encoder_onnx, spec, threads)
    pairs = [(i, lab, kind) for i, it in enumerate(items) for lab, kind in it["objects"]]
    print(f"{len(items)} windows, {len(pairs)} (object, prompt kind) pairs", flush=True)

    sam = load_lite_medsam(checkpoint or fetch_checkpoint())
    decoder = SamPromptDecoder(sam).train()
    params = [p for p in decoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = None
    probe = 5  # steps at a low rate that time one step, when a time budget sets the length
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "log.jsonl", "w")
    t0, running = time.time(), []
    it = 0
    while it < iterations:
        it += 1
        if sched is None:
            if time_budget_s and it <= probe:
                for g in opt.param_groups:
                    g["lr"] = lr * 0.04
            else:
                if time_budget_s:
                    per_step = (time.time() - t0) / probe
                    iterations = max(it + 10, min(iterations, probe + int((time_budget_s - (time.time() - t0)) / per_step)))
                    print(f"time budget {time_budget_s} s: {per_step:.2f} s/step -> {iterations} iterations", flush=True)
                sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=iterations - it + 1,
                                                            pct_start=0.05)
        sel = [pairs[i] for i in rng.choice(len(pairs), batch)]
        embs, coords, labels, targets = [], [], [], []
        for i, lab, kind in sel:
            item = items[i]
            mask = item["labels"] == lab
            c, l = simulate_prompt(mask, kind, rng)
            embs.append(item["emb"])
            coords.append(c)
            labels.append(l)
            targets.append(mask)
        n = max(len(c) for c in coords)  # pad prompts to one length with padding points
        coords = np.stack([np.concatenate([c, np.zeros((n - len(c), 2), np.float32)]) for c in coords])
        labels = np.stack([np.concatenate([l, -np.ones(n - len(l), np.float32)]) for l in labels])
        emb = torch.from_numpy(np.stack(embs).astype(np.float32))
        target = torch.from_numpy(np.stack(targets).astype(np.float32))
        masks, iou_pred = decoder(emb, torch.from_numpy(coords), torch.from_numpy(labels))
        logit = masks[:, 0]
        prob = torch.sigmoid(logit)
        bce = F.binary_cross_entropy_with_logits(logit, target)
        inter = (prob * target).sum((1, 2))
        dice = 1 - (2 * inter + 1) / (prob.sum((1, 2)) + target.sum((1, 2)) + 1)
        with torch.no_grad():
            hard = (logit > 0).float()
            real_iou = (hard * target).sum((1, 2)) / ((hard + target).clamp(max=1).sum((1, 2)) + 1e-6)
        loss = bce + dice.mean() + F.mse_loss(iou_pred[:, 0], real_iou)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        running.append([loss.item(), real_iou.mean().item()])
        if it % 25 == 0 or it == iterations:
            r = np.mean(running, 0)
            row = {"iteration": it, "loss": round(float(r[0]), 4), "train_iou": round(float(r[1]), 4),
                   "seconds": round(time.time() - t0, 1)}
            running = []
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
    torch.save({"model": sam.state_dict(), "fine_tuning": {
        "what": "prompt encoder + mask decoder (image encoder frozen)", "iterations": iterations,
        "batch": batch, "lr": lr, "seed": seed, "max_objects_per_image": max_objects, "train_windows": len(items), "train_pairs": len(pairs),
        "data": "dsb2018_stage1test_gray training split (training.data.is_validation false)"}},
        out / "model.pt")
    return out / "model.pt"
