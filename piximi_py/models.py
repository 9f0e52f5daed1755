"""The model index: what each shipped model expects and how to post-process it.

``models/index.json`` lists the models; the page and CPython read the same
file, so both run a model with the same tiling, normalization and thresholds.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["ModelSpec", "load_model_index", "default_models_dir", "find_model", "PROMPT_TASKS",
           "can_invert", "can_segment", "computes_in_float16", "reads_color", "reads_channels", "suggest_model",
           "BRIGHTFIELD_TASK"]

#: Tasks whose models need prompts (boxes, clicks) and cannot run ``segment``.
PROMPT_TASKS = ("prompt-segmentation",)


@dataclass(frozen=True)
class ModelSpec:
    id: str
    name: str
    task: str
    file: str                    #: ONNX file, relative to the index
    sha256: str = ""
    bytes: int = 0
    channels: int = 1            #: 1 = grayscale input, 3 = RGB
    input_multiple: int = 16     #: height and width must be multiples of this
    tile_size: int = 512
    tile_overlap: int = 64
    normalize: dict = field(default_factory=lambda: {"low": 1.0, "high": 99.8})
    postprocess: dict = field(default_factory=dict)
    default: bool = False
    description: str = ""
    metrics: dict = field(default_factory=dict)
    #: measured pipeline time for a 512x512 image, ``{"native": ms, "wasm": ms}`` (``python -m bench
    #: --zoo``; the page shows its own runtime's), or one number (native); 0 = unknown
    latency_ms_512: dict | float = 0.0
    #: False where onnxruntime-web's WebGPU provider computes this file wrongly (the int8 QDQ U-Nets:
    #: empty labels, `python -m bench --webgpu`); the page then runs it on WASM
    webgpu: bool = True
    #: median nucleus diameter (px) of the model's training images: images are rescaled so that
    #: their nuclei come out this size (``piximi_py.rescale``); 0 = use images as they are
    diameter: float = 0.0
    #: typical object diameter (px) of the images a taught model was adapted on
    #: (``piximi_py.teach``): replaces the estimate of an image whose objects measure about
    #: that (``piximi_py.estimate.TAUGHT_DIAMETER_RANGE``); 0 = none
    image_diameter: float = 0.0
    #: postprocess options the diameter estimate runs with instead of ``postprocess``; a taught
    #: model keeps its starting model's here (``piximi_py.teach.spec_from_metadata``); {} = none
    estimate_postprocess: dict = field(default_factory=dict)
    #: the model reads one stain of a colour image ("hematoxylin": nuclei of brightfield H&E
    #: slides, ``piximi_py.preprocess.hematoxylin_density``), not its intensity; "" = none
    stain: str = ""
    #: what each input channel of a multi-channel model is, e.g. ``["cyto", "nuclei"]``: the
    #: first is required, the others optional (zeros when absent); which image channel is which
    #: is chosen per image (:mod:`piximi_py.channels`); empty = one image plane (or RGB)
    input_roles: list = field(default_factory=list)
    #: each final object is trimmed to its pixels brighter than this fraction of its contrast over
    #: the background around it (``piximi_py.postprocess.trim_to_contrast``); 0 = not trimmed
    outline_contrast: float = 0.0
    #: final objects under this fraction of the image's median object area are dropped
    #: (``piximi_py.postprocess.remove_relatively_small``); 0 = none
    min_relative_size: float = 0.0
    #: how the model's output becomes instances: "seeds" (background / interior / boundary
    #: probabilities, :func:`piximi_py.postprocess.masks_to_labels`) or "flows" (background
    #: probability and a flow towards each object's centre, :func:`piximi_py.postprocess.flows_to_labels`)
    instances: str = "seeds"
    #: each tile's output is the mean over the tile and its flips of rows, columns and both, run as
    #: one batch of four (a flow's components turned back; :func:`piximi_py.pipeline.run_tile`):
    #: four times the model's work, for the whole-cell model's +0.06 AP@0.5 on sources never seen
    flip_average: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def predicts_flows(spec: ModelSpec) -> bool:
    """Whether ``spec``'s output is a background probability and a flow field (``instances`` "flows")."""
    return spec.instances == "flows"


def reads_color(spec: ModelSpec) -> bool:
    """Whether images are decoded in colour for ``spec`` (RGB models and stain models)."""
    return spec.channels == 3 or bool(spec.stain)


def reads_channels(spec: ModelSpec) -> bool:
    """Whether ``spec`` reads named channels of an image (a whole-cell model), not one plane."""
    return bool(spec.input_roles)


def can_invert(spec: ModelSpec) -> bool:
    """Whether ``spec`` takes ``invert`` (:func:`piximi_py.pipeline.inverted`): it reads one plane
    or a cytoplasm channel, not colour or a stain's density."""
    return reads_channels(spec) or (spec.channels == 1 and not spec.stain)


#: The task of the models for stained brightfield slides (H&E), suggested for images that look stained.
BRIGHTFIELD_TASK = "nuclei-brightfield"


def suggest_model(specs: list, image) -> tuple[ModelSpec, str]:
    """The model a decoded image calls for, and why in words: the brightfield task's default
    for an image that looks like a stained slide (:func:`piximi_py.preprocess.looks_stained`),
    else the default whole-image model of the other tasks."""
    from .preprocess import looks_stained

    stained, why = looks_stained(image)
    runnable = [s for s in specs if can_segment(s)]
    brightfield = [s for s in runnable if s.task == BRIGHTFIELD_TASK]
    if stained and brightfield:
        return next((s for s in brightfield if s.default), brightfield[0]), why
    return find_model([s for s in runnable if s.task != BRIGHTFIELD_TASK] or runnable, None), why


def can_segment(spec: ModelSpec) -> bool:
    """True for models that ``segment`` can run on a whole image without prompts."""
    return spec.task not in PROMPT_TASKS


def computes_in_float16(file_name: str) -> bool:
    """Whether a model file computes in float16: the build names those ``*_fp16.onnx``
    (``training.zoo_report.convert_fp16``, the SAM export); they are for WebGPU."""
    return str(file_name).endswith("_fp16.onnx")


def load_model_index(source) -> list[ModelSpec]:
    """Parse ``index.json`` from a path, a JSON string or an already-parsed dict."""
    if isinstance(source, dict):
        raw = source
    elif isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith("{")):
        raw = json.loads(Path(source).read_text())
    else:
        raw = json.loads(source)
    known = set(ModelSpec.__dataclass_fields__)
    return [ModelSpec(**{k: v for k, v in m.items() if k in known}) for m in raw["models"]]


def default_models_dir() -> Path:
    """The ``models/`` folder: $PIXIMI_MODELS, else the one beside the package."""
    import os

    env = os.environ.get("PIXIMI_MODELS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "models"


def find_model(specs: list[ModelSpec], model_id: str | None) -> ModelSpec:
    """The spec with ``model_id``, or the default one when ``model_id`` is None.

    Each task may mark its own default (the nuclei model, the prompt model):
    without an id, whole-image models come first, so a prompt model is the
    answer only when ``specs`` holds nothing else.
    """
    if model_id is None:
        candidates = [s for s in specs if s.task not in PROMPT_TASKS] or specs
        for spec in candidates:
            if spec.default:
                return spec
        return candidates[0]
    for spec in specs:
        if spec.id == model_id:
            return spec
    raise ValueError(f"unknown model {model_id!r}; available: {', '.join(s.id for s in specs)}")
