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
import torch
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
    """Training windows: (image name, normalized image, labels, window, [(label, kind)]).

    ``sets`` are names under ``data_root`` or paths of sets in the standard layout.
    """
    spec = spec or load_sam_spec(model_id="sam")
    rng = np.random.default_rng(seed)
    out = {}
    for set_name in sets:
        root = Path(set_name) if Path(set_name).is_dir() else Path(data_root) / set_name
        set_name = root.name
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


def window_examples(windows, spec: SamSpec):
    """Per training window with a usable object: ``(window, encoder input (1, 3, 256, 256),
    label map in the 256 frame, [(label, kind)])``; objects cut by the window or under
    4 pixels in the model frame are left out (no clean target)."""
    norm = {}
    for w in windows:
        if w["name"] not in norm:
            norm = {w["name"]: normalize_image(w["image"], **spec.normalize)}
        win = w["window"]
        crop = w["truth"][win.y:win.y + win.h, win.x:win.x + win.w]
        x, (nh, nw) = encoder_input(norm[w["name"]], win, SIZE)
        lab = np.zeros((SIZE, SIZE), np.int32)
        lab[:nh, :nw] = _nearest_resize(crop, (nh, nw))
        objects = [(label, kind) for label, kind in w["objects"]
                   if (crop == label).sum() == (w["truth"] == label).sum() and (lab == label).sum() >= 4]
        if objects:
            yield w, x, lab, objects


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
    spec = load_sam_spec(model_id="sam")
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
        coords, labels = pad_prompts(coords, labels)
        emb = torch.from_numpy(np.stack(embs).astype(np.float32))
        target = torch.from_numpy(np.stack(targets).astype(np.float32))
        masks, iou_pred = decoder(emb, torch.from_numpy(coords), torch.from_numpy(labels))
        loss, real_iou = _mask_loss(masks[:, 0], target, iou_pred[:, 0])
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


class PromptStream(torch.utils.data.IterableDataset):
    """Endless batches of simulated prompts over window label maps (DataLoader workers).

    Each pair (window, object, prompt kind) is drawn uniformly; with
    ``augment`` the window is rotated by a multiple of 90 degrees and maybe
    flipped (the caller applies the same to the encoder input) before the
    prompt is simulated on the moved mask.
    """

    def __init__(self, label_maps, pairs, batch: int, seed: int, augment: bool):
        self.label_maps, self.pairs, self.batch, self.seed, self.augment = label_maps, pairs, batch, seed, augment

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        while True:
            rows = []
            for p in rng.choice(len(self.pairs), self.batch):
                w, lab, kind = self.pairs[p]
                k, flip = (int(rng.integers(4)), bool(rng.random() < 0.5)) if self.augment else (0, False)
                mask = _move(self.label_maps[w] == lab, k, flip)
                if not mask.any():
                    continue
                c, l = simulate_prompt(mask, kind, rng)
                rows.append((w, k, flip, c, l, mask))
            yield collate_prompts(rows)


def pad_prompts(coords, labels):
    """Prompts of different lengths as one batch: ``(B, N, 2)`` coords and ``(B, N)`` labels,
    each padded with SAM's padding point (label -1)."""
    n = max(len(c) for c in coords)
    return (np.stack([np.concatenate([c, np.zeros((n - len(c), 2), np.float32)]) for c in coords]),
            np.stack([np.concatenate([l, -np.ones(n - len(l), np.float32)]) for l in labels]))


def collate_prompts(rows):
    """Rows ``(window, k, flip, coords, labels, mask)`` -> torch tensors
    ``w, k, flip, coords, labels, target`` (prompts padded by :func:`pad_prompts`)."""
    coords, labels = pad_prompts([r[3] for r in rows], [r[4] for r in rows])
    return (torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows]),
            torch.tensor([r[2] for r in rows]), torch.from_numpy(coords), torch.from_numpy(labels),
            torch.from_numpy(np.stack([r[5] for r in rows]).astype(np.float32)))


