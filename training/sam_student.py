"""Distil LiteMedSAM's image encoder into a small CNN student for the page (issue 5).

The fine-tuned TinyViT encoder takes 3.5 s per 256x256 window in the page's
WASM runtime, and the decoder, working on its 64x64 embedding, 130 ms per
prompt. The student is an ImageNet MobileNetV2 with a small feature pyramid
(:class:`training.models.sam.StudentEncoder`) that writes a 32x32 embedding
(stride 8): a quarter of the decoder's image tokens and up-scaling work.

Training (``python build.py sam-distill``, CPU, needs ``../shared/data`` and
the ``mnfinder`` set; see :func:`distill`):

1. training windows as :mod:`piximi_py.sam` chooses them around training
   nuclei (:func:`training.sam_finetune.build_windows`, validation split
   never used), each window's encoder input, label map, and the *teacher*
   embedding: the shipped fine-tuned encoder (``sam_encoder_int8.onnx``, run
   with onnxruntime) average-pooled to 32x32;
2. the decoder starts from the shipped fine-tuned decoder, whose weights are
   read back from ``sam_decoder.onnx`` (:func:`decoder_from_onnx`); it runs on
   the 32x32 grid and its 128x128 mask logits are resized to 256x256 inside
   the model, so the ONNX contract is unchanged;
3. student and decoder train together on simulated prompts with the
   fine-tuning loss (BCE + Dice + IoU head) plus the mean squared error to
   the teacher embedding on windows that are not rotated or flipped.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from . import data as D

ROOT = Path(__file__).resolve().parents[1]
SIZE = 256
STUDENT_GRID = 32
SETS = ("dsb2018_stage1test_gray", "mnfinder")


def decoder_from_onnx(sam, onnx_path: Path):
    """Load prompt encoder + mask decoder weights of ``sam`` from an exported fp32 decoder.

    ``torch.onnx.export`` keeps the parameter names of initializers it stores
    as they are, and stores each ``nn.Linear`` weight transposed under a
    generated name, as the second input of the ``MatMul`` whose output is
    added to the named bias. Parameters folded into constants (the tokens,
    the no-mask embedding, the up-scaling LayerNorm's affine) are found by
    their shape and consumer among the unnamed initializers, each required
    to be unique. Returns the names that were set.
    """
    import onnx
    import torch
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    state = sam.state_dict()
    wanted = {k for k in state if k.split(".")[0] in ("prompt_encoder", "mask_decoder")}
    found = {k: v for k, v in inits.items() if k in wanted}
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type != "Add":
            continue
        bias = next((i for i in node.input if i in inits and i.endswith(".bias")), None)
        other = next((i for i in node.input if i != bias), None)
        if bias is None or other not in producer or producer[other].op_type != "MatMul":
            continue
        w = producer[other].input[1]
        key = bias[:-len("bias")] + "weight"
        if w in inits and key in wanted:
            found[key] = inits[w].T
    # constants folded by the exporter, found by their unique shape among unnamed initializers
    unnamed = [(n, v) for n, v in inits.items() if not n.startswith(("mask_decoder.", "prompt_encoder."))]

    def only(shape, op):
        hits = [(n, v) for n, v in unnamed if v.shape == shape
                and any(n in node.input and node.op_type == op for node in model.graph.node)]
        if len(hits) != 1:
            raise ValueError(f"{onnx_path.name}: {len(hits)} unnamed {op} constants of shape {shape}")
        return hits[0][1]

    tokens = only((1, 5, 256), "Expand")[0]
    found["mask_decoder.iou_token.weight"], found["mask_decoder.mask_tokens.weight"] = tokens[:1], tokens[1:]
    found["prompt_encoder.no_mask_embed.weight"] = only((1, 256, 1, 1), "Expand").reshape(1, 256)
    found["mask_decoder.output_upscaling.1.weight"] = only((64, 1, 1), "Mul").reshape(64)
    found["mask_decoder.output_upscaling.1.bias"] = only((64, 1, 1), "Add").reshape(64)
    missing = sorted(k for k in wanted - set(found)
                     if not k.startswith("prompt_encoder.mask_downscaling"))  # unused (no mask prompts)
    if missing:
        raise ValueError(f"{onnx_path.name}: no weights found for {missing}")
    with torch.no_grad():
        for k, v in found.items():
            if tuple(state[k].shape) != v.shape:
                raise ValueError(f"{k}: shape {v.shape} in ONNX, {tuple(state[k].shape)} in the model")
            state[k].copy_(torch.from_numpy(np.array(v)))
    return sorted(found)


def load_student(path: Path):
    """A :class:`StudentSam` from a ``student.pt`` written by :func:`distill`, in eval mode."""
    import torch

    from .models.sam import StudentEncoder, StudentSam, build_lite_medsam

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = StudentSam(build_lite_medsam(), StudentEncoder(weights=None), ckpt["grid"])
    model.load_state_dict(ckpt["model"])
    return model.eval()


def build_cache(out: Path, *, data_root: Path = D.SHARED_DATA, max_objects: int = 10,
                teacher: Path = ROOT / "models" / "sam_encoder_int8.onnx", threads: int = 2, seed: int = 0) -> Path:
    """Windows, encoder inputs, label maps, prompt pairs and pooled teacher embeddings -> ``out`` (npz)."""
    from piximi_py.backends.onnxruntime import OnnxRuntimeBackend
    from piximi_py.sam import load_sam_spec

    from .sam_finetune import build_windows, window_examples

    spec = load_sam_spec(model_id="sam")
    windows = build_windows(Path(data_root), SETS, spec=spec, max_objects=max_objects, seed=seed)
    enc = OnnxRuntimeBackend(teacher, threads=threads)
    inputs, labels, targets, pairs = [], [], [], []
    t0 = time.time()
    for k, (_, x, lab, objects) in enumerate(window_examples(windows, spec)):
        emb = np.asarray(enc.run_sync(x))[0]
        f = emb.shape[-1] // STUDENT_GRID
        pooled = emb.reshape(emb.shape[0], STUDENT_GRID, f, STUDENT_GRID, f).mean((2, 4))
        pairs += [(len(inputs), label, 0 if kind == "box" else 1) for label, kind in objects]
        inputs.append(x[0].astype(np.float16))
        labels.append(lab.astype(np.uint16))
        targets.append(pooled.astype(np.float16))
        if k % 100 == 0:
            print(f"teacher {k} of at most {len(windows)} windows, {time.time() - t0:.0f} s", flush=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, inputs=np.stack(inputs), labels=np.stack(labels), teacher=np.stack(targets),
             pairs=np.array(pairs, np.int64), seconds=time.time() - t0, max_objects=max_objects)
    print(f"{len(inputs)} windows, {len(pairs)} pairs, {time.time() - t0:.0f} s -> {out}", flush=True)
    return out


def sample_batch(label_maps, pairs, batch: int, augment: float, rng: np.random.Generator):
    """``batch`` random (window, object, prompt kind) pairs with simulated prompts.

    A share ``augment`` of the windows is rotated by a multiple of 90 degrees
    and maybe flipped (``k``, ``flip``; the caller moves the encoder input the
    same way), the others are left still so the teacher embedding applies.
    Returns torch tensors ``w, k, flip, coords, labels, target``.
    """
    from .sam_finetune import _move, collate_prompts, simulate_prompt

    rows = []
    while len(rows) < batch:
        w, lab, kind = pairs[rng.integers(len(pairs))]
        k, flip = (int(rng.integers(1, 4)), bool(rng.random() < 0.5)) if rng.random() < augment else (0, False)
        mask = _move(label_maps[w] == lab, k, flip)
        if mask.any():
            rows.append((w, k, flip, *simulate_prompt(mask, kind, rng), mask))
    return collate_prompts(rows)


def distill(out: Path = ROOT / "runs" / "sam_student", *, cache: Path | None = None, seconds: float = 2400,
            batch: int = 8, lr: float = 1e-3, decoder_lr: float = 5e-5, distill_weight: float = 1.0,
            augment: float = 0.5, threads: int = 2, seed: int = 0,
            decoder_onnx: Path = ROOT / "models" / "sam_decoder.onnx") -> Path:
    """Train the student (and the decoder on its grid) for ``seconds``; writes ``out/student.pt``.

    The checkpoint holds the float32 state dict of :class:`StudentSam`
    (student encoder + prompt encoder + mask decoder) and a ``fine_tuning``
    record; it is rewritten every 5 minutes, so a stopped run keeps its work.
    """
    import torch

    from .models.sam import SamPromptDecoder, StudentEncoder, StudentSam, load_lite_medsam
    from .sam_export import fetch_checkpoint
    from .sam_finetune import _mask_loss, _move

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache or out / "cache.npz")
    if not cache.exists():
        raise SystemExit(f"{cache} missing: run `python build.py sam-distill --cache-only` first")
    data = np.load(cache)
    inputs, teacher = torch.from_numpy(data["inputs"]), torch.from_numpy(data["teacher"])
    label_maps = data["labels"].astype(np.int32)
    pairs = [(int(w), int(lab), "box" if kind == 0 else "click") for w, lab, kind in data["pairs"]]
    sam = load_lite_medsam(fetch_checkpoint())
    decoder_from_onnx(sam, decoder_onnx)
    model = StudentSam(sam, StudentEncoder(), STUDENT_GRID).train()
    decoder = SamPromptDecoder(model)
    params = [{"params": list(model.image_encoder.parameters()), "lr": lr},
              {"params": [p for p in decoder.parameters() if p.requires_grad], "lr": decoder_lr}]
    opt = torch.optim.AdamW(params, weight_decay=1e-4)
    base = [g["lr"] for g in opt.param_groups]
    rng = np.random.default_rng(seed)
    log = open(out / "log.jsonl", "w")
    record = {"what": "student encoder (ImageNet MobileNetV2 + pyramid, 32x32 embedding) distilled from the "
                      "shipped fine-tuned encoder, with the shipped fine-tuned decoder on its grid",
              "windows": len(inputs), "pairs": len(pairs), "sets": list(SETS), "batch": batch, "lr": lr,
              "decoder_lr": decoder_lr, "distill_weight": distill_weight, "seed": seed,
              "teacher_cache_seconds": float(data["seconds"]), "max_objects_per_image": int(data["max_objects"])}

    def save(it, elapsed):
        torch.save({"model": model.state_dict(), "grid": STUDENT_GRID,
                    "fine_tuning": {**record, "iterations": it, "seconds": round(elapsed)}}, out / "student.pt")

    t0 = last_save = time.time()
    it, running, total = 0, [], None
    while total is None or it < total:
        it += 1
        w, k, flip, coords, labels, target = sample_batch(label_maps, pairs, batch, augment, rng)
        x = torch.stack([_move(inputs[i].float(), int(kk), bool(ff)) for i, kk, ff in zip(w, k, flip)])
        emb = model.image_encoder(x)
        masks, iou_pred = decoder(emb, coords, labels)
        loss, iou = _mask_loss(masks[:, 0], target, iou_pred[:, 0])
        still = (k == 0) & ~flip
        mse = torch.nn.functional.mse_loss(emb[still], teacher[w[still]].float()) if still.any() else emb.sum() * 0
        total_loss = loss + distill_weight * mse
        opt.zero_grad(set_to_none=True)
        total_loss.backward()
        opt.step()
        if it == 10:
            t_probe = time.time()
        if it == 30:
            per = (time.time() - t_probe) / 20
            total = max(40, int((seconds - (time.time() - t0)) / per) + it)
            print(f"sam-distill: {per:.2f} s/step -> {total} iterations", flush=True)
        warm = min(1.0, it / 30)
        f = warm if total is None else warm * 0.5 * (1 + np.cos(np.pi * min(1.0, it / total)))
        for g, lr0 in zip(opt.param_groups, base):
            g["lr"] = lr0 * f
        running.append([loss.item(), mse.item(), iou.mean().item()])
        if it % 50 == 0 or it == total:
            r = np.mean(running, 0)
            row = {"iteration": it, "mask_loss": round(float(r[0]), 4), "distill_mse": round(float(r[1]), 4),
                   "train_iou": round(float(r[2]), 4), "seconds": round(time.time() - t0, 1)}
            running = []
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
        if time.time() - last_save > 300:
            save(it, time.time() - t0)
            last_save = time.time()
    save(it, time.time() - t0)
    return out / "student.pt"
