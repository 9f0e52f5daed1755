"""Adapt a model to a user's images from the objects they corrected ("Teach").

A model that is wrong on a new microscope is mostly wrong in how it reads
that microscope's features into background / interior / boundary, and in
the size it expects. So teaching keeps the network and refits what is cheap
to refit, in numpy, in the page or in CPython alike:

1. the **diameter**: the median diameter of the corrected objects, used for
   the images that follow (``ModelSpec.image_diameter``; see
   :func:`piximi_py.pipeline.segment_async` for images far from it);
2. the **head**, the last 1x1 convolution (:func:`piximi_py.onnxfile.find_head`):
   a softmax regression from the network's own features (an extra output of
   the same ONNX file) to the classes of the corrected labels
   (:func:`class_targets`), started from the shipped weights and held near
   them (:func:`fit_head`);
3. the **thresholds** that turn probabilities into objects, chosen on the
   corrected images (:func:`choose_thresholds`).

The result is a new ONNX file (:func:`adapted_model_bytes`): the same
network with the new head and, in its metadata, the diameter, thresholds and
what it was adapted on, so that it can be downloaded, loaded again and run by
any ONNX runtime.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from scipy import ndimage as ndi

from . import diameter as D
from . import onnxfile, postprocess, preprocess, rescale, tiling
from .metrics import average_precision
from .models import ModelSpec, predicts_flows

__all__ = ["check_teachable", "class_targets", "touching_mask", "resize_labels", "Example", "collect_example",
           "fit_head", "choose_thresholds", "Adaptation", "teach", "adapted_model_bytes",
           "spec_from_metadata", "teach_model", "METADATA_KEY"]

#: The metadata key of an adapted model's description (JSON).
METADATA_KEY = "piximi.adapted"
#: Loss weights of background / interior / boundary, and extra weight where objects touch. Training
#: weights boundaries up (1/1/2, +3 where objects touch); refitting only the head with those weights
#: made it split more objects on the corrected images themselves, so the head's fit is unweighted.
CLASS_WEIGHT = (1.0, 1.0, 1.0)
TOUCHING_WEIGHT = 0.0
#: Pull of the head towards the shipped weights (L2 on the weights, against the mean loss).
PRIOR = 0.1
#: Most feature positions a fit uses: a random sample beyond it.
MAX_POSITIONS = 15_000
#: A refitted head or new thresholds are kept when they beat the model as it is by this much
#: AP@0.5 on corrected images they were not fitted to.
MIN_GAIN = 0.01

Progress = Optional[Callable[[str, int, int], None]]


def class_targets(labels: np.ndarray, boundary_width: int = 2) -> np.ndarray:
    """0 background, 1 interior, 2 boundary (inner rim of each object, ``boundary_width`` px).

    A rim of two pixels keeps the interiors of touching nuclei four pixels
    apart, which the network learns far more reliably than a one-pixel gap.
    """
    size = 2 * boundary_width + 1
    boundary = (ndi.maximum_filter(labels, size) != labels) | (ndi.minimum_filter(labels, size) != labels)
    target = np.zeros(labels.shape, np.int64)
    target[labels > 0] = 1
    target[boundary & (labels > 0)] = 2
    return target


def touching_mask(labels: np.ndarray, width: int = 2) -> np.ndarray:
    """Pixels of an object within ``width`` px of another object (not background)."""
    size = 2 * width + 1
    no_label = np.iinfo(labels.dtype).max
    largest = ndi.maximum_filter(labels, size)
    smallest = ndi.minimum_filter(np.where(labels > 0, labels, no_label), size)
    return (labels > 0) & ((largest != labels) | ((smallest != labels) & (smallest != no_label)))


def resize_labels(labels: np.ndarray, shape) -> np.ndarray:
    """Nearest-neighbour resampling of instance labels at pixel centres (the grid of
    :func:`piximi_py.rescale.resize`)."""
    rows = ((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0]).astype(int)
    cols = ((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1]).astype(int)
    return labels[np.minimum(rows, labels.shape[0] - 1)][:, np.minimum(cols, labels.shape[1] - 1)]


@dataclass
class Example:
    """One corrected image, on the model's grid (rescaled to the model's diameter and padded)."""
    features: np.ndarray     #: (C, H/block, W/block) the network's features
    targets: np.ndarray      #: (N, block**2) class of each output pixel of each feature position
    weights: np.ndarray      #: (N, block**2) loss weight of each (0 on padding)
    probabilities: np.ndarray  #: (K, H, W) the model's own output
    labels: np.ndarray       #: (H, W) the corrected labels on the same grid
    crop: tuple              #: the image within the padded grid
    diameter: float          #: median diameter of the corrected objects (image pixels)


def _positions(target: np.ndarray, block: int) -> np.ndarray:
    """``(h, w)`` full-resolution map -> ``(h/block * w/block, block**2)``, position-major,
    sub-pixels in depth-to-space (CRD) order."""
    h, w = target.shape
    return (target.reshape(h // block, block, w // block, block).transpose(0, 2, 1, 3)
            .reshape(-1, block * block))


async def collect_example(x: np.ndarray, labels: np.ndarray, model: ModelSpec, head: onnxfile.Head,
                          backend, diameter: float | None = None) -> Example:
    """Features and targets of one corrected image.

    Parameters
    ----------
    x : ndarray
        The image as the model takes it, ``(C, H, W)`` (:func:`piximi_py.pipeline.prepare_input`).
    labels : ndarray
        The corrected labels of the image, ``(H, W)``.
    backend : Backend
        Runs the model with ``head.features`` as an extra output
        (:func:`piximi_py.onnxfile.with_outputs`), through ``run_named``.
    diameter : float, optional
        Object diameter in image pixels; default: that of ``labels``.
    """
    if diameter is None:
        diameter, count = D.median_diameter(labels, min_objects=1)
        if not count:
            raise ValueError("a corrected image needs at least one object")
    scale = rescale.scale_factor(diameter, model.diameter) if model.diameter else 1.0
    if scale != 1.0:
        shape = rescale.rescaled_shape(x.shape, scale)
        x = rescale.resize(x, shape)
        labels = resize_labels(labels, shape)
    block = head.block
    multiple = max(model.input_multiple, block)
    padded, crop = preprocess.pad_to_multiple(x, multiple)
    # tiles on the feature grid, so that every tile starts on a whole feature position
    grid = (padded.shape[-2] // block, padded.shape[-1] // block)
    tile = max(multiple, model.tile_size - model.tile_size % multiple) // block
    features = probabilities = None
    for t in tiling.plan_tiles(grid, tile, model.tile_overlap // block):
        read = tuple(slice(s.start * block, s.stop * block) for s in t.read)
        out = await backend.run_named({backend.input_name: np.ascontiguousarray(padded[(slice(None),) + read])[None]})
        f, p = out[head.features][0], out[backend.output_names[0]][0]
        if features is None:
            features = np.empty((f.shape[0],) + grid, np.float32)
            probabilities = np.empty((p.shape[0],) + padded.shape[-2:], np.float32)
        features[(slice(None),) + t.core] = f[(slice(None),) + t.inner]
        core, inner = ([slice(s.start * block, s.stop * block) for s in ss] for ss in (t.core, t.inner))
        probabilities[(slice(None),) + tuple(core)] = p[(slice(None),) + tuple(inner)]
    # the targets of the image as it is, then padded: an object at the padded bottom or right edge
    # gets no rim there, as none at the top or left (the padding is not an annotated background)
    target = np.zeros(padded.shape[-2:], np.uint8)
    weight = np.zeros(padded.shape[-2:], np.float32)  # reflected padding has no truth: weight 0
    target[crop] = class_targets(labels)
    weight[crop] = np.asarray(CLASS_WEIGHT, np.float32)[target[crop]] + TOUCHING_WEIGHT * touching_mask(labels)
    return Example(features, _positions(target, block).astype(np.int8), _positions(weight, block),
                   probabilities[(slice(None),) + crop], labels, crop, float(diameter))


def _head_probabilities(X, W, b, block):
    """Softmax over classes of the head at positions ``X`` (N, C): (N, K, S)."""
    classes = W.shape[0] // (block * block)
    z = (X @ W.T + b).reshape(len(X), classes, block * block)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def fit_head(examples: list, head: onnxfile.Head, *, iterations: int = 300, learning_rate: float = 0.01,
             prior: float | None = None, seed: int = 0, deadline: float | None = None,
             progress: Progress = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """New head weights fitted to the examples' targets (weighted cross-entropy, Adam, full batch).

    The loss is the weighted mean cross-entropy plus ``prior`` times the
    squared distance to the shipped weights, so that a few corrected images
    move the head only as far as they must.

    Returns
    -------
    weight, bias : ndarray
        Of the head's shapes.
    report : dict
        Loss before and after, iterations run, positions used.
    """
    prior = PRIOR if prior is None else prior
    X = np.concatenate([e.features.reshape(e.features.shape[0], -1).T for e in examples]).astype(np.float32)
    Y = np.concatenate([e.targets for e in examples]).astype(np.intp)  # put_along_axis indexes with it (32-bit in the page)
    Wt = np.concatenate([e.weights for e in examples]).astype(np.float32)
    keep = Wt.sum(axis=1) > 0
    X, Y, Wt = X[keep], Y[keep], Wt[keep]
    if len(X) > MAX_POSITIONS:
        pick = np.random.default_rng(seed).choice(len(X), MAX_POSITIONS, replace=False)
        X, Y, Wt = X[pick], Y[pick], Wt[pick]
    if not len(X):
        raise ValueError("no corrected pixels to learn from")
    classes, block = head.classes, head.block
    onehot = np.zeros((len(X), classes, block * block), np.float32)
    np.put_along_axis(onehot, Y[:, None, :], 1.0, axis=1)
    total = Wt.sum()
    W0, b0 = head.weight.astype(np.float32), head.bias.astype(np.float32)
    W, b = W0.copy(), b0.copy()
    m = [np.zeros_like(W), np.zeros_like(b)]
    v = [np.zeros_like(W), np.zeros_like(b)]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    losses = []
    run = 0
    for run in range(1, iterations + 1):
        p = _head_probabilities(X, W, b, block)
        losses.append(float(-(Wt * np.log(np.maximum((p * onehot).sum(axis=1), 1e-12))).sum() / total))
        g = ((p - onehot) * Wt[:, None, :] / total).reshape(len(X), -1)
        grads = [g.T @ X + prior * (W - W0), g.sum(axis=0) + prior * (b - b0)]
        for i, (param, grad) in enumerate(zip((W, b), grads)):
            m[i] = beta1 * m[i] + (1 - beta1) * grad
            v[i] = beta2 * v[i] + (1 - beta2) * grad * grad
            param -= learning_rate * (m[i] / (1 - beta1 ** run)) / (np.sqrt(v[i] / (1 - beta2 ** run)) + eps)
        if progress and run % 10 == 0:
            progress("teach", run, iterations)
        if deadline is not None and time.perf_counter() > deadline:
            break
    return W, b, {"loss_before": round(losses[0], 4), "loss_after": round(losses[-1], 4),
                  "iterations": run, "positions": int(len(X))}


def head_probabilities(features: np.ndarray, weight: np.ndarray, bias: np.ndarray, block: int) -> np.ndarray:
    """Class probabilities ``(K, H*block, W*block)`` of a head on features ``(C, H, W)``."""
    c, h, w = features.shape
    p = _head_probabilities(features.reshape(c, -1).T, weight, bias, block)  # (h*w, K, S)
    k = p.shape[1]
    return (p.reshape(h, w, k, block, block).transpose(2, 0, 3, 1, 4).reshape(k, h * block, w * block))


#: Threshold pairs :func:`choose_thresholds` tries (with the model's own).
FOREGROUND_THRESHOLDS = (0.5, 0.6, 0.7)
SEED_THRESHOLDS = (0.3, 0.4, 0.5)


def _mean_ap(pairs, post: dict) -> float:
    """Mean AP@0.5 of the instances ``post`` (thresholds, sizes) makes of ``(probabilities,
    labels)`` pairs."""
    return float(np.mean([average_precision(labels, postprocess.probabilities_to_labels(prob, **post))
                          for prob, labels in pairs]))


def choose_thresholds(pairs: list, model: ModelSpec) -> tuple[dict, float]:
    """The foreground and seed thresholds with the best mean AP@0.5 on ``(probabilities, labels)``
    pairs; ties keep the model's own. Returns the postprocess options and that AP."""
    post = dict(model.postprocess)
    own = (post.get("foreground_threshold", 0.5), post.get("seed_threshold", 0.5))
    best, best_ap = own, -1.0
    for fg in sorted(set(FOREGROUND_THRESHOLDS) | {own[0]}):
        for seed in sorted(set(SEED_THRESHOLDS) | {own[1]}):
            ap = _mean_ap(pairs, {**post, "foreground_threshold": fg, "seed_threshold": seed})
            if ap > best_ap + 1e-9 or (abs(ap - best_ap) <= 1e-9 and (fg, seed) == own):
                best, best_ap = (fg, seed), ap
    post.update(foreground_threshold=best[0], seed_threshold=best[1])
    return post, best_ap


