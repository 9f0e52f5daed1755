"""The one segmentation pipeline shared by the page and CPython.

file bytes -> decode -> normalize -> rescale -> tile -> infer -> stitch -> instances

Rescaling brings the image's nuclei to the size the model was trained on
(``ModelSpec.diameter``): from a diameter the caller gives, or one
:func:`estimate_diameter` measures with the model itself.

The pipeline is a coroutine because the page awaits onnxruntime-web; CPython
callers use :func:`piximi_py.segment`, which drives it with :func:`piximi_py.run_sync`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import numpy as np

from . import channels as C
from . import diameter as D
from . import io, postprocess, preprocess, rescale, tiling
from .backends.base import Backend
from .models import ModelSpec, can_invert, predicts_flows, reads_channels, reads_color

__all__ = ["Segmentation", "prepare_input", "predict_probabilities", "predict_masks", "predict_masks_averaged",
           "check_augment", "check_flag", "check_invert", "inverted", "estimate_diameter", "segment_async",
           "add_nuclei", "AUGMENT_SCALES", "run_tile", "FLIPS"]

Progress = Optional[Callable[[str, int, int], None]]


@dataclass
class Segmentation:
    labels: np.ndarray               #: (H, W) uint16 or uint32, 0 = background
    image: Optional[np.ndarray] = None  #: the decoded plane the labels belong to
    backend: str = ""
    model: str = ""
    timings: dict = field(default_factory=dict)  #: milliseconds per stage
    diameter: Optional[float] = None  #: object diameter (px) the image was segmented for
    diameter_estimated: bool = False  #: True when ``diameter`` was measured, not given
    scale: float = 1.0               #: the image was enlarged this much for the model
    channels: Optional[dict] = None  #: image channel of each input role (multi-channel models)
    nuclei: Optional["Segmentation"] = None  #: the nuclear channel's own segmentation (:func:`add_nuclei`)
    nucleus_of: Optional[np.ndarray] = None  #: per cell label, its nucleus label (0: none)
    augmented: bool = False          #: probabilities averaged over scales (:data:`AUGMENT_SCALES`)
    inverted: bool = False           #: the objects' plane read inverted (``invert``, :func:`inverted`)
    #: (foreground mask, instance options) the labels were made from: kept for a multi-channel
    #: model given a nuclear channel, so that :func:`add_nuclei` can grow the cells from the nuclei
    foreground: Optional[tuple] = field(default=None, repr=False)

    @property
    def count(self) -> int:
        return int(self.labels.max()) if self.labels.size else 0


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


#: A taught model's diameter is used for an image unless the estimate differs by more than this factor.
TAUGHT_DIAMETER_RANGE = 1.5
#: Largest side (model pixels) of the window one estimation pass segments.
ESTIMATE_WINDOW = 1024
#: Passes of :func:`estimate_diameter` at most.
ESTIMATE_PASSES = 7
#: Two passes agree when their diameters differ by less than this factor.
ESTIMATE_AGREE = 1.25
#: A pass sees nuclei at the model's size when they are within this factor of ``model.diameter``.
ESTIMATE_AT_SIZE = 1.4
#: Objects a pass must find to confirm another: the median of one or two is no measurement. At
#: coarse scales a model sees one or two clumps of small nuclei (or of cells) as objects of its
#: size, and two such passes agreed on 60-196 px for 13-20 px nuclei on H&E slides (and on
#: 260-270 px for cells of 22-45 px).
ESTIMATE_MIN_OBJECTS = 3
#: An estimate below the model's diameter whose objects would cover less than this share of the
#: image (as many discs of the median diameter as objects, :attr:`_Pass.cover`) is checked four times
#: coarser (:func:`estimate_diameter`). Where the model confirmed texture or specks of 78-150 px
#: nuclei as 8-18 px objects they covered 0.1-2 %; sparse small nuclei cover 0.5-3 % too, and
#: nuclei seen whole in crowded images 5-30 %.
ESTIMATE_SPARSE = 0.03
#: The search starts again from the coarser pass when its objects cover this many times as much.
#: On 450 real images (the held-out images rescaled to 8-150 px nuclei and 40 of each fluorescence
#: source) the estimates off by more than half fell from 9 to 5 and those within 15 % rose from
#: 92.2 to 93.1 %; 5 times fixed one fewer (docs/research/nuclei.md, *Specks in large nuclei*).
ESTIMATE_FRAGMENTS = 2.5
#: The estimate's other whole-image passes within this factor of the scale of the pass the final
#: segmentation reuses are averaged into it (:func:`_reused_masks`): the confirming pass at half
#: the scale, usually. It costs no model run, and on 20 images of each fluorescence source the folds
#: never saw it raised AP@0.5 from 0.726 to 0.745 and mAP from 0.515 to 0.529, no source losing
#: (docs/research/nuclei.md, *The estimate's neighbouring pass, averaged in*). One-plane fluorescence
#: models only (:func:`_one_fluorescence_plane`).
REUSE_AVERAGE_RANGE = 2.1


def _central_window(x: np.ndarray, side: int) -> np.ndarray:
    h, w = x.shape[-2:]
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return x[..., y0:y0 + side, x0:x0 + side]


@dataclass
class _Pass:
    """One segmentation of (a window of) the image at one scale, for :func:`estimate_diameter`."""
    scale: float
    diameter: float          #: median object diameter, in the image's own pixels
    objects: int
    whole: bool              #: the pass covered the whole image
    cover: float             #: the share of its window as many discs of the median diameter cover
    probabilities: Optional[np.ndarray] = None  #: kept for reuse when ``whole``
    labels: Optional[np.ndarray] = None         #: kept for reuse when ``whole`` and scale 1


def _near(a: float, b: float, factor: float) -> bool:
    return max(a / b, b / a) < factor


def _at_size(done: _Pass, model: ModelSpec) -> bool:
    """Whether a pass saw its objects at about the model's own size."""
    return _near(done.scale * done.diameter, model.diameter, ESTIMATE_AT_SIZE)


