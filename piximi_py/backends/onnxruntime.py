"""Native onnxruntime backend (CPython)."""
from __future__ import annotations

import os

import numpy as np

from .base import Backend


class OnnxRuntimeBackend(Backend):
    """Run an ONNX model with native onnxruntime.

    Parameters
    ----------
    model : str, PathLike or bytes
        ONNX file or its bytes.
    threads : int, optional
        Intra-op threads (default: onnxruntime's choice).
    providers : list of str, optional
        Execution providers; CPU by default so results are reproducible.
    """

    def __init__(self, model, *, threads: int | None = None, providers=None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else bytes(model)
        self.session = ort.InferenceSession(source, options,
                                            providers=providers or ["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.name = "onnxruntime-" + self.session.get_providers()[0].replace("ExecutionProvider", "").lower()

    def run_sync(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})[0]

    async def run(self, batch: np.ndarray) -> np.ndarray:
        return self.run_sync(batch)

    def run_named_sync(self, inputs: dict) -> dict:
        feed = {k: np.ascontiguousarray(v) for k, v in inputs.items()}
        return dict(zip(self.output_names, self.session.run(self.output_names, feed)))

    async def run_named(self, inputs: dict) -> dict:
        return self.run_named_sync(inputs)
