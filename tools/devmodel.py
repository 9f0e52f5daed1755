"""A tiny hand-made ONNX "model" for testing the web plumbing without a trained model.

It smooths the normalized image and thresholds it softly: output (N, 3, H, W) =
(background, interior, boundary) probabilities, the layout the real models use.
Written to ``.cache/dev-models/`` (never committed); used by the tests only when
``models/index.json`` does not exist yet.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


def make_dev_model(out_dir: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out_dir.mkdir(parents=True, exist_ok=True)
    k = 5
    g = np.exp(-((np.arange(k) - k // 2) ** 2) / (2 * 1.2**2))
    w = np.outer(g, g)
    w = (w / w.sum()).astype(np.float32)[None, None]
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array([0.3], np.float32), "thr"),
        numpy_helper.from_array(np.array([15.0], np.float32), "gain"),
        numpy_helper.from_array(np.array([1.0], np.float32), "one"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["s"], pads=[k // 2] * 4),
        helper.make_node("Sub", ["s", "thr"], ["d"]),
        helper.make_node("Mul", ["d", "gain"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["fg"]),
        helper.make_node("Sub", ["one", "fg"], ["bg"]),
        helper.make_node("Sub", ["fg", "fg"], ["zero"]),
        helper.make_node("Concat", ["bg", "fg", "zero"], ["prob"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "devmodel",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = out_dir / "dev-threshold.onnx"
    path.write_bytes(model.SerializeToString())
    data = path.read_bytes()
    index = {
        "models": [{
            "id": "dev-threshold", "name": "Dev threshold (test only)", "task": "nuclei",
            "file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "channels": 1, "input_multiple": 16, "tile_size": 512, "tile_overlap": 64,
            "postprocess": {"min_size": 12}, "default": True,
        }]
    }
    (out_dir / "index.json").write_text(json.dumps(index, indent=1))
    return out_dir


if __name__ == "__main__":
    print(make_dev_model(Path(__file__).resolve().parent.parent / ".cache" / "dev-models"))