@dataclass
class Adaptation:
    """What :func:`teach` learned."""
    weight: np.ndarray
    bias: np.ndarray
    postprocess: dict
    diameter: float                  #: typical object diameter of the taught images (px)
    images: list = field(default_factory=list)  #: names of the corrected images
    report: dict = field(default_factory=dict)  #: losses, AP on the corrected images, timings

    def description(self, model: ModelSpec) -> dict:
        return {"adapted_from": model.id, "images": self.images, "diameter": self.diameter,
                "postprocess": self.postprocess, "outline_contrast": model.outline_contrast,
                "min_relative_size": model.min_relative_size, "report": self.report}


def _pairs(examples, head, weight=None, bias=None) -> list:
    """``(probabilities, labels)`` of each example: the model's own output, or with the head
    ``weight``, ``bias`` instead of its own."""
    if weight is None:
        return [(e.probabilities, e.labels) for e in examples]
    return [(head_probabilities(e.features, weight, bias, head.block)[(slice(None),) + e.crop], e.labels)
            for e in examples]


def check_teachable(model: ModelSpec) -> None:
    """Raise ValueError for a model teaching cannot refit: one that predicts flows towards cell
    centres has no class head."""
    if predicts_flows(model):
        raise ValueError(f"the {model.id!r} model predicts flows towards cell centres, and teaching refits "
                         "class probabilities: it cannot be taught")


