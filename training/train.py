"""Train a nuclei U-Net on real annotated data (plus optional synthetic data).

Run through ``python build.py train`` (see ``--help``) or ``python build.py
zoo-train``. Needs PyTorch (``pip install -e .[train]``) and the annotated
sets in ``../shared/data``, which a fresh clone does not have: the command
then says so and stops.

The same loop runs on 2 CPU cores and on a GPU: batches are cut and
augmented by DataLoader workers, the model runs on ``device``. Length is
either a fixed number of iterations (reproducible from the seed) or a time
budget, which times the first steps and then fixes the iteration count; the
count reached is saved with the checkpoint so the run can be repeated with
``iterations=``.
"""
from __future__ import annotations

import dataclasses
import json
import math
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
from .models.unet import FLOW_SCALE

GRAY_SETS = ("dsb2018_stage1test_gray",)


def predict_probabilities(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """Whole-image probabilities (C, H, W) for a normalized image, torch side."""
    x = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
    if x.shape[0] == 1 and model.in_channels == 3:  # a grayscale image for a colour model
        x = np.repeat(x, 3, axis=0)
    x, crop = pad_to_multiple(x, 2 ** model.depth)
    device = next(model.parameters()).device
    with torch.no_grad():
        p = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None].to(device))[0].cpu().numpy()
    return p[(slice(None),) + crop]


def evaluate(model, samples, **post) -> dict:
    model.eval()
    rows = []
    for s in samples:
        labels = probabilities_to_labels(predict_probabilities(model, s.image), **post)
        rows.append(evaluate_instances(s.labels, labels))
    model.train()
    return {k: float(np.mean([r[k] for r in rows])) for k in ("ap50", "map", "f1")}


class CropStream(torch.utils.data.IterableDataset):
    """Endless augmented batches ``(image, class target, touching mask)``.

    Real images are drawn in proportion to the square root of their area;
    a fraction ``synthetic_fraction`` of the crops come from synthetic
    images (:mod:`training.synthetic`; whole cells from :mod:`training.synthetic_cells`,
    ``synthetic_transmitted`` of them seen by transmitted light), kept in a pool per worker that is
    refreshed one image per batch. Each worker has its own random stream
    derived from ``seed``. A real sample that keeps an inverted image
    (``Sample.inverted``) is shown it instead with probability ``invert_fraction``.
    """

    def __init__(self, samples, *, batch: int, crop: int, seed: int, boundary_width: int = 2,
                 synthetic_fraction: float = 0.0, channels: int = 1, pool: int = 48,
                 diameter: float | None = None, scale_range=(0.6, 1.6), drop_nuclei: float = 0.3,
                 stain_mix: float = 0.0, any_size_fraction: float = 0.0, any_size=(8.0, 120.0),
                 formulation: str = "classes", invert_fraction: float = 0.0,
                 synthetic_transmitted: float = 0.0):
        self.samples, self.batch, self.crop, self.seed = samples, batch, crop, seed
        self.synthetic_transmitted = synthetic_transmitted
        self.invert_fraction = invert_fraction
        self.formulation = formulation
        self.stain_mix = stain_mix
        self.drop_nuclei = drop_nuclei
        self.boundary_width, self.synthetic_fraction = boundary_width, synthetic_fraction
        self.channels, self.pool = channels, pool
        self.diameter, self.scale_range = diameter, tuple(scale_range)
        self.any_size_fraction, self.any_size = any_size_fraction, tuple(any_size)
        # sqrt of the area per image, and sources with many images weigh less per image (sqrt of
        # their count), so one large source does not drown the others
        per_source = {}
        for s in samples:
            per_source[s.source] = per_source.get(s.source, 0) + 1
        w = np.array([(s.labels.size / per_source[s.source]) ** 0.5 for s in samples], float)
        self.weights = w / w.sum()

    def _synthetic(self, rng):
        from piximi_py.diameter import median_diameter

        from .synthetic import synthetic_nuclei
        from .synthetic_cells import synthetic_cells, synthetic_transmitted_cells

        # a whole-cell model's synthetic crops are whole cells (cytoplasm + nuclei), some seen by
        # transmitted light; that draw is made only when asked for, so runs without it keep their stream
        if self.channels != 2:
            render = synthetic_nuclei
        elif self.synthetic_transmitted and rng.random() < self.synthetic_transmitted:
            render = synthetic_transmitted_cells
        else:
            render = synthetic_cells
        image, labels = render(rng, (256, 256))
        return D.Sample("synthetic", image, labels, "synthetic", median_diameter(labels)[0])

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        # the polarity has a stream of its own, so that a run with it crops as one without it does
        polarity = np.random.default_rng([self.seed, info.id if info else 0, 1])
        pool = []
        while True:
            n_syn = rng.binomial(self.batch, self.synthetic_fraction) if self.synthetic_fraction else 0
            if n_syn:
                if len(pool) < self.pool:
                    pool.append(self._synthetic(rng))
                else:
                    pool[rng.integers(len(pool))] = self._synthetic(rng)
            chosen = [pool[i] for i in rng.integers(len(pool), size=n_syn)] if n_syn else []
            chosen += [self.samples[i] for i in rng.choice(len(self.samples), self.batch - n_syn, p=self.weights)]
            if self.invert_fraction:
                flips = polarity.random(len(chosen)) < self.invert_fraction
                chosen = [dataclasses.replace(s, image=s.inverted) if s.inverted is not None and flip else s
                          for s, flip in zip(chosen, flips)]
            # drawn only when asked for, so that runs without it keep their random stream
            any_size = (rng.random(len(chosen)) < self.any_size_fraction if self.any_size_fraction
                        else np.zeros(len(chosen), bool))
            crops = [D.random_crop(s, self.crop, rng, self.scale_range, self.boundary_width, self.diameter,
                                   self.any_size if wide else None, self.formulation)
                     for s, wide in zip(chosen, any_size)]
            if self.channels == 1:  # stain densities (load mode "stains") read as the hematoxylin one
                crops = [(D.mix_stains(c[0], rng, self.stain_mix), *c[1:]) if c[0].shape[0] == 3 else c
                         for c in crops]
            if self.channels == 3:  # grayscale and synthetic crops for a colour model
                crops = [(D.gray_to_rgb(c[0], rng), *c[1:]) if c[0].shape[0] == 1 else c for c in crops]
            if self.channels == 2:  # whole cells: often no nuclear stain, so learn without it too
                crops = [(D.drop_nuclei(c[0], rng, 1.0 if s.image.ndim == 3 and not s.image[..., 1].any()
                                        else self.drop_nuclei), *c[1:]) for c, s in zip(crops, chosen)]
            yield tuple(torch.from_numpy(np.stack([c[k] for c in crops])) for k in range(3))


