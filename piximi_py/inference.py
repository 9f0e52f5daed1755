"""From a decoded image to the model's probabilities and instance masks: the steps every
segmentation runs, at one scale or averaged over several.

normalize -> rescale -> tile -> infer (each tile, its flips averaged where the model asks) ->
stitch -> threshold -> instances

:mod:`piximi_py.estimate` runs these steps at several scales to measure the objects' diameter;
:mod:`piximi_py.pipeline` chains them into one segmentation.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

import numpy as np

from . import channels as C
from . import postprocess, preprocess, rescale, tiling
from .backends.base import Backend
from .models import ModelSpec, can_invert, predicts_flows, reads_channels

__all__ = ["prepare_input", "predict_probabilities", "predict_masks", "predict_masks_averaged", "check_augment",
           "check_flag", "check_invert", "inverted", "run_tile", "AUGMENT_SCALES", "FLIPS", "INVERTED_ROLE"]

#: ``progress(stage, done, total)``, called as a step advances.
Progress = Optional[Callable[[str, int, int], None]]


def _grey(image: np.ndarray) -> np.ndarray:
    """The plane a one-plane model reads: the image, or the mean of an RGB image's colours."""
    return image if image.ndim == 2 else image[..., :3].astype(np.float32).mean(axis=-1)


def prepare_input(image: np.ndarray, model: ModelSpec, channels: dict | None = None,
                  invert: bool = False) -> np.ndarray:
    """Normalize a decoded plane into the model's ``(C, H, W)`` float32 input (a stain model
    reads that stain's density of a colour image, ``ModelSpec.stain``; a multi-channel model
    the image channels ``channels`` names for its roles, :mod:`piximi_py.channels`). With
    ``invert``, the plane the objects are seen in (a one-plane model's, a whole-cell model's
    cytoplasm) is read with its intensities flipped (:func:`inverted`)."""
    check_invert(invert, model)
    if reads_channels(model):
        roles = model.input_roles
        chosen = C.resolve_channels(image, roles, channels)
        if invert:
            image = inverted(image, None if image.ndim == 2 else chosen[INVERTED_ROLE])
        return C.stack_channels(image, chosen, roles, **model.normalize)
    if model.stain and image.ndim == 3:
        if model.stain != "hematoxylin":
            raise ValueError(f"unknown stain {model.stain!r} in the model's description")
        image = preprocess.hematoxylin_density(image)
    if model.channels == 1:
        grey = _grey(image)
        x = preprocess.normalize_percentile(inverted(grey) if invert else grey, **model.normalize)[None]
    else:
        if image.ndim == 2:
            image = np.repeat(image[..., None], model.channels, axis=-1)
        x = np.moveaxis(preprocess.normalize_percentile(image, **model.normalize), -1, 0)
    return np.ascontiguousarray(x, dtype=np.float32)


#: The input role a whole-cell model reads inverted with ``invert``: its nuclear channel stays as it is.
INVERTED_ROLE = "cyto"


def inverted(image: np.ndarray, channel: int | None = None) -> np.ndarray:
    """``image`` (its ``channel``, for an ``(H, W, C)`` image) with its intensities flipped, as
    float32: its maximum minus each value (NaN the darkest, infinities the extremes, as
    :func:`piximi_py.preprocess.to_float` reads them), so that dark objects on a lighter background
    (phase contrast, brightfield, DIC) are read as a fluorescence model's bright ones.

    On the whole-cell folds trained on transmitted light as it is (docs/research/cells.md, *Dark cells read
    inverted*) this lifted transmitted light no model had seen (DeepCell's phase contrast 0.356 ->
    0.512 AP@0.5, BBBC030's DIC 0.736 -> 0.876) and ruined fluorescence (0.591 -> 0.320): an option
    the user sets, as Cellpose's ``invert``. The ``cells`` model now learns its transmitted light
    both ways and reads it about alike either way.
    """
    out = np.array(image, dtype=np.float32)
    plane = out if channel is None else out[..., channel]
    flipped = preprocess.to_float(-plane)  # NaN become the darkest value, as they do unflipped
    plane[...] = flipped - flipped.min()
    return out


