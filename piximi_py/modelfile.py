"""A segmentation model from an ONNX file of the user's (e.g. a model adapted elsewhere).

The file must look like the shipped nuclei models: one float input
``(batch, 1 or 3, height, width)`` and one output ``(batch, 3, height, width)``
of background / interior / boundary probabilities. Everything else (tiling,
normalization, thresholds, diameter) is taken from a template, the default
model of the index, except what a model taught in the page records in its
metadata (:func:`piximi_py.teach.spec_from_metadata`). Anything else is refused with a message that says what
does not fit, before an image is touched.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .models import ModelSpec, default_models_dir, find_model, load_model_index

__all__ = ["resolve_model", "spec_from_model_file", "ModelFileError", "MAX_MODEL_BYTES"]

#: Larger files are refused (the shipped models are 1-16 MB).
MAX_MODEL_BYTES = 512 * 2**20


class ModelFileError(ValueError):
    """The file is not a segmentation model this pipeline can run."""


def _dim(d):
    return d if isinstance(d, int) else None


def spec_from_model_file(path, template: ModelSpec) -> ModelSpec:
    """Check an ONNX file and describe it as a :class:`ModelSpec` like ``template``.

    Raises
    ------
    ModelFileError
        Missing, empty, too large or corrupt file; inputs or outputs that do
        not fit; a test run on a 64x64 image that fails or gives the wrong shape.
    """
    import onnxruntime as ort

    path = Path(path)
    name = path.name
    if not path.is_file():
        raise ModelFileError(f"model file '{name}' not found")
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(f"model file '{name}' is empty (0 bytes)")
    if size > MAX_MODEL_BYTES:
        raise ModelFileError(f"model file '{name}' is {size / 2**20:.0f} MiB, more than the "
                             f"{MAX_MODEL_BYTES / 2**20:.0f} MiB supported")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
        raise ModelFileError(f"'{name}' is not a readable ONNX model ({str(exc).splitlines()[0][:200]})") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) < 1:
        raise ModelFileError(f"'{name}' has {len(inputs)} inputs and {len(outputs)} outputs; a segmentation "
                             "model has one image input and a probability output")
    shape_in, shape_out = inputs[0].shape, outputs[0].shape
    channels = _dim(shape_in[1]) if len(shape_in) == 4 else None
    if len(shape_in) != 4 or channels not in (1, 3) or inputs[0].type != "tensor(float)":
        raise ModelFileError(f"'{name}' takes {inputs[0].type} {shape_in}; expected a float image "
                             "(batch, 1 or 3 channels, height, width)")
    if len(shape_out) != 4 or _dim(shape_out[1]) not in (3, None):
        raise ModelFileError(f"'{name}' gives {shape_out}; expected (batch, 3, height, width): "
                             "background, interior and boundary probabilities")
    side = max(64, template.input_multiple)
    try:
        out = session.run(None, {inputs[0].name: np.zeros((1, channels, side, side), np.float32)})[0]
    except Exception as exc:  # noqa: BLE001
        raise ModelFileError(f"'{name}' fails on a {side}x{side} test image ({str(exc).splitlines()[0][:200]})") from None
    if out.shape != (1, 3, side, side):
        raise ModelFileError(f"'{name}' turns a {side}x{side} image into {out.shape}; expected (1, 3, {side}, {side})")
    spec = dataclasses.replace(template, id=f"file:{name}", name=f"{name} (from a file)", file=str(path.resolve()),
                               sha256="", bytes=size, channels=channels, default=False,
                               description=f"loaded from {name}; tiling, normalization, thresholds and "
                                           f"diameter as {template.id}.", metrics={}, latency_ms_512=0.0)
    from .teach import spec_from_metadata  # a taught model records its thresholds and diameter

    return spec_from_metadata(spec, session.get_modelmeta().custom_metadata_map)


def resolve_model(model, models_dir=None) -> tuple[ModelSpec, Path]:
    """The spec and ONNX path of ``model``: an id of the index in ``models_dir`` (None: the
    default model), or the path of an ``.onnx`` file (:func:`spec_from_model_file`)."""
    models_dir = Path(models_dir or default_models_dir())
    specs = load_model_index(models_dir / "index.json")
    if model is not None and str(model).lower().endswith(".onnx"):
        spec = spec_from_model_file(model, find_model(specs, None))
        return spec, Path(spec.file)
    spec = find_model(specs, model)
    return spec, models_dir / spec.file