def _lowest_scale(x: np.ndarray, model: ModelSpec) -> float:
    """The coarsest scale :func:`estimate_diameter` looks at: nuclei as large as the image ``x``."""
    return model.diameter / max(x.shape[-2:])


def _one_fluorescence_plane(model: ModelSpec) -> bool:
    """Whether ``model`` reads one fluorescence plane: the models on which the estimate's two
    refinements were measured to help, the averaging of its passes (:func:`_passes_near`) and the
    coarser look at sparse small objects (:func:`estimate_diameter`). On the hematoxylin density of
    H&E slides the averaging lowered the folds from 0.472 to 0.462 AP@0.5 even between passes that
    agreed (``python build.py he-evaluate``), and there a coarse pass sees clumps of small nuclei as
    objects of the model's size (:data:`ESTIMATE_MIN_OBJECTS`); neither was measured on the colour
    and whole-cell models."""
    return model.channels == 1 and not model.stain


def _passes_near(reuse: _Pass, passes: list) -> list:
    """The estimate's other whole passes within :data:`REUSE_AVERAGE_RANGE` of ``reuse``'s scale that
    measured the same objects (diameters within :data:`ESTIMATE_AGREE`, each of at least
    :data:`ESTIMATE_MIN_OBJECTS`). A pass that disagreed saw something else (on stained slides,
    clumps of small nuclei at half the scale: averaged in, the H&E folds fell from 0.472 to 0.448)."""
    return [p for p in passes if p is not reuse and p.probabilities is not None
            and _near(p.scale, reuse.scale, REUSE_AVERAGE_RANGE)
            and min(p.objects, reuse.objects) >= ESTIMATE_MIN_OBJECTS
            and _near(p.diameter, reuse.diameter, ESTIMATE_AGREE)]


