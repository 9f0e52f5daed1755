"""bioimage.io model descriptions (``rdf.yaml``, spec 0.5) for the shipped models.

Each shipped model gets ``models/ID.rdf.yaml`` plus a small test input and
its expected output (``ID.test_input.npy``, ``ID.test_output.npy``), so tools
that read bioimage.io descriptions (deepImageJ, bioimageio.core) can load the
ONNX weights with the right preprocessing. To upload one, put the rdf.yaml
(renamed ``rdf.yaml``), the ONNX file, the two .npy files and ``README.md``
in one folder or zip.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .export import OPSET, sha256_file

CLASSES = ["background", "interior", "boundary"]
#: The output planes of a flow model (``instances`` "flows").
FLOWS = ["background", "flow_y", "flow_x"]


def _output_description(entry: dict) -> str:
    post = entry["postprocess"]
    if entry.get("instances") == "flows":
        return ("per-pixel probability of background, then the unit vector (dy, dx) towards the centre of "
                f"the cell the pixel belongs to; instances: the pixels where 1 - background > "
                f"{post['foreground_threshold']} follow the flow {post.get('steps', 40)} steps and group where "
                "they end, as Cellpose's do (piximi_py.postprocess.flows_to_labels)"
                + (f"; a cell whose flow differs from unit vectors towards its centroid by a mean squared error over "
                   f"{post['max_flow_error']} is dropped" if post.get("max_flow_error") is not None else ""))
    return ("per-pixel class probabilities; instances: seeds = interior > "
            f"{post['seed_threshold']}, grown within 1 - background > "
            f"{post['foreground_threshold']} (piximi_py.postprocess)")


def _space(axis_id: str, multiple: int) -> dict:
    return {"type": "space", "id": axis_id, "size": {"min": multiple, "step": multiple}}


def test_tensors(models_dir: Path, entry: dict, size: int = 64) -> tuple[Path, Path]:
    """A normalized real-looking test input and the ONNX model's output on it."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    img = np.zeros((size, size), np.float32)
    for _ in range(6):  # a few blobs: the output is non-trivial
        cy, cx, r = rng.uniform(8, size - 8), rng.uniform(8, size - 8), rng.uniform(4, 9)
        img = np.maximum(img, np.clip(1.2 - ((yy - cy) ** 2 + (xx - cx) ** 2) / r ** 2, 0, 1))
    img += rng.normal(0, 0.03, img.shape).astype(np.float32)
    x = np.repeat(img[None, None], entry["channels"], axis=1).astype(np.float32)
    sess = ort.InferenceSession(str(models_dir / entry["file"]), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"image": x})[0]
    paths = models_dir / f"{entry['id']}.test_input.npy", models_dir / f"{entry['id']}.test_output.npy"
    np.save(paths[0], x)
    np.save(paths[1], y.astype(np.float32))
    return paths


def rdf(entry: dict, inputs: tuple[Path, Path], models_dir: Path) -> dict:
    """The spec-0.5 model description of one index entry."""
    channel_names = ["nuclei"] if entry["channels"] == 1 else ["red", "green", "blue"]
    m = entry["input_multiple"]
    norm = entry["normalize"]
    metrics = entry.get("metrics", {})
    return {
        "format_version": "0.5.3",
        "type": "model",
        "name": re.sub(r"[^A-Za-z0-9_+\- ()]", "", entry["name"].replace("&", "and").replace("/", "-")
                       .replace(".", "_").replace(",", " -"))[:128],
        "description": entry["description"][:1024],
        "authors": [{"name": "piximi-py developers"}],
        "maintainers": [{"name": "piximi-py developers", "github_user": "piximi-py"}],
        "cite": [{"text": "Caicedo et al. (2019) Nucleus segmentation across imaging experiments: the 2018 "
                          "Data Science Bowl. Nature Methods 16, 1247-1253 (training and evaluation data)",
                  "doi": "10.1038/s41592-019-0612-7"}],
        "license": "BSD-3-Clause",
        "tags": ["nuclei", "instance-segmentation", "unet", "onnx", "2d",
                 "fluorescence-light-microscopy" if entry["channels"] == 1 and not entry.get("stain")
                 else "brightfield-microscopy"],
        "documentation": "README.md",
        "inputs": [{
            "id": "image",
            "description": ("percentile-normalized image" if not entry.get("stain") else
                            f"percentile-normalized {entry['stain']} density of an RGB stained slide "
                            "(piximi_py.preprocess)"),
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": channel_names},
                     _space("y", m), _space("x", m)],
            "test_tensor": {"source": inputs[0].name, "sha256": sha256_file(inputs[0])},
            "sample_tensor": {"source": inputs[0].name, "sha256": sha256_file(inputs[0])},
            "data": {"type": "float32"},
            "preprocessing": [{"id": "scale_range", "kwargs": {
                "axes": ["y", "x"], "min_percentile": norm["low"], "max_percentile": norm["high"]}}],
        }],
        "outputs": [{
            "id": "probabilities",
            "description": _output_description(entry),
            "axes": [{"type": "batch"}, {"type": "channel",
                                         "channel_names": FLOWS if entry.get("instances") == "flows" else CLASSES},
                     {"type": "space", "id": "y", "size": {"tensor_id": "image", "axis_id": "y"}},
                     {"type": "space", "id": "x", "size": {"tensor_id": "image", "axis_id": "x"}}],
            "test_tensor": {"source": inputs[1].name, "sha256": sha256_file(inputs[1])},
            "sample_tensor": {"source": inputs[1].name, "sha256": sha256_file(inputs[1])},
            "data": {"type": "float32"},
        }],
        "weights": {"onnx": {"source": entry["file"], "sha256": sha256_file(models_dir / entry["file"]),
                             "opset_version": OPSET}},
        "config": {"piximi_py": {"id": entry["id"], "tile_size": entry["tile_size"],
                                 "tile_overlap": entry["tile_overlap"], "postprocess": entry["postprocess"],
                                 **({"outline_contrast": entry["outline_contrast"]}
                                    if entry.get("outline_contrast") else {}),
                                 **({"min_relative_size": entry["min_relative_size"]}
                                    if entry.get("min_relative_size") else {}),
                                 **({"flip_average": True} if entry.get("flip_average") else {}),
                                 "held_out_metrics": metrics}},
    }


def write_rdf(models_dir: Path, entry: dict, checkpoint: dict | None = None) -> Path:
    """Write ``models_dir/ID.rdf.yaml`` (and its test tensors) for one index entry."""
    import yaml

    paths = test_tensors(Path(models_dir), entry)
    out = Path(models_dir) / f"{entry['id']}.rdf.yaml"
    out.write_text(yaml.safe_dump(json.loads(json.dumps(rdf(entry, paths, Path(models_dir)))), sort_keys=False))
    return out