async def teach(corrected: list, model: ModelSpec, head: onnxfile.Head, backend, *,
                budget_s: float = 45.0, iterations: int = 200, progress: Progress = None) -> Adaptation:
    """Adapt ``model`` to corrected images.

    The diameter always follows the corrected images. A refitted head (with
    thresholds chosen for it) or new thresholds alone are kept only when they
    pay on images they did not see: each corrected image is scored with what
    the others taught, against the model as it is, and the better of the two
    is kept if it gains :data:`MIN_GAIN`. With one corrected image only the
    diameter changes.

    Parameters
    ----------
    corrected : list of (name, x, labels)
        ``x`` the image as the model takes it ``(C, H, W)``, ``labels`` its corrected objects.
    head : Head
        The model's head (:func:`piximi_py.onnxfile.find_head`).
    backend : Backend
        The model with ``head.features`` as an extra output.
    budget_s : float
        Seconds the head's fits may take together at most (the features come first).
    """
    check_teachable(model)
    if not corrected:
        raise ValueError("mark at least one image as corrected before teaching")
    t0 = time.perf_counter()
    examples = []
    for i, (name, x, labels) in enumerate(corrected):
        if progress:
            progress("teach", i, len(corrected) + 2)
        examples.append(await collect_example(x, labels, model, head, backend))
    t_features = time.perf_counter()
    deadline = t_features + budget_s
    own = model.postprocess
    report = {"ap50_corrected_before": round(_mean_ap(_pairs(examples, head), own), 4)}
    weight, bias, keep_head = head.weight, head.bias, False
    post = own
    if len(examples) > 1:
        # each corrected image scored by what the others taught, against the model as it is
        as_is, thresholds, refitted = [], [], []
        for i, held in enumerate(examples):
            others = examples[:i] + examples[i + 1:]
            fold_post = choose_thresholds(_pairs(others, head), model)[0]
            fold_w, fold_b, _ = fit_head(others, head, iterations=iterations,
                                         deadline=deadline - (budget_s / 2) * (len(examples) - i - 1) / len(examples))
            fold_head_post = choose_thresholds(_pairs(others, head, fold_w, fold_b), model)[0]
            as_is.append(_mean_ap(_pairs([held], head), own))
            thresholds.append(_mean_ap(_pairs([held], head), fold_post))
            refitted.append(_mean_ap(_pairs([held], head, fold_w, fold_b), fold_head_post))
        scores = {"as_is": float(np.mean(as_is)), "thresholds": float(np.mean(thresholds)),
                  "head": float(np.mean(refitted))}
        report.update({f"ap50_held_out_{k}": round(v, 4) for k, v in scores.items()})
        if progress:
            progress("teach", len(examples) + 1, len(examples) + 2)
        best = max(("head", "thresholds"), key=scores.get)
        if scores[best] > scores["as_is"] + MIN_GAIN:
            if best == "head":
                weight, bias, fit = fit_head(examples, head, iterations=iterations, deadline=deadline)
                report.update(fit)
                keep_head = True
                post = choose_thresholds(_pairs(examples, head, weight, bias), model)[0]
            else:
                post = choose_thresholds(_pairs(examples, head), model)[0]
    final = _pairs(examples, head, weight, bias) if keep_head else _pairs(examples, head)
    report.update(head_refitted=keep_head, ap50_corrected_after=round(_mean_ap(final, post), 4),
                  seconds_features=round(t_features - t0, 2), seconds=round(time.perf_counter() - t0, 2))
    if progress:
        progress("teach", len(examples) + 2, len(examples) + 2)
    return Adaptation(np.asarray(weight, np.float32), np.asarray(bias, np.float32), post,
                      round(float(np.median([e.diameter for e in examples])), 2), [c[0] for c in corrected], report)