def _reused_masks(reuse: _Pass, others: list, model: ModelSpec, shape) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and seed masks on a ``shape`` grid from the estimate's pass ``reuse``, its
    probabilities averaged with those of the passes ``others`` (each resampled onto its grid)."""
    planes = _output_planes(model)
    prob = reuse.probabilities[:planes]
    if others:
        prob = prob + sum(rescale.resample_probabilities(p.probabilities[:planes], prob.shape[-2:]) for p in others)
        prob /= 1 + len(others)
    return _masks(prob, model, shape)


async def estimate_diameter(x: np.ndarray, model: ModelSpec, backend: Backend,
                            progress: Progress = None) -> tuple[Optional[float], list]:
    """The typical diameter (px) of the objects in ``x`` ``(C, H, W)``, measured with the model.

    A pass segments the image at a scale and measures the median
    equivalent diameter of what it found (:func:`piximi_py.diameter.median_diameter`).
    Real nuclei measure the same at any scale the model handles; what a
    model makes of objects far from its own size (pieces of huge nuclei,
    texture) does not. So the next pass rescales to bring the found
    diameter to the model's own (``model.diameter``), or, once a pass is
    at that size, checks it at half the scale; the estimate is a diameter
    that two passes at different scales, each finding at least
    :data:`ESTIMATE_MIN_OBJECTS` objects, agree on (within
    :data:`ESTIMATE_AGREE`), from the pass closest to the model's size;
    when no two agree, the finest pass that saw objects at the model's size.
    Each pass segments at most a central ``ESTIMATE_WINDOW``² window of
    model pixels; the first pass, at scale 1, is the pipeline's own work
    when no rescaling follows.

    Texture inside nuclei far larger than the model's, or their bright
    specks, is confirmed at two fine scales as readily as small nuclei are.
    What tells them apart is how much of the image the objects cover: when
    the estimate is an object smaller than the model's whose like cover
    under :data:`ESTIMATE_SPARSE` of the image, a pass four times coarser
    than any so far looks for the nuclei those may be pieces of, and when
    its objects cover :data:`ESTIMATE_FRAGMENTS` times as much, the search
    starts again from it, and what two of its passes confirm is the estimate
    (one-plane fluorescence models, :func:`_one_fluorescence_plane`). Where the
    coarse pass saw clumps of small nuclei, that search comes back to them
    or confirms nothing.

    Returns
    -------
    diameter : float or None
        None when the passes found no object, or no two agreed.
    passes : list of _Pass
    """
    passes: list[_Pass] = []
    found, chosen, _ = await _search_diameter(x, model, backend, progress, 1.0, passes)
    cover = chosen.cover if chosen else max((p.cover for p in passes), default=0.0)
    coarse = min((p.scale for p in passes), default=1.0) / 4
    if (_one_fluorescence_plane(model) and found is not None and found < model.diameter and cover < ESTIMATE_SPARSE
            and coarse >= _lowest_scale(x, model)):
        probe = await _measure_pass(x, model, backend, coarse)
        passes.append(probe)
        if probe.objects >= ESTIMATE_MIN_OBJECTS and probe.cover >= ESTIMATE_FRAGMENTS * cover:
            again, _, confirmed = await _search_diameter(x, model, backend, progress, coarse, passes, first=probe)
            found = again if confirmed else found
    if progress:
        progress("diameter", ESTIMATE_PASSES, ESTIMATE_PASSES)
    return found, passes


async def _measure_pass(x: np.ndarray, model: ModelSpec, backend: Backend, scale: float) -> _Pass:
    """One pass of :func:`estimate_diameter`: the central window of ``x`` at ``scale``, segmented and measured."""
    measuring = _estimating(model)
    window = _central_window(x, max(model.input_multiple, int(ESTIMATE_WINDOW / scale)))
    small = rescale.resize(window, rescale.rescaled_shape(window.shape, scale))
    prob = await predict_probabilities(small, model, backend)  # on the model's grid: cheaper
    del small
    labels = _instances(_masks(prob, measuring, prob.shape[-2:]), measuring, check_flows=False)
    found, count = D.median_diameter(labels)
    whole = window.shape == x.shape
    return _Pass(scale, found / scale, count, whole, count * np.pi / 4 * found ** 2 / labels.size,
                 prob if whole else None, labels if whole and scale == 1.0 and measuring is model else None)


async def _search_diameter(x: np.ndarray, model: ModelSpec, backend: Backend, progress: Progress,
                           scale: float, passes: list, first: Optional[_Pass] = None):
    """The search of :func:`estimate_diameter` from ``scale`` (``first``: its pass, made already),
    appending its passes to ``passes``; the diameter found (or None), the pass it came from (None
    for the median of several) and whether two passes confirmed it."""
    lowest = _lowest_scale(x, model)
    highest = model.diameter / D.MIN_DIAMETER     # nuclei of MIN_DIAMETER px
    mine: list[_Pass] = []
    for i in range(ESTIMATE_PASSES):
        if progress:
            progress("diameter", min(len(passes), ESTIMATE_PASSES - 1), ESTIMATE_PASSES)
        done = first if first is not None and i == 0 else await _measure_pass(x, model, backend, scale)
        if done is not first:
            passes.append(done)
        mine.append(done)
        count = done.objects
        tried = [p.scale for p in mine]
        at_size = count and _at_size(done, model)
        agreeing = [p for p in mine[:-1] if min(count, p.objects) >= ESTIMATE_MIN_OBJECTS
                    and (at_size or _at_size(p, model))
                    and not _near(p.scale, scale, ESTIMATE_AT_SIZE)
                    and _near(p.diameter, done.diameter, ESTIMATE_AGREE)]
        if agreeing:  # seen at the model's size and confirmed at another scale
            best = min(agreeing + [done], key=lambda p: abs(np.log(p.scale * p.diameter / model.diameter)))
            return best.diameter, best, True
        if not count:
            # nothing found: nuclei far larger than the model's (or none); look coarser than so far
            wanted = min(tried) / 4
        elif at_size:
            wanted = scale / 2
        else:
            wanted = min(scale * 4, max(scale / 4, model.diameter / done.diameter))
        wanted = min(highest, wanted)
        if wanted < lowest or any(_near(t, wanted, 1.15) for t in tried):
            break
        scale = wanted
    # Unconfirmed: the finest pass that saw objects at the model's size, else the median of every
    # pass. Coarser passes that also see objects at its size see clumps of small nuclei or texture
    # at a resolution too low to part them (on H&E slides the median of such passes came out 1.2x
    # to 3.7x the true diameter); true large nuclei are confirmed at two coarse scales instead.
    measured = [p for p in mine if p.objects]
    if not measured:
        return None, None, False
    seen_at_size = [p for p in measured if _at_size(p, model)]
    if seen_at_size:
        best = max(seen_at_size, key=lambda p: p.scale)
        return max(D.MIN_DIAMETER, best.diameter), best, False
    return max(D.MIN_DIAMETER, float(np.median([p.diameter for p in measured]))), None, False


async def segment_async(image_or_bytes, model: ModelSpec, backend: Backend, *,
                        progress: Progress = None, filename: str | None = None,
                        index: dict | None = None, diameter: float | None = None,
                        channels: dict | None = None, augment: bool = False,
                        invert: bool = False) -> Segmentation:
    """Segment one image (file bytes or a decoded array) into instance labels.

    Parameters
    ----------
    image_or_bytes : bytes or ndarray
        An image file's bytes (decoded with :mod:`piximi_py.io`) or a 2-D
        (or H x W x 3) array.
    model : ModelSpec
    backend : Backend
        Runs the model; see :mod:`piximi_py.backends`.
    progress : callable(stage, done, total), optional
    filename : str, optional
        Shown in error messages.
    index : dict, optional
        Plane selection for multi-plane files (see :func:`piximi_py.io.read_image`).
    diameter : float, optional
        Typical nucleus diameter in pixels. The image is rescaled so that
        it matches the model's (``model.diameter``). None: estimated
        (:func:`estimate_diameter`); a taught model's diameter
        (``model.image_diameter``) replaces the estimate unless the image's
        objects measure more than :data:`TAUGHT_DIAMETER_RANGE` times
        larger or smaller. Models without a diameter ignore it.
    channels : dict, optional
        For a multi-channel model (``model.input_roles``, e.g. whole
        cells): the image channel of each role, ``{"cyto": 1, "nuclei": 0}``;
        an optional role left out reads zeros. None: chosen from the file's
        channel names, else by :func:`piximi_py.channels.default_channels`.
        Other models ignore it.
    augment : bool, optional
        Average the model's probabilities over the image at three scales
        around the one the diameter asks for (:func:`predict_masks_averaged`):
        more accurate on images unlike the training images, three passes
        of the model. The diameter estimate is not averaged.
    invert : bool, optional
        Read the plane the objects are seen in (a whole-cell model's cytoplasm
        channel) with its intensities flipped (:func:`inverted`): for dark
        cells on a lighter background (phase contrast, brightfield, DIC)
        from a microscope unlike the training ones.

    Raises
    ------
    piximi_py.io.ImageReadError
        When the input cannot be read as an image.
    ValueError
        When ``diameter`` is not a usable size (0, negative, NaN, larger than the image),
        or ``channels`` does not fit the model or the image.
    """
    timings = {}
    t0 = t = time.perf_counter()

    def lap(stage):
        nonlocal t
        now = time.perf_counter()
        timings[stage] = (now - t) * 1000.0
        t = now

    D.check_diameter(diameter)
    augment = check_augment(augment)
    invert = check_invert(invert, model)
    multi = reads_channels(model)
    if multi and channels is not None:
        C.check_channels(channels, model.input_roles, 1 << 30)  # roles and numbers, before decoding
    names = None  # the file's channel names, for the default channels
    if isinstance(image_or_bytes, (bytes, bytearray, memoryview)):
        image = io.read_image_bytes(image_or_bytes, filename, color=reads_color(model), index=index,
                                    keep_channels=multi)
        if multi and channels is None:
            names = io.describe_image(image_or_bytes, filename).get("channel_names")
    else:
        image = io.validate_image(np.asarray(image_or_bytes))
    diameter = D.check_diameter(diameter, image.shape)
    if multi:
        channels = C.resolve_channels(image, model.input_roles, channels, names)
    lap("decode")
    try:
        x = prepare_input(image, model, channels, invert)
    except ValueError as exc:
        raise io.ImageReadError(str(exc)) from None
    lap("preprocess")
    estimated, passes = False, []
    if model.diameter and diameter is None:
        diameter, passes = await estimate_diameter(x, model, backend, progress)
        estimated = diameter is not None
        taught = model.image_diameter
        if taught and (diameter is None or _near(diameter, taught, TAUGHT_DIAMETER_RANGE)):
            diameter, estimated = D.check_diameter(taught, image.shape), False
        lap("diameter")
    scale = rescale.scale_factor(diameter, model.diameter) if diameter else 1.0
    if estimated:  # a given diameter too large to hold is refused; an estimate is only capped
        scale = min(scale, rescale.largest_factor(x.shape))
    # a pass of the estimate over the whole image at (nearly) this scale is this scale's work
    reuse = [p for p in passes if p.whole and _near(p.scale, scale, rescale.NO_RESCALE)]
    reuse = min(reuse, key=lambda p: abs(np.log(p.scale / scale)), default=None)
    if augment:  # the averaged passes are all this image's own
        reuse = None
    others = _passes_near(reuse, passes) if reuse is not None and _one_fluorescence_plane(model) else []
    keep_foreground = multi and (channels or {}).get("nuclei") is not None  # for add_nuclei
    if reuse is not None and not others and reuse.scale == 1.0 and reuse.labels is not None:
        scale, labels = 1.0, _flow_checked(reuse.labels, reuse.probabilities, model)
        if keep_foreground:
            masks = _reused_masks(reuse, [], model, x.shape[-2:])
        del x
        lap("inference")
    else:
        if reuse is not None:
            scale = reuse.scale
            masks = _reused_masks(reuse, others, model, x.shape[-2:])
        else:
            rescale.check_rescaled_size(x.shape, scale)
            predict = predict_masks_averaged if augment else predict_masks
            masks = await predict(x, model, backend, progress, scale=scale)
        del x, passes, reuse, others
        lap("inference")
        if progress:
            progress("postprocess", 0, 1)
        labels = _instances(masks, model, scale)
    if model.outline_contrast:
        labels = _trimmed(labels, inverted(_grey(image)) if invert else image, model)
    labels = postprocess.remove_relatively_small(labels, model.min_relative_size)
    lap("postprocess")
    timings["total"] = (time.perf_counter() - t0) * 1000.0
    return Segmentation(labels=labels, image=image, backend=backend.name, model=model.id,
                        timings=timings, diameter=diameter, diameter_estimated=estimated, scale=scale,
                        channels=channels, augmented=augment, inverted=invert,
                        foreground=(masks[0], _instance_options(model, scale)) if keep_foreground else None)


#: Why the nuclei of a whole-cell run were not linked, where the nuclear channel was left to the
#: file (no channels given, or "auto") and it has none: the cells are returned alone.
NO_NUCLEAR_CHANNEL = "no nuclear channel in this image: the cells are the cell model's alone"


async def add_nuclei(cells: Segmentation, model: ModelSpec, backend: Backend, *,
                     progress: Progress = None, diameter: float | None = None,
                     split_by_nuclei: bool = True) -> Segmentation:
    """Segment the nuclear channel of a whole-cell result with a nuclei model, and link
    each cell to its nucleus (:func:`piximi_py.measure.link_nuclei`).

    With ``split_by_nuclei`` the cells are first made again from the cell model's foreground,
    each growing from one nucleus (:func:`piximi_py.postprocess.separated_seeds`) instead of from
    the cell model's own seeds; a cell region without a nucleus stays one cell. On sources the
    cell model never saw this tripled AP@0.5 (a fold on BBBC018 0.104 -> 0.375; DeepCell 0.118 ->
    0.336), and on held-out images of a source it trained on it doubled it (BBBC018 0.246 ->
    0.523; docs/research/cells.md, *Whole cells, accuracy*). A cell with several nuclei is split among them.

    Parameters
    ----------
    cells : Segmentation
        A result of a multi-channel model, with its image and ``channels``.
    model : ModelSpec
        A nuclei model (one grey plane).
    backend : Backend
        Runs ``model``.
    diameter : float, optional
        Nucleus diameter (px); None: estimated on the nuclear channel.
        The nuclei are averaged over scales when the cells were (``cells.augmented``).
    split_by_nuclei : bool, optional
        Grow each cell from one nucleus (default); False keeps the cell model's own cells.

    Returns
    -------
    Segmentation
        ``cells`` with ``nuclei`` (the nuclear channel's segmentation) and
        ``nucleus_of`` set.

    Raises
    ------
    ValueError
        When the result has no nuclear channel.
    """
    from .measure import link_nuclei

    split_by_nuclei = check_flag(split_by_nuclei, "split_by_nuclei")
    channel = (cells.channels or {}).get("nuclei")
    if channel is None or cells.image is None:
        raise ValueError("no nuclear channel was given for this image, so there are no nuclei to link: "
                         "choose its nuclei channel")
    t0 = time.perf_counter()
    plane = cells.image if cells.image.ndim == 2 else cells.image[..., channel]
    cells.nuclei = await segment_async(plane, model, backend, progress=progress, diameter=diameter,
                                       augment=cells.augmented)
    if split_by_nuclei and cells.foreground is not None:
        foreground, options = cells.foreground
        # every nucleus the nuclei model kept seeds a cell, however small its core (the cell model's
        # smallest seed is for pieces of its own cells' interiors)
        cells.labels = postprocess.masks_to_labels(foreground, postprocess.separated_seeds(cells.nuclei.labels),
                                                   min_seed_size=1, min_size=options.get("min_size", 12))
    cells.nucleus_of = link_nuclei(cells.labels, cells.nuclei.labels)[0]
    # the nuclei and their links are part of this result's time
    cells.timings["nuclei"] = (time.perf_counter() - t0) * 1000.0
    cells.timings["total"] += cells.timings["nuclei"]
    return cells
