"""ONNX files read and patched without the onnx package (piximi_py.onnxfile): the head found in
every shipped segmentation model that predicts classes (what teaching refits; a flow model cannot
be taught) reproduces the model's output in numpy, the features output,
new weights and metadata load in onnxruntime and pass onnx's checker."""
from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import piximi_py  # noqa: E402
from piximi_py import onnxfile  # noqa: E402
from piximi_py.models import can_segment, predicts_flows  # noqa: E402
from piximi_py.teach import head_probabilities  # noqa: E402


def _segmentation_files(models_dir):
    return sorted({s.file for s in piximi_py.load_models(models_dir) if can_segment(s) and not predicts_flows(s)})


def test_head_and_features_reproduce_every_segmentation_model(models_dir):
    files = _segmentation_files(models_dir)
    assert len(files) >= 3
    rng = np.random.default_rng(0)
    for name in files:
        data = (models_dir / name).read_bytes()
        head = onnxfile.find_head(data)
        model = onnx.load_from_string(data)
        weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
        if head.weight_name in weights:  # int8 files keep the head in float, behind a DequantizeLinear
            np.testing.assert_array_equal(weights[head.weight_name][:, :, 0, 0], head.weight)
        patched = onnxfile.with_outputs(data, [head.features])
        onnx.checker.check_model(onnx.load_from_string(patched))
        session = ort.InferenceSession(patched, providers=["CPUExecutionProvider"])
        channels = session.get_inputs()[0].shape[1]
        x = rng.random((1, channels, 64, 64), np.float32)
        prob, features = session.run(None, {session.get_inputs()[0].name: x})
        assert features.shape[1] == head.weight.shape[1], name
        np.testing.assert_allclose(head_probabilities(features[0], head.weight, head.bias, head.block),
                                   prob[0], atol=1e-5, err_msg=name)


def test_new_weights_and_metadata_round_trip(models_dir):
    default = piximi_py.find_model(piximi_py.load_models(models_dir), None)
    data = (models_dir / default.file).read_bytes()
    head = onnxfile.find_head(data)
    weight = head.weight[::-1].copy()
    out = onnxfile.replace_initializers(data, {head.weight_name: weight[:, :, None, None], head.bias_name: head.bias + 1})
    out = onnxfile.with_metadata(out, {"piximi.adapted": json.dumps({"diameter": 31.5})})
    model = onnx.load_from_string(out)
    onnx.checker.check_model(model)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    np.testing.assert_array_equal(weights[head.weight_name][:, :, 0, 0], weight)
    np.testing.assert_array_equal(weights[head.bias_name], head.bias + 1)
    assert onnxfile.read_metadata(out) == {"piximi.adapted": '{"diameter": 31.5}'}
    meta = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert json.loads(meta["piximi.adapted"]) == {"diameter": 31.5}
    again = onnxfile.find_head(out)
    np.testing.assert_array_equal(again.weight, weight)


def test_bytes_that_are_not_a_model_are_refused(models_dir):
    default = piximi_py.find_model(piximi_py.load_models(models_dir), None)
    data = (models_dir / default.file).read_bytes()
    for bad in (b"", b"not an onnx file at all", data[: len(data) // 2]):
        with pytest.raises(onnxfile.OnnxFileError):
            onnxfile.find_head(bad)