def check_invert(invert, model: ModelSpec) -> bool:
    """``invert`` as a bool (:func:`check_flag`), refused by a model that cannot take it
    (:func:`can_invert`)."""
    invert = check_flag(invert, "invert")
    if invert and not can_invert(model):
        raise ValueError(f"invert: model {model.id!r} reads colour (or a stain's density); invert applies "
                         "to one-plane and whole-cell models")
    return invert


#: The flips :func:`run_tile` averages over (axes of a ``(C, H, W)`` tile): none, rows, columns, both.
FLIPS = ((), (-2,), (-1,), (-2, -1))


async def run_tile(tile: np.ndarray, model: ModelSpec, backend: Backend) -> np.ndarray:
    """The model's output ``(K, h, w)`` for one ``(C, h, w)`` tile.

    With ``model.flip_average``, the mean of the outputs for the tile and its flips
    (:data:`FLIPS`), each flipped back, run as one batch; a flow model's row and column
    components of a flipped tile point the other way, and are negated back. The mean is
    then the same for a flipped tile, flipped (up to rounding): no direction is favoured.
    """
    if not model.flip_average:
        return (await backend.run(np.ascontiguousarray(tile)[None]))[0]
    out = await backend.run(np.ascontiguousarray(np.stack([np.flip(tile, axes) for axes in FLIPS])))
    total = np.zeros(out.shape[1:], np.float32)
    for y, axes in zip(out, FLIPS):
        y = np.flip(y, axes)
        if predicts_flows(model):
            sign = np.ones((y.shape[0], 1, 1), np.float32)
            sign[1] = -1.0 if -2 in axes else 1.0  # flow_y
            sign[2] = -1.0 if -1 in axes else 1.0  # flow_x
            y = y * sign
        total += y
    return total / len(FLIPS)


async def predict_probabilities(x: np.ndarray, model: ModelSpec, backend: Backend,
                                progress: Progress = None) -> np.ndarray:
    """Tile, run and stitch: ``(C, H, W)`` input to ``(K, H, W)`` probabilities."""
    h, w = x.shape[-2:]
    padded, crop = preprocess.pad_to_multiple(x, model.input_multiple)
    tile = max(model.input_multiple, model.tile_size - model.tile_size % model.input_multiple)
    plan = tiling.plan_tiles(padded.shape[-2:], tile, model.tile_overlap)
    out = None
    for i, t in enumerate(plan):
        if progress:
            progress("inference", i, len(plan))
        y = await run_tile(padded[(slice(None),) + t.read], model, backend)
        if out is None:
            out = np.empty((y.shape[0],) + padded.shape[-2:], np.float32)
        out[(slice(None),) + t.core] = y[(slice(None),) + t.inner]
    if progress:
        progress("inference", len(plan), len(plan))
    return out[(slice(None),) + crop]


def _trimmed(labels: np.ndarray, image: np.ndarray, model: ModelSpec) -> np.ndarray:
    """``labels`` trimmed to ``model.outline_contrast`` of each object's contrast in
    the image (:func:`postprocess.trim_to_contrast`), for one-plane fluorescence models. On the
    folds' left-out sources 0.2 raised the mean from 0.749 / 0.536 to 0.752 / 0.545, mAP gaining on
    seven of eight sources, the most where the model's outlines were wider than the annotators'
    (BitDepth 0.214 -> 0.234, Aits 0.490 -> 0.513); 0.3 gave 0.754 / 0.548 but cost Kromp and
    Koyuncu mAP 0.008-0.014 (docs/research/nuclei.md, *What the folds get wrong*)."""
    return postprocess.trim_to_contrast(labels, _grey(image), model.outline_contrast,
                                        min_size=_instance_options(model).get("min_size", 12))


def _thresholds(model: ModelSpec) -> tuple[float, float]:
    post = model.postprocess
    return post.get("foreground_threshold", 0.5), post.get("seed_threshold", 0.5)


