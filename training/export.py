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
    index["models"] = [m for m in index["models"] if m["id"] != entry["id"]] + [entry]
    if entry.get("default"):
        for m in index["models"]:
            if m["id"] != entry["id"] and m.get("task") == entry.get("task"):
                m["default"] = False
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    return entry
