from __future__ import annotations

import abc

import numpy as np


class Backend(abc.ABC):
    """Runs one model on a batch of images.

    ``run`` is a coroutine so the page can await onnxruntime-web's promises;
    CPython backends simply compute and return. Models with several inputs
    or outputs (SAM's prompt decoder) go through ``run_named``.
    """

    #: What actually executed the model: "onnxruntime-cpu", "wasm", "webgpu"...
    name: str = "unknown"

    @abc.abstractmethod
    async def run(self, batch: np.ndarray) -> np.ndarray:
        """Map float32 ``(N, C, H, W)`` inputs to float32 ``(N, K, H, W)`` probabilities."""

    async def run_named(self, inputs: dict) -> dict:
        """Run a model with several inputs: ``{input name: ndarray}`` -> ``{output name: ndarray}``.

        Arrays keep their dtype (float32 for every shipped model).
        """
        raise NotImplementedError(f"{type(self).__name__} runs single-input models only")