def _estimating(model: ModelSpec) -> ModelSpec:
    """``model`` as the diameter estimate runs it: with ``model.estimate_postprocess``. A taught
    model's thresholds were chosen at the taught diameter; at the estimate's other scales they
    found texture in large nuclei (a 200 px nucleus measured 5.5 px, README, Teach)."""
    if all(model.postprocess.get(k) == v for k, v in model.estimate_postprocess.items()):
        return model
    return replace(model, postprocess={**model.postprocess, **model.estimate_postprocess})


def _instance_options(model: ModelSpec, scale: float = 1.0) -> dict:
    """The model's size limits of seeds and objects (and a flow model's walk, in steps of one
    pixel), in pixels of a grid ``scale`` times finer; a flow model's largest flow error as it is."""
    areas = ("min_cluster", "min_size") if predicts_flows(model) else ("min_seed_size", "min_size")
    post = {k: v for k, v in model.postprocess.items() if k in areas}
    options = {k: max(1, int(round(v * rescale.area_scale(scale)))) for k, v in post.items()}
    if predicts_flows(model) and "steps" in model.postprocess:
        options["steps"] = max(1, int(round(model.postprocess["steps"] * rescale.area_scale(scale) ** 0.5)))
    if predicts_flows(model) and model.postprocess.get("max_flow_error") is not None:  # unit vectors: any grid
        options["max_flow_error"] = float(model.postprocess["max_flow_error"])
    return options


def _output_planes(model: ModelSpec) -> int:
    """How many of the model's output planes its instances are made from: background and interior,
    or background and the flow's two."""
    return 3 if predicts_flows(model) else 2


def _masks(prob: np.ndarray, model: ModelSpec, shape) -> tuple[np.ndarray, np.ndarray]:
    """What :func:`_instances` makes the instances from, on a ``shape`` grid, from a model output
    ``prob`` on its own grid: the foreground and seed masks, or a flow model's foreground and flow."""
    if predicts_flows(model):
        planes = rescale.resample_probabilities(prob[:3], shape)
        return (1.0 - planes[0]) > _thresholds(model)[0], planes[1:]
    return rescale.resample_masks(prob, shape, *_thresholds(model))


def _instances(masks: tuple, model: ModelSpec, scale: float = 1.0, check_flows: bool = True) -> np.ndarray:
    """Instance labels from :func:`_masks` on a grid ``scale`` times finer than the model's; without
    ``check_flows``, a flow model keeps every object whatever its flow error (:func:`_flow_checked`)."""
    make = postprocess.flows_to_labels if predicts_flows(model) else postprocess.masks_to_labels
    options = _instance_options(model, scale)
    if not check_flows:
        options.pop("max_flow_error", None)
    return make(*masks, **options)


def _flow_checked(labels: np.ndarray, prob: np.ndarray, model: ModelSpec) -> np.ndarray:
    """``labels`` made without the flow error check (:func:`_instances`) from a flow model's output
    ``prob`` on their grid, checked now. The diameter estimate measures every object found: on the
    whole-cell folds' left-out sources the check in its passes too moved the estimate and cost the
    DIC fold (docs/research/cells.md, *Whole cells: the flow error check*)."""
    max_error = _instance_options(model).get("max_flow_error")
    return labels if max_error is None else postprocess.drop_inconsistent_flows(labels, prob[1:3], max_error)


