"""The typical object diameter of an image, measured with the model itself.

Passes segment (a central window of) the image at several scales until two agree on the objects'
size (:func:`estimate_diameter`); the pass at the scale the image is then segmented at, with its
neighbour averaged in, is reused as that segmentation (:func:`pass_to_reuse`), so that an image
already at the model's size costs little more than one given its diameter.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import diameter as D
from . import rescale
from .backends.base import Backend
from .inference import Progress, _estimating, _instances, _masks, _output_planes, predict_probabilities
from .models import ModelSpec, predicts_flows

__all__ = ["estimate_diameter", "pass_to_reuse", "keeps_taught", "TAUGHT_DIAMETER_RANGE", "ESTIMATE_WINDOW",
           "ESTIMATE_PASSES", "ESTIMATE_AGREE", "ESTIMATE_AT_SIZE", "ESTIMATE_MIN_OBJECTS", "ESTIMATE_SPARSE",
           "ESTIMATE_FRAGMENTS", "REUSE_AVERAGE_RANGE"]

#: A taught model's diameter (``ModelSpec.image_diameter``) replaces the estimate unless the image's
#: objects measure more than this factor larger or smaller (:func:`keeps_taught`).
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
    when no two agree, the finest pass that saw objects at the model's size
    (the coarsest for a whole-cell model, :func:`_unconfirmed_pass`).
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
    # Unconfirmed: a pass that saw objects at the model's size (_unconfirmed_pass), else the
    # median of every pass.
    measured = [p for p in mine if p.objects]
    if not measured:
        return None, None, False
    seen_at_size = [p for p in measured if _at_size(p, model)]
    if seen_at_size:
        best = _unconfirmed_pass(seen_at_size, model)
        return max(D.MIN_DIAMETER, best.diameter), best, False
    return max(D.MIN_DIAMETER, float(np.median([p.diameter for p in measured]))), None, False


def _unconfirmed_pass(seen_at_size: list, model: ModelSpec) -> _Pass:
    """Of passes that saw objects at the model's size but that no other pass confirmed, the one
    the estimate takes: the finest for nuclei, the coarsest for whole cells.

    For nuclei, coarser passes that also see objects of the model's size see clumps of small
    nuclei or texture at a resolution too low to part them (on H&E slides the median of such
    passes came out 1.2x to 3.7x the true diameter), while true large nuclei are confirmed at two
    coarse scales. A whole-cell (flow) model cuts large, spread cells into pieces of its own size
    at fine scales: on phase contrast of 40-75 px cells (Usiigaci) its passes found 20-25 px at
    scale 1 and about 50 px at half scale, each of the model's size, and the finest read a median
    0.60 of the true diameter where the coarsest read 0.98; given the coarsest's diameter the
    Usiigaci fold scored AP@0.5 0.169 against 0.127, DIC (BBBC030) 0.831 against 0.816, the dense
    small cells of LIVECell 0.259 against 0.264, and fluorescence (BBBC018, DeepCell) the same
    (docs/research/cells.md, *The coarsest unconfirmed pass for whole cells*)."""
    pick = min if predicts_flows(model) else max
    return pick(seen_at_size, key=lambda p: p.scale)


def keeps_taught(found: Optional[float], taught: float) -> bool:
    """Whether a taught model's diameter ``taught`` replaces the estimate ``found``: unless the
    image's objects measured more than :data:`TAUGHT_DIAMETER_RANGE` times larger or smaller."""
    return found is None or _near(found, taught, TAUGHT_DIAMETER_RANGE)


def pass_to_reuse(passes: list, scale: float, model: ModelSpec) -> tuple[Optional[_Pass], list]:
    """The estimate's whole-image pass at (nearly) ``scale``, whose work is then that scale's
    segmentation, and the passes to average into it (:func:`_passes_near`, one-plane fluorescence
    models only); ``(None, [])`` when no pass covered the whole image at that scale."""
    reuse = [p for p in passes if p.whole and _near(p.scale, scale, rescale.NO_RESCALE)]
    reuse = min(reuse, key=lambda p: abs(np.log(p.scale / scale)), default=None)
    others = _passes_near(reuse, passes) if reuse is not None and _one_fluorescence_plane(model) else []
    return reuse, others
