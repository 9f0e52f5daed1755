"""Export a trained checkpoint to ONNX, check it, and register it in models/index.json."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

OPSET = 17


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_onnx(checkpoint: Path, out: Path, *, check_size: int = 128, tolerance: float = 1e-4) -> Path:
    """Write ``out`` (ONNX, dynamic batch/height/width) and verify it against PyTorch."""
    import onnxruntime as ort
    import torch

    from .train import load_checkpoint

    model = load_checkpoint(checkpoint)
    channels = model.in_channels
    example = torch.randn(1, channels, check_size, check_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (example,), str(out), dynamo=False, opset_version=OPSET,
                      input_names=["image"], output_names=["probabilities"],
                      dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                    "probabilities": {0: "batch", 2: "height", 3: "width"}})
    expand_channel_softmax(out)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in [(1, channels, check_size, check_size), (2, channels, 96, 160)]:
        x = rng.normal(size=shape).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = session.run(None, {"image": x})[0]
        err = float(np.abs(ref - got).max())
        if err > tolerance:
            raise RuntimeError(f"ONNX output differs from PyTorch by {err:.2e} for input {shape}")
    return out


def expand_channel_softmax(path: Path) -> int:
    """Rewrite each ``Softmax`` over the channel axis of ``path`` as elementwise ops, in place.

    onnxruntime computes a Softmax over axis 1 of an NCHW tensor row by row
    after a transpose, and with three classes a row is three numbers: on a
    512x512 tile that node took 27 of the default model's 49 ms natively and
    26 ms in WebAssembly. ``exp(x - max) / sum`` with ReduceMax/ReduceSum
    over axis 1 gives the same probabilities (to float rounding) in 3 and
    9 ms. Returns the number of nodes rewritten.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    nodes, rewritten = [], 0
    for node in graph.node:
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        if node.op_type != "Softmax" or axis != 1:
            nodes.append(node)
            continue
        x, y = node.input[0], node.output[0]
        p = f"{node.name or 'softmax'}_{rewritten}/"
        if opset >= 18:
            axes = numpy_helper.from_array(np.array([1], np.int64), p + "axes")
            graph.initializer.append(axes)
            reduce_max = helper.make_node("ReduceMax", [x, axes.name], [p + "max"], keepdims=1)
        else:
            reduce_max = helper.make_node("ReduceMax", [x], [p + "max"], axes=[1], keepdims=1)
        sum_axes = numpy_helper.from_array(np.array([1], np.int64), p + "sum_axes")
        graph.initializer.append(sum_axes)
        nodes += [reduce_max,
                  helper.make_node("Sub", [x, p + "max"], [p + "shifted"]),
                  helper.make_node("Exp", [p + "shifted"], [p + "exp"]),
                  helper.make_node("ReduceSum", [p + "exp", sum_axes.name], [p + "sum"], keepdims=1),
                  helper.make_node("Div", [p + "exp", p + "sum"], [y])]
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return rewritten


def register_model(index_path: Path, entry: dict) -> dict:
    """Add or replace ``entry`` (by id) in ``index.json``; fills sha256 and bytes.

    Models made of several files (e.g. an image encoder and a prompt decoder)
    list them in ``entry["files"]`` as ``{role: {"file": name, ...}}``; each
    gets its own sha256 and bytes too.
    """
    index_path = Path(index_path)
    index = json.loads(index_path.read_text()) if index_path.exists() else {"models": []}
    model_file = index_path.parent / entry["file"]
    entry = {**entry, "sha256": sha256_file(model_file), "bytes": model_file.stat().st_size}
    if "files" in entry:
        entry["files"] = {role: {**f, "sha256": sha256_file(index_path.parent / f["file"]),
                                 "bytes": (index_path.parent / f["file"]).stat().st_size}
                          for role, f in entry["files"].items()}
    ids = [m["id"] for m in index["models"]]
    if entry["id"] in ids:  # in place: the order is the picker's, and the first default is the page's
        index["models"][ids.index(entry["id"])] = entry
    else:
        index["models"].append(entry)
    if entry.get("default"):
        for m in index["models"]:
            if m["id"] != entry["id"] and m.get("task") == entry.get("task"):
                m["default"] = False
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    return entry


def replace_card(page: Path, model_id: str, card: str) -> None:
    """Put ``card`` in place of ``model_id``'s section (``## `ID` ...`` up to the next card) of
    the Markdown page ``page`` (models/README.md), or at its end."""
    import re

    text = page.read_text() if page.exists() else "# Shipped models\n\n"
    heading = rf"^## `{re.escape(model_id)}`"
    if re.search(heading, text, re.M):
        text = re.sub(heading + r".*?(?=^## `|\Z)", lambda _: card, text, flags=re.M | re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + card
    page.write_text(text.rstrip("\n") + "\n")