def adapted_model_bytes(model_bytes: bytes, head: onnxfile.Head, adaptation: Adaptation,
                        model: ModelSpec) -> bytes:
    """The ONNX file of the adapted model: ``model_bytes`` with the new head and its description."""
    out = onnxfile.replace_initializers(model_bytes, {
        head.weight_name: adaptation.weight.reshape(head.weight.shape + (1, 1)),
        head.bias_name: adaptation.bias})
    return onnxfile.with_metadata(out, {METADATA_KEY: json.dumps(adaptation.description(model))})


def spec_from_metadata(spec: ModelSpec, metadata: dict) -> ModelSpec:
    """``spec`` with the thresholds and image diameter an adapted model's metadata records
    (unchanged when it records none, or nothing readable)."""
    text = metadata.get(METADATA_KEY)
    if not text:
        return spec
    try:
        described = json.loads(text)
        post = {k: float(v) for k, v in described.get("postprocess", {}).items()
                if k in ("foreground_threshold", "seed_threshold", "min_seed_size", "min_size")}
        diameter = float(described.get("diameter") or 0.0)
        # the starting model's trimming; a file taught before it was recorded was not trimmed
        trim = float(described.get("outline_contrast") or 0.0)
        relative = float(described.get("min_relative_size") or 0.0)  # likewise
        source = str(described.get("adapted_from", ""))
        images = [str(i) for i in described.get("images", [])]
    except (ValueError, TypeError, AttributeError):
        return spec
    if not np.isfinite(diameter) or diameter < D.MIN_DIAMETER:
        diameter = 0.0
    if not 0.0 <= trim < 1.0:
        trim = 0.0
    if not 0.0 <= relative < 1.0:
        relative = 0.0
    note = (f" Adapted from {source} on {len(images)} corrected image(s) ({', '.join(images[:5])}"
            f"{', ...' if len(images) > 5 else ''}); "
            + (f"objects about {diameter:.1f} px across." if diameter else "object size estimated per image."))
    # the diameter estimate keeps the starting model's thresholds (piximi_py.inference._estimating)
    estimate = {k: spec.postprocess[k] for k in post if k in spec.postprocess}
    return dataclasses.replace(spec, postprocess={**spec.postprocess, **post}, image_diameter=diameter,
                               estimate_postprocess=estimate, outline_contrast=trim, min_relative_size=relative,
                               description=spec.description + note)


