"""The one segmentation pipeline shared by the page and CPython.

file bytes -> decode -> normalize -> rescale -> tile -> infer -> stitch -> instances

Rescaling brings the image's nuclei to the size the model was trained on
(``ModelSpec.diameter``): from a diameter the caller gives, or one
:func:`estimate_diameter` measures with the model itself.

The steps are in :mod:`piximi_py.inference` and the estimate in
:mod:`piximi_py.estimate`. The pipeline is a coroutine because the page awaits onnxruntime-web; CPython
callers use :func:`piximi_py.segment`, which drives it with :func:`piximi_py.run_sync`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import channels as C
from . import diameter as D
from . import io, postprocess, rescale
from .backends.base import Backend
from .estimate import _reused_masks, estimate_diameter, keeps_taught, pass_to_reuse
from .inference import (AUGMENT_SCALES, FLIPS, Progress, _flow_checked, _grey, _instance_options, _instances,
                        _trimmed, check_augment, check_flag, check_invert, inverted, predict_masks,
                        predict_masks_averaged, predict_probabilities, prepare_input, run_tile)
from .models import ModelSpec, reads_channels, reads_color

__all__ = ["Segmentation", "prepare_input", "predict_probabilities", "predict_masks", "predict_masks_averaged",
           "check_augment", "check_flag", "check_invert", "inverted", "estimate_diameter", "segment_async",
           "add_nuclei", "AUGMENT_SCALES", "run_tile", "FLIPS"]


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


def read_for_model(data: bytes, model: ModelSpec, *, filename: str | None = None, index: dict | None = None,
                   project: dict | None = None, channels: dict | None = None,
                   info: dict | None = None) -> tuple[np.ndarray, dict | None]:
    """An image file's plane as ``model`` reads it, and the channel of each of its roles.

    One reading for the API, the page and batch runs: grey, colour or every channel
    (:func:`piximi_py.models.reads_color`, :func:`~piximi_py.models.reads_channels`), the plane
    chosen by ``index`` and ``project`` (:func:`piximi_py.io.read_image_bytes`; a multi-channel
    model's roles choose its channels, so a ``C`` index does not apply), and for a multi-channel
    model ``channels`` resolved (:func:`piximi_py.channels.resolve_channels`: None or "auto"
    roles from the file's channel names in ``info``, :func:`piximi_py.io.describe_image`, read
    when not given).

    Returns
    -------
    image : ndarray
        ``(H, W)``, ``(H, W, 3)`` or ``(H, W, C)``.
    channels : dict or None
        Role -> channel (None for a one-plane model).
    """
    multi = reads_channels(model)
    index = {k: v for k, v in (index or {}).items() if not (multi and k == "C")}
    image = io.read_image_bytes(data, filename, color=reads_color(model), index=index, project=project,
                                keep_channels=multi)
    if not multi:
        return image, None
    names = None
    if any(C.left_to_file(channels, r) for r in model.input_roles):
        names = (info if info is not None else io.describe_image(data, filename)).get("channel_names")
    return image, C.resolve_channels(image, model.input_roles, channels, names)


async def segment_async(image_or_bytes, model: ModelSpec, backend: Backend, *,
                        progress: Progress = None, filename: str | None = None,
                        index: dict | None = None, diameter: float | None = None,
                        channels: dict | None = None, augment: bool = False,
                        invert: bool = False, project: dict | None = None) -> Segmentation:
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
    project : dict, optional
        Axes of a multi-plane file projected onto the plane, ``{"Z": "max"}``
        or ``"mean"`` (:func:`piximi_py.io.read_image`).
    diameter : float, optional
        Typical nucleus diameter in pixels. The image is rescaled so that
        it matches the model's (``model.diameter``). None: estimated
        (:func:`estimate_diameter`); a taught model's diameter
        (``model.image_diameter``) replaces the estimate unless the image's
        objects measure more than :data:`piximi_py.estimate.TAUGHT_DIAMETER_RANGE` times
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
    if multi and channels is not None:  # roles and numbers, before decoding
        C.check_channels(channels, model.input_roles, 1 << 30, auto=True)
    if isinstance(image_or_bytes, (bytes, bytearray, memoryview)):
        image, channels = read_for_model(bytes(image_or_bytes), model, filename=filename, index=index,
                                         project=project, channels=channels)
    else:
        image = io.validate_image(np.asarray(image_or_bytes))
        if multi:
            channels = C.resolve_channels(image, model.input_roles, channels)
    diameter = D.check_diameter(diameter, image.shape)
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
        # a taught size larger than this image is not the user's to be told about: the estimate stays
        if taught and keeps_taught(diameter, taught) and taught <= max(image.shape[:2]):
            diameter, estimated = float(taught), False
        lap("diameter")
    scale = rescale.scale_factor(diameter, model.diameter) if diameter else 1.0
    if estimated:  # a given diameter too large to hold is refused; an estimate is only capped
        scale = min(scale, rescale.largest_factor(x.shape))
    # a pass of the estimate over the whole image at (nearly) this scale is this scale's work;
    # averaged over scales, the passes are all this image's own
    reuse, others = (None, []) if augment else pass_to_reuse(passes, scale, model)
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


def nuclei_skipped(cells: Segmentation, nuclei: str | None, nuclear_channel_auto: bool) -> str | None:
    """Why a whole-cell run's nuclei are not linked (:data:`NO_NUCLEAR_CHANNEL`), or None.

    They are skipped when a nuclei model was asked for (``nuclei``), the nuclear channel was
    left to the file (``nuclear_channel_auto``: no channels given, or "auto") and the file has
    none: the cells come alone, in the API, the page and batch runs alike. A nuclear channel
    the user left out while asking for nuclei stays an error (:func:`add_nuclei`'s)."""
    if nuclei and nuclear_channel_auto and (cells.channels or {}).get("nuclei") is None:
        return NO_NUCLEAR_CHANNEL
    return None


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
