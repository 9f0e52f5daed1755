"""piximi-py: nuclei instance segmentation that runs in the browser and in CPython.

>>> import piximi_py
>>> labels = piximi_py.segment("nuclei.tif")          # doctest: +SKIP

The page runs the same pipeline in Pyodide with onnxruntime-web; see
:mod:`piximi_py.pipeline`.
"""
from __future__ import annotations

import os
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from .diameter import resolve_diameter
from .io import ImageReadError, read_image
from .models import ModelSpec, default_models_dir, find_model, load_model_index  # noqa: F401 - public

__version__ = "0.1.0"
__all__ = ["segment", "segment_image", "resolve_diameter", "ImageReadError", "read_image", "load_models",
           "Segmentation", "__version__"]


def __getattr__(name):
    # The pipeline (scipy.ndimage) loads on first use, so that the page can start
    # onnxruntime-web and the model before paying for it (python -m bench.startup).
    if name == "Segmentation":
        from .pipeline import Segmentation

        return Segmentation
    raise AttributeError(f"module 'piximi_py' has no attribute {name!r}")


def load_models(models_dir=None) -> list[ModelSpec]:
    """Specs of the models in ``models_dir`` (default :func:`default_models_dir`)."""
    return load_model_index(Path(models_dir or default_models_dir()) / "index.json")


def run_sync(coroutine):
    """Run a pipeline coroutine whose backend never waits on I/O, without an event loop.

    Native backends compute inside ``run`` and never suspend, so the coroutine
    finishes on its first step. Unlike ``asyncio.run`` this also works where a
    loop is already running (Jupyter, async web servers).
    """
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("the backend suspended; await piximi_py.pipeline.segment_async instead")


def _native_backend(path: str, threads):
    """The onnxruntime session of the model file at ``path``, kept for the next call while the file
    stays as it is (a model taught again into the same file is loaded again)."""
    st = os.stat(path)
    return _cached_backend(path, st.st_mtime_ns, st.st_size, threads)


@lru_cache(maxsize=8)
def _cached_backend(path: str, mtime_ns: int, size: int, threads):
    from .backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, threads=threads)


def segment_image(image, model: str | None = None, *, models_dir=None, threads: int | None = None,
                  progress=None, index: dict | None = None, diameter: float | None = None,
                  diameter_um: float | None = None, pixel_size=None,
                  channels: dict | None = None, nuclei: str | None = None,
                  augment: bool = False, split_by_nuclei: bool = True, invert: bool = False,
                  project: dict | None = None) -> Segmentation:
    """Segment one image with native onnxruntime; returns labels and timings.

    Parameters
    ----------
    image : str, Path, bytes or ndarray
        A file path, a file's bytes, or a decoded 2-D (or RGB) array.
    model : str or Path, optional
        Model id from ``models/index.json``; default: the default nuclei model.
        Or the path of an ``.onnx`` file shaped like the shipped models (one
        image input, a 3-class probability output; :mod:`piximi_py.modelfile`),
        run with the default model's settings.
    models_dir : path, optional
    threads : int, optional
        onnxruntime intra-op threads.
    progress : callable(stage, done, total), optional
    index : dict, optional
        Plane selection for multi-plane files, e.g. ``{"Z": 3, "C": 1}``.
    project : dict, optional
        Axes of a multi-plane file projected onto the plane, e.g.
        ``{"Z": "max"}`` (or ``"mean"``).
    diameter : float, optional
        Typical nucleus diameter in pixels; the image is rescaled so that
        its nuclei match the model's training size. None (default):
        estimated from the image (``result.diameter`` says what was used).
    diameter_um : float, optional
        The diameter in µm instead, with the pixel size from ``pixel_size``
        (µm per pixel) or else from the file.
    pixel_size : float or (float, float), optional
        µm per pixel, for ``diameter_um``.
    channels : dict, optional
        For a whole-cell model (``model="cells"``): the image channel of
        each input, e.g. ``{"cyto": 1, "nuclei": 0}`` (channel numbers from
        0; leave ``nuclei`` out when there is no nuclear stain; ``"auto"``
        for a role chosen as if none were given). None: chosen from the file's
        channel names, else cytoplasm green and nuclei blue in an RGB image
        (:func:`piximi_py.channels.default_channels`).
    nuclei : str, optional
        With a whole-cell model: also segment the nuclear channel with this
        nuclei model (e.g. ``"nuclei"``) and link each cell to its nucleus:
        ``result.nuclei`` (a Segmentation) and ``result.nucleus_of`` (per cell
        label, its nucleus label; 0 = none; :func:`piximi_py.measure.nucleus_columns`
        adds it to the measurements). With ``channels`` None and no nuclear
        channel in the file, a warning says so and the cells come alone.
    split_by_nuclei : bool, optional
        With ``nuclei``: grow each cell from one nucleus (default), which did
        far better on sources the cell model never saw; False keeps the cell
        model's own cells (:func:`piximi_py.pipeline.add_nuclei`).
    augment : bool, optional
        Average the model's probabilities over the image at three scales
        around the diameter's (:func:`piximi_py.pipeline.predict_masks_averaged`;
        ``result.augmented``): more accurate on images unlike the training
        images, three passes of the model.
    invert : bool, optional
        Read the image (a whole-cell model: its cytoplasm channel) with its
        intensities flipped, for dark cells on a lighter background (phase
        contrast, brightfield, DIC) from a microscope unlike the training
        ones, as Cellpose's ``invert`` (``result.inverted``;
        :func:`piximi_py.pipeline.inverted`). Wrong for fluorescence.

    Raises
    ------
    ImageReadError
        The input is not a readable image.
    ValueError
        A bad option: unknown model, a diameter that is 0, negative, NaN or
        larger than the image, ``diameter_um`` without a pixel size,
        ``channels`` that the model or the image does not have, ``augment``,
        ``invert`` or ``split_by_nuclei`` that is not a boolean, ``invert`` with a
        colour or stain model.
    """
    from .modelfile import resolve_model
    from .channels import left_to_file
    from .pipeline import check_flag, nuclei_skipped, segment_async

    check_flag(split_by_nuclei, "split_by_nuclei")
    spec, model_path = resolve_model(model, models_dir)
    filename = None
    if isinstance(image, (str, Path)):
        filename = Path(image).name
        try:
            image = Path(image).read_bytes()
        except OSError as exc:
            raise ImageReadError(f"cannot open '{filename}': {exc.strerror or exc}") from None
    diameter = resolve_diameter(diameter, diameter_um, pixel_size, image, filename)
    backend = _native_backend(str(model_path), threads)
    result = run_sync(segment_async(image, spec, backend, progress=progress,
                                    filename=filename, index=index, project=project, diameter=diameter,
                                    channels=channels, augment=augment, invert=invert))
    skipped = nuclei_skipped(result, nuclei, left_to_file(channels, "nuclei"))
    if skipped:
        warnings.warn(skipped, stacklevel=2)
        nuclei = None
    if nuclei is not None:
        from .pipeline import add_nuclei

        nuclei_spec, nuclei_path = resolve_model(nuclei, models_dir)
        result = run_sync(add_nuclei(result, nuclei_spec, _native_backend(str(nuclei_path), threads),
                                     progress=progress, split_by_nuclei=split_by_nuclei))
    return result


def segment(image, model: str | None = "nuclei", **kwargs) -> np.ndarray:
    """Instance labels (uint16, or uint32 above 65535 objects; 0 = background).

    See :func:`segment_image` for the arguments.
    """
    return segment_image(image, model, **kwargs).labels
