"""Inference backends: one small interface, one implementation per runtime.

* :class:`~piximi_py.backends.onnxruntime.OnnxRuntimeBackend` — CPython, native onnxruntime.
* :class:`~piximi_py.backends.ortweb.OrtWebBackend` — Pyodide, onnxruntime-web via the JS FFI.
"""
from .base import Backend

__all__ = ["Backend"]