async def predict_masks(x: np.ndarray, model: ModelSpec, backend: Backend,
                        progress: Progress = None, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and seed masks (:func:`piximi_py.postprocess.threshold_probabilities`)
    of ``x`` ``(C, H, W)``, on its own grid; for a flow model its foreground and flow
    (:func:`_masks`).

    With ``scale`` 1, each tile is thresholded before stitching: two bool
    planes instead of three float32 ones (1/6 of the memory; on an 8192²
    image 134 MB instead of 805 MB), and the same masks. Otherwise the
    image is resized by ``scale`` (:func:`piximi_py.rescale.resize`), the
    model runs on that, and its probabilities are resampled back onto
    ``x``'s grid before thresholding (:func:`piximi_py.rescale.resample_masks`).
    """
    thresholds = _thresholds(model)
    if scale != 1.0 or predicts_flows(model):  # a flow is stitched as it is: float planes
        small = rescale.resize(x, rescale.rescaled_shape(x.shape, scale)) if scale != 1.0 else x
        prob = await predict_probabilities(small, model, backend, progress)
        del small
        return _masks(prob, model, x.shape[-2:])
    padded, crop = preprocess.pad_to_multiple(x, model.input_multiple)
    tile = max(model.input_multiple, model.tile_size - model.tile_size % model.input_multiple)
    plan = tiling.plan_tiles(padded.shape[-2:], tile, model.tile_overlap)
    fg = np.zeros(padded.shape[-2:], bool)
    seed = np.zeros(padded.shape[-2:], bool)
    for i, t in enumerate(plan):
        if progress:
            progress("inference", i, len(plan))
        y = await run_tile(padded[(slice(None),) + t.read], model, backend)
        f, s = postprocess.threshold_probabilities(y[(slice(None),) + t.inner], *thresholds)
        fg[t.core], seed[t.core] = f, s
    if progress:
        progress("inference", len(plan), len(plan))
    return fg[crop], seed[crop]


#: Scales, relative to the one the diameter asks for, whose probabilities ``augment`` averages. On
#: the fluorescence sources the folds never saw (20 images each, diameter estimated) it raised AP@0.5
#: from 0.717 to 0.747 and mAP from 0.506 to 0.533, every source gaining; 1.35 apart 0.750 / 0.533;
#: averaging over flips instead 0.728 / 0.517, and flips on top of these scales 0.746 / 0.537 at
#: four times the time (README, *Averaging over scales*).
AUGMENT_SCALES = (1 / 1.2, 1.0, 1.2)


def check_flag(value, name: str) -> bool:
    """The option ``name`` as a bool.

    Raises
    ------
    ValueError
        When it is not a boolean (a page option given as the string "false" would otherwise
        be true).
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false, not {value!r}")
    return bool(value)


def check_augment(augment) -> bool:
    """``augment`` as a bool (:func:`check_flag`)."""
    return check_flag(augment, "augment")


def _part(progress: Progress, i: int, n: int) -> Progress:
    """``progress`` of the ``i``-th of ``n`` equal parts of a stage, as a fraction of the whole."""
    if progress is None:
        return None
    return lambda stage, done, total: progress(stage, i * 1000 + round(1000 * done / max(total, 1)), n * 1000)


async def predict_masks_averaged(x: np.ndarray, model: ModelSpec, backend: Backend, progress: Progress = None,
                                 scale: float = 1.0, factors=AUGMENT_SCALES) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and seed masks of ``x`` ``(C, H, W)``, as :func:`predict_masks`, from the
    model's probabilities averaged over the image resized by ``scale`` times each of ``factors``.

    Each pass's probabilities are resampled onto the grid of ``scale`` and added there (two
    float32 planes of that grid), then thresholded on ``x``'s grid
    (:func:`piximi_py.rescale.resample_masks`). A pass never enlarges the image past
    :data:`piximi_py.rescale.MAX_RESCALED_SIDE`.
    """
    grid = rescale.rescaled_shape(x.shape, scale) if scale != 1.0 else x.shape[-2:]
    scales = [min(scale * f, rescale.largest_factor(x.shape)) if f > 1 else scale * f for f in factors]
    planes = _output_planes(model)
    total = np.zeros((planes,) + tuple(grid), np.float32)
    for i, s in enumerate(scales):
        resized = x if s == 1.0 else rescale.resize(x, rescale.rescaled_shape(x.shape, s))
        prob = await predict_probabilities(resized, model, backend, _part(progress, i, len(scales)))
        del resized
        total += rescale.resample_probabilities(prob[:planes], grid)
        del prob
    total /= len(scales)
    return _masks(total, model, x.shape[-2:])

