"""Teaching (piximi_py.teach) on real images: corrected quarters of the StarDist sample teach a
model, which then scores better on the other half of the image; the taught model is an ONNX
file that CPython loads again (thresholds and diameter from its metadata) with the same labels."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realdata import stardist_sample  # noqa: E402

pytest.importorskip("onnxruntime")

import piximi_py  # noqa: E402
from piximi_py import onnxfile  # noqa: E402
from piximi_py import teach as T  # noqa: E402
from piximi_py.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from piximi_py.io import read_image  # noqa: E402
from piximi_py.metrics import average_precision  # noqa: E402
from piximi_py.pipeline import prepare_input, segment_async  # noqa: E402


def _taught(models_dir, model_id, corrected_images):
    spec = piximi_py.find_model(piximi_py.load_models(models_dir), model_id)
    data = (models_dir / spec.file).read_bytes()
    head = onnxfile.find_head(data)
    backend = OnnxRuntimeBackend(onnxfile.with_outputs(data, [head.features]))
    corrected = [(name, prepare_input(im, spec), lab) for name, im, lab in corrected_images]
    adaptation = piximi_py.run_sync(T.teach(corrected, spec, head, backend))
    return spec, data, T.adapted_model_bytes(data, head, adaptation, spec), adaptation


def test_class_targets_mark_rims_and_interiors():
    labels = np.zeros((12, 20), np.int32)
    labels[2:10, 2:10] = 1
    labels[2:10, 10:18] = 2  # touching
    target = T.class_targets(labels)
    assert target[0, 0] == 0 and target[5, 5] == 1 and target[5, 9] == 2 and target[5, 10] == 2
    assert T.touching_mask(labels)[5, 9] and not T.touching_mask(labels)[5, 4]


def test_corrected_quarters_teach_the_model_and_the_file_reloads(models_dir, tmp_path):
    image_path, mask_path = stardist_sample()
    image, truth = read_image(image_path), read_image(mask_path).astype(np.int32)
    h, w = image.shape[0] // 2, image.shape[1] // 2
    corrected = [("top-left", image[:h, :w], truth[:h, :w]), ("bottom-left", image[h:, :w], truth[h:, :w])]
    spec, data, new, adaptation = _taught(models_dir, "nuclei_unet", corrected)
    assert adaptation.report["head_refitted"]
    assert 15 < adaptation.diameter < 35  # the sample's nuclei: about 24 px
    right, right_truth = image[:, w:], truth[:, w:]
    before = piximi_py.run_sync(segment_async(right, spec, OnnxRuntimeBackend(data)))
    taught_spec = T.spec_from_metadata(spec, onnxfile.read_metadata(new))
    assert taught_spec.image_diameter == pytest.approx(adaptation.diameter)
    # the diameter estimate runs with the starting model's thresholds, the instances with the taught
    from piximi_py.inference import _estimating

    keys = ("foreground_threshold", "seed_threshold")
    assert {k: taught_spec.postprocess[k] for k in keys} == {k: adaptation.postprocess[k] for k in keys}
    assert {k: _estimating(taught_spec).postprocess[k] for k in keys} == {k: spec.postprocess[k] for k in keys}
    after = piximi_py.run_sync(segment_async(right, taught_spec, OnnxRuntimeBackend(new)))
    assert after.diameter == pytest.approx(adaptation.diameter) and not after.diameter_estimated
    ap_before, ap_after = average_precision(right_truth, before.labels), average_precision(right_truth, after.labels)
    assert ap_after >= ap_before + 0.05, (ap_before, ap_after)
    # the downloaded file, loaded again by path, runs with the same thresholds and diameter
    path = tmp_path / "nuclei_unet_taught.onnx"
    path.write_bytes(new)
    again = piximi_py.segment_image(right, model=str(path), models_dir=models_dir)
    np.testing.assert_array_equal(again.labels, after.labels)


def test_one_corrected_image_changes_only_the_diameter(models_dir):
    image_path, mask_path = stardist_sample()
    image, truth = read_image(image_path), read_image(mask_path).astype(np.int32)
    spec, data, new, adaptation = _taught(models_dir, None, [("sample", image, truth)])
    assert not adaptation.report["head_refitted"] and adaptation.postprocess == spec.postprocess
    np.testing.assert_array_equal(onnxfile.find_head(new).weight, onnxfile.find_head(data).weight)


def test_teaching_needs_corrected_objects(models_dir):
    spec = piximi_py.find_model(piximi_py.load_models(models_dir), None)
    data = (models_dir / spec.file).read_bytes()
    head = onnxfile.find_head(data)
    backend = OnnxRuntimeBackend(onnxfile.with_outputs(data, [head.features]))
    with pytest.raises(ValueError, match="at least one"):
        piximi_py.run_sync(T.teach([], spec, head, backend))
    empty = np.zeros((64, 64), np.int32)
    with pytest.raises(ValueError, match="at least one object"):
        piximi_py.run_sync(T.teach([("x", np.zeros((1, 64, 64), np.float32), empty)], spec, head, backend))


def test_teach_model_writes_a_file_cpython_runs(models_dir, tmp_path):
    image_path, mask_path = stardist_sample()
    image, truth = read_image(image_path), read_image(mask_path).astype(np.int32)
    h, w = image.shape[0] // 2, image.shape[1] // 2
    path = tmp_path / "taught.onnx"
    # the file first holds the model as shipped and is run once: teaching into the same file must
    # replace the model that the next call runs (not a session kept from the first)
    from piximi_py.modelfile import resolve_model

    path.write_bytes(resolve_model("nuclei_unet", models_dir)[1].read_bytes())
    untaught = piximi_py.segment(image[:, w:], model=str(path), models_dir=models_dir)
    adaptation = T.teach_model([(image[:h, :w], truth[:h, :w]), ("bottom-left", image[h:, :w], truth[h:, :w])],
                               path, "nuclei_unet", models_dir=models_dir)
    assert adaptation.images == ["image 1", "bottom-left"]
    labels = piximi_py.segment(image[:, w:], model=str(path), models_dir=models_dir)
    assert average_precision(truth[:, w:], labels) > 0.9
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(path.read_bytes())
    assert np.array_equal(labels, piximi_py.segment(image[:, w:], model=str(copy), models_dir=models_dir))
    assert not np.array_equal(labels, untaught)


def test_a_taught_models_description_and_card(models_dir):
    yaml = pytest.importorskip("yaml")
    from piximi_py import webteach

    spec = piximi_py.find_model(piximi_py.load_models(models_dir), None)
    described = {"adapted_from": "nuclei", "images": ["a.tif"], "diameter": 31.0,
                 "report": {"head_refitted": False, "ap50_corrected_before": 0.7}}
    rdf = yaml.safe_load(webteach._rdf(spec, "nuclei_taught", described))
    assert rdf["weights"]["onnx"]["source"] == "nuclei_taught.onnx" and rdf["type"] == "model"
    assert rdf["inputs"][0]["test_tensor"]["source"] == "nuclei_taught.test_input.npy"
    assert "a.tif" in webteach._card(spec, described) and "31.0 px" in webteach._card(spec, described)
    assert "Adapted" not in webteach._card(spec, {"adapted_from": "nuclei", "images": []})
    # a loaded file's taught model: its id has "file:", its name what the user called the file
    loaded = dataclasses.replace(spec, file="file:scan, v2 #1+taught1.onnx")
    stem = webteach.download_stem(loaded)
    assert stem == "scan__v2__1+taught1"
    rdf = yaml.safe_load(webteach._rdf(loaded, "odd: name, #1", described))
    assert rdf["weights"]["onnx"]["source"] == "odd: name, #1.onnx"  # quoted: still one value
    card = webteach._card(loaded, described, stem)
    assert f"python -m piximi_py segment IMAGE --out RESULTS --model {stem}.onnx" in card


def test_a_taught_file_keeps_its_starting_models_outline_and_size_rules(models_dir):
    """A taught file records the starting model's outline trim and relative size limit, and its
    spec gets them back; a file taught before they were recorded has neither."""
    import json

    spec = piximi_py.find_model(piximi_py.load_models(models_dir), "nuclei")
    assert spec.outline_contrast and spec.min_relative_size
    described = {"adapted_from": "nuclei", "images": ["a.tif"], "diameter": 0.0, "postprocess": {},
                 "outline_contrast": spec.outline_contrast, "min_relative_size": spec.min_relative_size}
    bare = dataclasses.replace(spec, outline_contrast=0.0, min_relative_size=0.0)
    back = T.spec_from_metadata(bare, {T.METADATA_KEY: json.dumps(described)})
    assert (back.outline_contrast, back.min_relative_size) == (spec.outline_contrast, spec.min_relative_size)
    old = {k: v for k, v in described.items() if k not in ("outline_contrast", "min_relative_size")}
    back = T.spec_from_metadata(spec, {T.METADATA_KEY: json.dumps(old)})
    assert (back.outline_contrast, back.min_relative_size) == (0.0, 0.0)


def test_corrected_planes_of_one_file_are_kept_apart():
    """Two planes of one stack (or two images of one name) corrected in turn are two examples;
    the same image corrected again replaces its own."""
    from piximi_py import webteach
    from piximi_py.webstate import S

    image = np.zeros((8, 8), np.uint16)
    a, b = np.zeros_like(image), np.zeros_like(image)
    a[1:3, 1:3], b[4:7, 4:7] = 1, 1
    saved_last, saved_corrected = S.last, S.corrected
    try:
        S.last, S.corrected = {"labels": a, "image": image, "name": "stack.tif", "model": "m"}, {}
        webteach.mark_corrected()
        S.last = {"labels": b, "image": image + 1, "name": "stack.tif", "model": "m"}
        assert webteach.mark_corrected()["corrected"] == ["stack.tif", "stack.tif (2)"]
        S.last = {"labels": a + b, "image": image + 1, "name": "stack.tif", "model": "m"}
        assert webteach.mark_corrected()["corrected"] == ["stack.tif", "stack.tif (2)"]
        np.testing.assert_array_equal(S.corrected["stack.tif (2)"]["labels"], a + b)
    finally:
        S.last, S.corrected = saved_last, saved_corrected


def test_objects_at_every_edge_get_the_same_targets(models_dir):
    """An object cut by the image's bottom or right edge, where the image is padded to the model's
    grid, has no rim along that edge, as one cut by the top or left edge has none."""
    spec = piximi_py.find_model(piximi_py.load_models(models_dir), "nuclei_unet")
    data = (models_dir / spec.file).read_bytes()
    head = onnxfile.find_head(data)
    backend = OnnxRuntimeBackend(onnxfile.with_outputs(data, [head.features]))
    side = 61  # not a multiple of the model's input: padded at the bottom and right
    labels = np.zeros((side, side), np.int32)
    labels[:10, :10], labels[-10:, -10:] = 1, 2
    image = np.where(labels > 0, 200, 20).astype(np.uint8)
    example = piximi_py.run_sync(T.collect_example(prepare_input(image, spec), labels, spec, head, backend,
                                                   diameter=spec.diameter))
    block = int(round(np.sqrt(example.targets.shape[1])))
    grid = int(round(np.sqrt(example.targets.shape[0])))  # a square image: a square grid of positions
    full = example.targets.reshape(grid, grid, block, block).transpose(0, 2, 1, 3).reshape(grid * block, -1)
    assert grid * block > side and tuple(s.stop for s in example.crop) == (side, side)
    full = full[:side, :side]
    top_left, bottom_right = full[:10, :10], full[-10:, -10:]
    np.testing.assert_array_equal(bottom_right, top_left[::-1, ::-1])
    assert (full[0, :8] == 1).all() and (full[-1, -8:] == 1).all()