def teach_model(corrected, path, model=None, *, models_dir=None, budget_s: float = 45.0) -> Adaptation:
    """Teach a model from corrected images in CPython and write the taught ONNX file (what the
    page's "Teach" then "Download model" give).

    Parameters
    ----------
    corrected : list of (image, labels) or (name, image, labels)
        Decoded images (2-D, or RGB for colour and stain models) and their corrected labels.
    path : str or Path
        Where to write the taught model; run it with ``piximi_py.segment(..., model=path)``.
    model : str, optional
        A model id of the index (default: the default model) or an ``.onnx`` file.

    Examples
    --------
    >>> adaptation = teach_model([(image_a, labels_a), (image_b, labels_b)], "taught.onnx")  # doctest: +SKIP
    >>> labels = piximi_py.segment("next.tif", model="taught.onnx")  # doctest: +SKIP
    """
    from pathlib import Path

    from . import run_sync
    from .backends.onnxruntime import OnnxRuntimeBackend
    from .modelfile import resolve_model
    from .pipeline import prepare_input

    spec, file = resolve_model(model, models_dir)
    check_teachable(spec)
    data = Path(file).read_bytes()
    head = onnxfile.find_head(data)
    backend = OnnxRuntimeBackend(onnxfile.with_outputs(data, [head.features]))
    examples = []
    for i, item in enumerate(corrected):
        name, image, labels = item if len(item) == 3 else (f"image {i + 1}", *item)
        examples.append((str(name), prepare_input(np.asarray(image), spec), np.asarray(labels).astype(np.int32)))
    adaptation = run_sync(teach(examples, spec, head, backend, budget_s=budget_s))
    Path(path).write_bytes(adapted_model_bytes(data, head, adaptation, spec))
    return adaptation