def _move(a, k: int, flip: bool):
    """Rotate the last two axes by ``k`` quarter turns, then maybe flip left-right (numpy or torch)."""
    if hasattr(a, "rot90"):  # torch
        a = a.rot90(k, dims=(-2, -1))
        return a.flip(-1) if flip else a
    a = np.rot90(a, k, axes=(-2, -1))
    return np.ascontiguousarray(a[..., ::-1] if flip else a)


def _mask_loss(logit, target, iou_pred):
    """BCE + Dice on one mask output, plus the IoU head's error against the IoU reached."""
    import torch
    import torch.nn.functional as F

    prob = torch.sigmoid(logit)
    bce = F.binary_cross_entropy_with_logits(logit, target)
    inter = (prob * target).sum((1, 2))
    dice = 1 - (2 * inter + 1) / (prob.sum((1, 2)) + target.sum((1, 2)) + 1)
    with torch.no_grad():
        hard = (logit > 0).float()
        real_iou = (hard * target).sum((1, 2)) / ((hard + target).clamp(max=1).sum((1, 2)) + 1e-6)
    return bce + dice.mean() + F.mse_loss(iou_pred, real_iou), real_iou


def finetune_sam(out: Path, checkpoint: Path, *, device: str = "cuda", sets=("dsb2018_stage1test_gray",),
                 data_root: Path = D.SHARED_DATA, max_objects: int = 80, decoder_seconds: float = 150,
                 joint_seconds: float = 150, batch: int = 32, joint_batch: int = 16, lr: float = 1e-4,
                 encoder_lr: float = 2e-5, workers: int = 3, seed: int = 0) -> dict:
    """Fine-tune LiteMedSAM on an accelerator, in two phases with time budgets.

    1. The decoder (prompt encoder + mask decoder) on cached embeddings of
       every training window (image encoder frozen); saved as
       ``out/sam_decoder_ft.pt``.
    2. From there, image encoder and decoder together, on windows rotated and
       flipped at random (encoder batch norms frozen, lower rate for the
       encoder); saved as ``out/sam_joint_encoder.pt`` and
       ``out/sam_joint_decoder.pt``.

    Checkpoints hold float16 state dicts of the parts trained, under the
    full model's key names; :func:`merge_checkpoint` puts them back over
    the original weights.
    """
    import torch

    from .models.sam import SamPromptDecoder, load_lite_medsam

    torch.manual_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = load_sam_spec(model_id="sam")
    t0 = time.time()
    windows = build_windows(data_root, sets, spec=spec, max_objects=max_objects, seed=seed)
    inputs, label_maps, pairs = [], [], []
    for _, x, lab, objects in window_examples(windows, spec):
        pairs += [(len(inputs), label, kind) for label, kind in objects]
        inputs.append(x[0].astype(np.float16))
        label_maps.append(lab)
    print(f"sam: {len(inputs)} windows, {len(pairs)} (object, prompt) pairs, {time.time() - t0:.0f} s", flush=True)
    images = torch.from_numpy(np.stack(inputs)).to(device)
    sam = load_lite_medsam(checkpoint).to(device)
    with torch.no_grad(), torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=device.startswith("cuda")):
        embeddings = torch.cat([sam.image_encoder(images[i:i + 64].float()).to(torch.float16)
                                for i in range(0, len(images), 64)])
    print(f"sam: embeddings {tuple(embeddings.shape)}, {time.time() - t0:.0f} s", flush=True)
    decoder = SamPromptDecoder(sam)
    report = {"windows": len(inputs), "pairs": len(pairs), "sets": [str(s) for s in sets]}

    def run_phase(name, seconds, params, batch_size, augment, step):
        stream = PromptStream(label_maps, pairs, batch_size, seed + len(report), augment)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers, prefetch_factor=4)
        opt = torch.optim.AdamW(params, weight_decay=1e-4)
        base = [g["lr"] for g in opt.param_groups]
        start, total, it, running, log = time.time(), 10 ** 9, 0, [], []
        probe = (20, 60) if device.startswith("cuda") else (2, 4)
        for b in loader:
            it += 1
            if it == probe[0]:
                t_probe = time.time()
            if it == probe[1]:
                per = (time.time() - t_probe) / (probe[1] - probe[0])
                total = max(it + 10, int((seconds - (time.time() - start)) / per) + it)
                print(f"sam {name}: {per * 1000:.0f} ms/step -> {total} iterations", flush=True)
            f = min(1.0, it / 50) if total == 10 ** 9 else 0.5 * (1 + np.cos(np.pi * min(1.0, it / total)))
            for g, lr0 in zip(opt.param_groups, base):
                g["lr"] = lr0 * (min(1.0, it / 50) if it < 50 else f)
            loss, iou = step(*(t.to(device, non_blocking=True) for t in b))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running.append(iou.mean().item() if it % 10 == 0 else None)
            if it % 200 == 0 or it >= total:
                vals = [r for r in running if r is not None]
                row = {"phase": name, "iteration": it, "train_iou": round(float(np.mean(vals)), 4) if vals else None,
                       "seconds": round(time.time() - start, 1)}
                running = []
                print(json.dumps(row), flush=True)
                log.append(row)
            if it >= total:
                break
        return {"iterations": it, "batch": batch_size, "seconds": round(time.time() - start, 1), "log": log}

    def decoder_step(w, k, flip, coords, labels, target):
        masks, iou_pred = decoder(embeddings[w].float(), coords, labels)
        return _mask_loss(masks[:, 0], target, iou_pred[:, 0])

    for p in sam.image_encoder.parameters():
        p.requires_grad_(False)
    decoder.train()
    params = [{"params": [p for p in decoder.parameters() if p.requires_grad], "lr": lr}]
    report["decoder"] = run_phase("decoder", decoder_seconds, params, batch, False, decoder_step)
    phases = [{"what": "prompt encoder + mask decoder, image encoder frozen", **report["decoder"]}]
    save_parts(sam, ("prompt_encoder", "mask_decoder"), out / "sam_decoder_ft.pt", {"phases": phases})

    def joint_step(w, k, flip, coords, labels, target):
        x = torch.stack([_move(images[i].float(), int(kk), bool(ff)) for i, kk, ff in zip(w, k, flip)])
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            emb = sam.image_encoder(x)
        masks, iou_pred = decoder(emb.float(), coords, labels)
        return _mask_loss(masks[:, 0], target, iou_pred[:, 0])

    for p in sam.image_encoder.parameters():
        p.requires_grad_(True)
    sam.image_encoder.eval()  # batch norms keep their statistics
    params = [{"params": list(sam.image_encoder.parameters()), "lr": encoder_lr},
              {"params": [p for p in decoder.parameters() if p.requires_grad], "lr": lr * 0.5}]
    report["joint"] = run_phase("joint", joint_seconds, params, joint_batch, True, joint_step)
    phases = phases + [{"what": "image encoder + prompt encoder + mask decoder, from the decoder fine-tune",
                        **report["joint"]}]
    save_parts(sam, ("image_encoder",), out / "sam_joint_encoder.pt", {"phases": phases})
    save_parts(sam, ("prompt_encoder", "mask_decoder"), out / "sam_joint_decoder.pt", {"phases": phases})
    return report


def save_parts(sam, prefixes, path: Path, info: dict) -> None:
    """float16 state dict of the parameters under ``prefixes``, with ``info``
    (``{"phases": [...]}``: every training phase these weights went through)."""
    import torch

    state = {k: (v.half() if v.is_floating_point() else v).cpu() for k, v in sam.state_dict().items()
             if k.split(".")[0] in prefixes}
    torch.save({"parts": state, "fine_tuning": info}, path)


def merge_checkpoint(base: Path, parts: list[Path], out: Path) -> Path:
    """A full LiteMedSAM checkpoint: ``base`` weights overwritten by fine-tuned ``parts``.

    Its ``fine_tuning`` lists each training phase of the parts once, in order
    (parts of one phase share its record).
    """
    import torch

    state = torch.load(base, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    phases = []
    for p in parts:
        ft = torch.load(p, map_location="cpu", weights_only=True)
        for k, v in ft["parts"].items():
            state[k] = v.to(state[k].dtype)
        for phase in ft["fine_tuning"].get("phases", [ft["fine_tuning"]]):
            if phase not in phases:
                phases.append(phase)
    torch.save({"model": state, "fine_tuning": {"phases": phases}}, out)
    return out