def lr_factor(it: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` iterations, then cosine decay to zero at ``total``."""
    if it <= warmup:
        return it / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (it - warmup) / max(1, total - warmup))))


def load_samples(sets, data_root: Path, channels: int, stain: str = "", stain_mix: float = 0.0,
                 inverted_sets=()) -> list:
    """Samples of every set; a set is a name under ``data_root`` or a path. ``stain``
    ("hematoxylin"): one-channel samples of that stain's density in colour images, or with
    ``stain_mix`` all three stain densities (:func:`training.data.mix_stains` mixes them per crop).
    The samples of the sets named (by folder name) in ``inverted_sets`` also keep their image read
    inverted (:func:`training.data.load_set`)."""
    mode = ("stains" if stain_mix else stain) or {3: "rgb", 2: "cells"}.get(channels, "gray")
    roots = [Path(s) if Path(s).is_absolute() or Path(s).is_dir() else Path(data_root) / s for s in sets]
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        raise SystemExit(f"training data not found: {', '.join(missing)} "
                         "(../shared/data is only present on the project's own machines)")
    return [s for r in roots for s in D.load_set(r, mode, inverted=r.name in set(inverted_sets))]


def train(out: Path, *, data_root: Path = D.SHARED_DATA, sets=GRAY_SETS, channels: int = 1,
          encoder: str = "vanilla", encoder_kwargs: dict | None = None, base_width: int = 16,
          depth: int = 4, iterations: int = 1500, batch: int = 8, crop: int = 192, lr: float = 2e-3,
          seed: int = 0, log_every: int = 50, eval_every: int = 250, threads: int = 2,
          touching_weight: float = 3.0, init_from: Path | None = None, warmup: float = 0.1,
          boundary_width: int = 2, synthetic_fraction: float = 0.0, device: str = "cpu",
          workers: int = 0, time_budget_s: float = 0, teacher: Path | None = None,
          distill_weight: float = 1.0, save_half: bool = False, save_every: int = 500,
          diameter: float | None = None, scale_range=(0.6, 1.6), exclude_sources=(), stain: str = "",
          stain_mix: float = 0.0, any_size_fraction: float = 0.0, any_size=(8.0, 120.0),
          formulation: str = "classes", inverted_sets=(), invert_fraction: float = 0.5,
          synthetic_transmitted: float = 0.0) -> Path:
    """Train and save ``out/model.pt`` plus ``out/log.jsonl``; returns the .pt path.

    Parameters
    ----------
    sets : sequence of str
        Set names under ``data_root`` or paths of sets in the standard layout.
        Only each set's training split is used (:func:`training.data.split`).
    encoder, encoder_kwargs, base_width, depth
        The U-Net (``encoder_kwargs`` default to ``{"base_width": base_width}``
        for the vanilla encoder).
    synthetic_fraction : float
        Expected share of synthetic crops in a batch.
    synthetic_transmitted : float
        Whole cells (``channels`` 2): the share of the synthetic images rendered as phase
        contrast or DIC (:func:`training.synthetic_cells.synthetic_transmitted_cells`) rather
        than fluorescence.
    init_from : path, optional
        Start from another checkpoint's weights (fine-tuning).
    warmup : float
        Warm-up length as a fraction of ``iterations`` (or, with a time
        budget, of the iterations the budget allows).
    time_budget_s : float
        If set, time the first steps and fit the run into this many seconds.
    teacher : path, optional
        A trained checkpoint, or a shipped ``.onnx`` U-Net, whose
        probabilities the model also learns (knowledge distillation, weight
        ``distill_weight``).
    save_half : bool
        Store the weights as float16 (half the transfer size).
    diameter : float, optional
        Train at this nucleus diameter: every crop is rescaled so that its
        image's median nucleus diameter becomes ``diameter`` px (times the
        random factor from ``scale_range``), as the pipeline rescales
        images for the model (``ModelSpec.diameter``). Without it crops keep
        their own scale (times the random factor).
    any_size_fraction, any_size : float, (float, float)
        With ``diameter``: this share of the crops shows nuclei of any
        diameter in the ``any_size`` range (px) instead, as the diameter
        estimate's first passes show the model an image before it knows its
        size (:func:`piximi_py.estimate.estimate_diameter`).
    exclude_sources : sequence of str
        Leave out every image of these sources (:func:`training.data.source_of`):
        the folds of the leave-one-source-out evaluation.
    stain : str, optional
        "hematoxylin": the model reads the hematoxylin density of stained
        colour images (``ModelSpec.stain``), ``channels`` 1.
    stain_mix : float
        With ``stain``: mix up to this share of the eosin and residual densities into
        the hematoxylin density of each crop, either way (:func:`training.data.mix_stains`).
    formulation : {"classes", "flows"}
        What the model predicts: background / interior / boundary (softmax), or the
        probability of background and a flow towards each object's centre (Cellpose's
        loss: cross-entropy plus the squared error of the flows at
        :data:`training.models.unet.FLOW_SCALE`; :func:`training.data.flow_targets`).
    inverted_sets, invert_fraction : sequence of str, float
        Whole-cell sets (folder names) of transmitted light (phase contrast, DIC), whose
        crops show the cytoplasm inverted with probability ``invert_fraction``, as the
        ``invert`` option reads it, so that the model learns dark cells on a light
        background as well as light ones on a dark background.
    """
    if formulation not in ("classes", "flows"):
        raise ValueError(f"unknown formulation {formulation!r}")
    flows = formulation == "flows"
    if flows and teacher:
        raise ValueError("distillation needs class probabilities, not flows")
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = device.startswith("cuda")  # fixed crop size: let cuDNN pick kernels
    any_size_fraction = any_size_fraction if diameter else 0.0  # a size to vary around, or none
    samples = [s for s in load_samples(sets, data_root, channels, stain, stain_mix, inverted_sets)
               if s.source not in set(exclude_sources)]
    train_set, val_set = D.split(samples)
    # validation at the images' own scale says nothing of a model trained at one size, and it
    # scores class probabilities, which a flow model does not give
    if diameter or flows:
        val_set = []
    print(f"{out}: train {len(train_set)} images, validation {len(val_set)} images", flush=True)
    if encoder_kwargs is None:
        encoder_kwargs = {"base_width": base_width} if encoder == "vanilla" else {}
    model = Unet(encoder, in_channels=channels, classes=3, depth=depth, activation="flows" if flows else "softmax",
                 **encoder_kwargs)
    start_run = None  # what the starting weights were trained on, kept in the checkpoint
    if init_from is not None:
        start = torch.load(init_from, map_location="cpu", weights_only=True)
        model.load_state_dict(start["state_dict"])
        start_run = {"path": str(init_from), **start.get("run", {})}
    model.to(device)
    teacher_model = load_teacher(teacher).to(device) if teacher else None
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    class_weight = torch.tensor([1.0, 1.0, 2.0], device=device)
    stream = CropStream(train_set, batch=batch, crop=crop, seed=seed, boundary_width=boundary_width,
                        synthetic_fraction=synthetic_fraction, channels=channels, diameter=diameter,
                        scale_range=scale_range, stain_mix=stain_mix,
                        any_size_fraction=any_size_fraction, any_size=any_size, formulation=formulation,
                        invert_fraction=invert_fraction if inverted_sets else 0.0,
                        synthetic_transmitted=synthetic_transmitted)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers,
                                         pin_memory=device != "cpu", prefetch_factor=4 if workers else None,
                                         persistent_workers=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "log.jsonl", "w")
    config = model_config(model, channels, encoder, depth, encoder_kwargs)
    probe = (10, 40) if device.startswith("cuda") else (2, 4)  # steps timed (after the first ones, which warm up the kernels) for a time budget
    total = iterations if not time_budget_s else 10 ** 9
    warm = max(1, int(warmup * iterations)) if not time_budget_s else 10 ** 9
    t0, t_probe, running = time.time(), None, []
    batches = iter(loader)
    it = 0
    while it < total:
        it += 1
        if time_budget_s and it == probe[0]:
            t_probe = time.time()
        if time_budget_s and it == probe[1]:
            per_step = (time.time() - t_probe) / (probe[1] - probe[0])
            total = max(probe[1] + 10, int((time_budget_s - (time.time() - t0)) / per_step) + it)
            warm = max(probe[1], int(warmup * total))
            print(f"{out.name}: {per_step * 1000:.0f} ms/step -> {total} iterations", flush=True)
        for g in opt.param_groups:
            g["lr"] = lr * lr_factor(it, total, warm) if total < 10 ** 9 else lr * min(1.0, it / 200)
        x, y, touching = (t.to(device, non_blocking=True) for t in next(batches))
        prob = model(x)
        if flows:
            loss = (F.binary_cross_entropy(prob[:, 0].clamp(1e-6, 1 - 1e-6), y[:, 0])
                    + 0.5 * F.mse_loss(FLOW_SCALE * prob[:, 1:], FLOW_SCALE * y[:, 1:]))
        else:
            # pixels between touching nuclei decide splits and merges: weight them up
            weight = class_weight[y] + touching_weight * touching
            logp = torch.log(prob.clamp_min(1e-7))
            loss = (F.nll_loss(logp, y, reduction="none") * weight).mean()
        if teacher_model is not None:
            with torch.no_grad():
                target = teacher_model(x)
            loss = loss + distill_weight * (target * (torch.log(target.clamp_min(1e-7)) - logp)).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running.append(loss.item() if it % 10 == 0 or log_every < 10 else None)
        if it % log_every == 0 or it == total:
            row = {"iteration": it, "loss": float(np.mean([r for r in running if r is not None] or [np.nan])),
                   "seconds": round(time.time() - t0, 1)}
            running = []
            if val_set and (it % eval_every == 0 or it == total):
                row.update({f"val_{k}": v for k, v in evaluate(model, val_set).items()})
            if it % eval_every == 0 or it % save_every == 0 or it == total:
                save_checkpoint(model, config, out / "model.pt", it, save_half)
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
    save_checkpoint(model, config, out / "model.pt", it, save_half,
                    run={"iterations": it, "batch": batch, "crop": crop, "lr": lr, "seed": seed,
                         "sets": [str(s) for s in sets], "synthetic_fraction": synthetic_fraction,
                         "synthetic_transmitted": synthetic_transmitted,
                         "touching_weight": touching_weight, "boundary_width": boundary_width,
                         "teacher": str(teacher) if teacher else None, "device": device,
                         "diameter": diameter, "scale_range": list(scale_range),
                         "any_size_fraction": any_size_fraction, "any_size": list(any_size),
                         "exclude_sources": list(exclude_sources), "stain": stain, "stain_mix": stain_mix,
                         "formulation": formulation, "inverted_sets": list(inverted_sets),
                         "invert_fraction": invert_fraction if inverted_sets else 0.0,
                         "seconds": round(time.time() - t0, 1), "start": start_run})
    return out / "model.pt"


def save_checkpoint(model, config: dict, path: Path, iteration: int, half: bool = False, run: dict | None = None):
    state = {k: (v.half() if half and v.is_floating_point() else v).cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "config": config, "iteration": iteration, "run": run or {}}, path)


def model_config(model: Unet | None, channels: int, encoder: str = "vanilla", depth: int | None = None,
                 encoder_kwargs: dict | None = None) -> dict:
    kwargs = dict(encoder_kwargs or {})
    if "weights" in kwargs:  # pretrained weights are only a starting point: reloads need none
        kwargs["weights"] = None
    if model is not None and model.activation != "softmax":
        kwargs["activation"] = model.activation
    return {"encoder_name": encoder, "in_channels": channels, "classes": 3,
            "depth": model.depth if depth is None else depth, **kwargs}


def input_multiple(config: dict) -> int:
    """Side multiple the exported model needs, from a checkpoint's ``config``."""
    return 2 ** config["depth"] * config.get("space_to_depth", 1)


def load_checkpoint(path: Path) -> Unet:
    return unet_from_checkpoint(torch.load(path, map_location="cpu", weights_only=True))


def unet_from_checkpoint(ckpt: dict) -> Unet:
    """The model of a loaded checkpoint (``config`` and ``state_dict``), in float32 and eval mode."""
    model = Unet(**ckpt["config"])
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()})
    return model.eval()


def unet_from_onnx(onnx_path: Path, **config) -> Unet:
    """A :class:`Unet` with the weights of an exported one (``config`` as in a checkpoint).

    The exporter folds each batch norm into the convolution before it, so the
    file holds one weight and bias per convolution, mostly under generated
    names. They are taken in graph order, which is the order the convolutions
    run in; each batch norm becomes the identity plus the folded bias. The
    result is checked against the file on a random image.
    """
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    convs = [(inits[n.input[1]], inits[n.input[2]] if len(n.input) > 2 else None)
             for n in graph.node if n.op_type == "Conv"]
    model = Unet(**config).eval()
    order = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    side = 2 ** model.depth * model.space_to_depth * 2
    with torch.no_grad():
        model(torch.zeros(1, model.in_channels, side, side))
    for h in hooks:
        h.remove()
    if len(order) != len(convs):
        raise ValueError(f"{Path(onnx_path).name}: {len(convs)} convolutions, the model runs {len(order)}")
    batch_norm_after = {}
    for seq in model.modules():
        children = list(seq.children())
        for a, b in zip(children, children[1:]):
            if isinstance(a, torch.nn.Conv2d) and isinstance(b, torch.nn.BatchNorm2d):
                batch_norm_after[a] = b
    with torch.no_grad():
        for conv, (weight, bias) in zip(order, convs):
            if tuple(conv.weight.shape) != weight.shape:
                raise ValueError(f"{Path(onnx_path).name}: a convolution of shape {weight.shape} where the "
                                 f"model has {tuple(conv.weight.shape)}")
            conv.weight.copy_(torch.from_numpy(weight.copy()))
            bias = torch.from_numpy(bias.copy()) if bias is not None else torch.zeros(weight.shape[0])
            bn = batch_norm_after.get(conv)
            if bn is not None:
                bn.weight.fill_(1.0)
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                bn.bias.copy_(bias)
            elif conv.bias is not None:
                conv.bias.copy_(bias)
            elif bias.abs().max() > 0:
                raise ValueError(f"{Path(onnx_path).name}: a bias for a convolution without one")
    x = np.random.default_rng(0).random((1, model.in_channels, 2 * side, 2 * side), dtype=np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        err = float(np.abs(model(torch.from_numpy(x)).numpy() - session.run(None, {"image": x})[0]).max())
    if err > 1e-4:
        raise ValueError(f"{Path(onnx_path).name}: the rebuilt model differs from the file by {err:.2e}")
    return model


def shipped_config(onnx_path: Path) -> dict:
    """The checkpoint-style ``config`` of a shipped model file (``training.cli.SHIPPED``)."""
    from .cli import SHIPPED
    from .zoo import VARIANTS

    name = Path(onnx_path).name
    variant = next((c["variant"] for c in SHIPPED.values() if c["file"] == name), None)
    if variant is None:
        raise ValueError(f"{name} is not a shipped model: its architecture is unknown")
    cfg = VARIANTS[variant]
    return model_config(None, cfg.get("channels", 1), cfg["encoder"], cfg["depth"], cfg["encoder_kwargs"])


def load_teacher(path: Path) -> Unet:
    """A distillation teacher: a training checkpoint, or a shipped ``.onnx`` model (``training.cli.SHIPPED``)."""
    path = Path(path)
    if path.suffix != ".onnx":
        return load_checkpoint(path)
    return unet_from_onnx(path, **shipped_config(path))
