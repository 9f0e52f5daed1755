"""The flow formulation of the whole-cell model: its training targets, the instances made from
them (numpy + scipy, as in the page), and the training loop and export that produce such a model."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from realdata import stardist_sample

from piximi_py.io import read_image
from piximi_py.metrics import evaluate_instances
from piximi_py.models import ModelSpec
from piximi_py.postprocess import drop_inconsistent_flows, flow_errors, flows_to_labels, masks_to_labels


def _flow_targets(labels):
    from training.data import flow_targets

    return flow_targets(labels)


def _touching_cells() -> np.ndarray:
    """Irregular cells touching along long edges: a Voronoi partition of a blob, as cells in a
    confluent culture."""
    rng = np.random.default_rng(3)
    rows, cols = np.indices((160, 160))
    centres = rng.uniform(20, 140, size=(14, 2))
    nearest = np.argmin((rows[..., None] - centres[:, 0]) ** 2 + (cols[..., None] - centres[:, 1]) ** 2, axis=-1)
    inside = (rows - 80) ** 2 + (cols - 80) ** 2 < 70 ** 2
    return np.where(inside, nearest + 1, 0).astype(np.int32)


def test_targets_are_unit_flows_towards_each_centre():
    labels = _touching_cells()
    target = _flow_targets(labels)
    assert target.shape == (3,) + labels.shape and target.dtype == np.float32
    np.testing.assert_array_equal(target[0], labels == 0)
    assert not target[1:, labels == 0].any()
    length = np.hypot(target[1], target[2])[labels > 0]
    assert np.mean(np.abs(length - 1) < 1e-5) > 0.99  # unit vectors except at each centre
    # one step along the flow from a pixel stays in its own cell or comes closer to its centre
    assert np.count_nonzero(length == 0) == labels.max()


def test_flows_give_back_touching_cells_that_share_one_foreground():
    """Where the cells touch the foreground is one component, so seeds from the foreground alone
    make one object; the flows part them."""
    labels = _touching_cells()
    target = _flow_targets(labels)
    found = flows_to_labels(target[0] < 0.5, target[1:], min_size=12)
    score = evaluate_instances(labels, found)
    assert score["ap50"] == 1.0 and score["map"] > 0.95
    merged = masks_to_labels(labels > 0, np.zeros_like(labels, bool))
    assert merged.max() == 1


def test_flows_give_back_real_nuclei():
    _, mask_path = stardist_sample()
    labels = read_image(mask_path).astype(np.int32)
    target = _flow_targets(labels)
    found = flows_to_labels(target[0] < 0.5, target[1:], min_size=12)
    assert evaluate_instances(labels, found)["ap50"] > 0.97


def test_flows_to_labels_edge_cases():
    empty = flows_to_labels(np.zeros((20, 30), bool), np.zeros((2, 20, 30), np.float32))
    assert empty.shape == (20, 30) and not empty.any()
    with pytest.raises(ValueError, match="flows of shape"):
        flows_to_labels(np.zeros((20, 30), bool), np.zeros((2, 30, 20), np.float32))
    # a region whose flow goes nowhere stays where it is: one object, as a foreground component
    # without a seed is one object for the nuclei models
    still = flows_to_labels(np.ones((20, 30), bool), np.zeros((2, 20, 30), np.float32))
    assert still.max() == 1 and still.all()


def test_an_object_whose_flow_points_elsewhere_is_dropped():
    """The flow a mask implies (what the model learns) has little error against it; an object whose
    predicted flow points away from its centre (as where a model meets a modality it never saw) is
    dropped, the rest kept."""
    labels = _touching_cells()
    flows = _flow_targets(labels)[1:]
    assert flow_errors(labels, flows).max() < 0.5  # towards the deepest pixel, measured to the centroid
    rows, cols = np.indices(labels.shape)
    centroids = np.array(ndi.center_of_mass(labels > 0, labels, np.arange(1, labels.max() + 1)))
    to_centroid = np.stack([centroids[labels - 1, 0] - rows, centroids[labels - 1, 1] - cols])
    to_centroid /= np.maximum(np.hypot(*to_centroid), 1e-9)
    to_centroid[:, labels == 0] = 0
    assert np.allclose(flow_errors(labels, to_centroid), 0, atol=1e-5)
    confused = flows.copy()
    confused[:, labels == 5] *= -1
    errors = flow_errors(labels, confused)
    assert errors.shape == (labels.max(),) and errors[4] > 3 and np.delete(errors, 4).max() < 0.5
    kept = drop_inconsistent_flows(labels, confused, 1.0)
    assert kept.max() == labels.max() - 1 and not kept[labels == 5].any()
    np.testing.assert_array_equal(kept > 0, (labels > 0) & (labels != 5))
    assert drop_inconsistent_flows(labels, flows, 1.0) is labels  # nothing to drop: unchanged
    # in the instance step: the pixels of the confused object meet at no centre of their own
    found = flows_to_labels(labels > 0, confused, min_size=12, max_flow_error=1.0)
    assert evaluate_instances(labels, found)["tp"] == labels.max() - 1
    for bad in (0, -1, 5, float("nan")):
        with pytest.raises(ValueError, match="max_flow_error"):
            drop_inconsistent_flows(labels, flows, bad)
    assert flow_errors(np.zeros((8, 8), np.int32), np.zeros((2, 8, 8))).shape == (0,)


def test_the_pipeline_drops_inconsistent_flows_at_any_scale():
    from piximi_py.inference import _instance_options

    spec = ModelSpec(id="cells", name="cells", task="cells", file="x.onnx", channels=2, instances="flows",
                     postprocess={"foreground_threshold": 0.3, "steps": 60, "min_cluster": 80, "min_size": 30,
                                  "max_flow_error": 0.7})
    for scale in (0.5, 1.0, 2.0):
        assert _instance_options(spec, scale)["max_flow_error"] == 0.7
    # the diameter estimate's passes keep every object; the final cells are checked, made anew or
    # reused from the estimate's pass at scale 1
    from piximi_py.inference import _flow_checked, _instances

    labels = _touching_cells()
    prob = _flow_targets(labels)
    prob[1:, labels == 5] *= -1  # one cell whose flow points away from its centre
    masks = (prob[0] < 0.5, prob[1:])
    unchecked = _instances(masks, spec, check_flows=False)
    checked = _instances(masks, spec)
    assert unchecked.max() == checked.max() + 1
    np.testing.assert_array_equal(_flow_checked(unchecked, prob, spec), checked)
    spec.postprocess.pop("max_flow_error")
    assert "max_flow_error" not in _instance_options(spec, 1.0)
    assert _flow_checked(unchecked, prob, spec) is unchecked


def test_a_flow_model_cannot_be_taught(tmp_path):
    from piximi_py import run_sync
    from piximi_py.teach import teach

    spec = ModelSpec(id="cells", name="cells", task="cells", file="x.onnx", channels=2, instances="flows")
    with pytest.raises(ValueError, match="cannot be taught"):
        run_sync(teach([("a", np.zeros((2, 32, 32), np.float32), np.zeros((32, 32), np.int32))], spec, None, None))
    # the shipped whole-cell model predicts flows: refused before its file is read
    from piximi_py.teach import teach_model

    with pytest.raises(ValueError, match="cannot be taught"):
        teach_model([(np.zeros((2, 32, 32), np.float32), np.zeros((32, 32), np.int32))], tmp_path / "t.onnx",
                    model="cells")


def test_flow_training_exports_a_model_the_pipeline_runs(tmp_path):
    """The real training loop with flow targets for a few steps, exported to ONNX, run through the
    pipeline as a flow model."""
    pytest.importorskip("torch")
    import tifffile

    import piximi_py
    from piximi_py.backends.onnxruntime import OnnxRuntimeBackend
    from piximi_py.pipeline import segment_async
    from training.export import export_onnx
    from training.synthetic_cells import synthetic_cells
    from training.train import train

    root = tmp_path / "cells"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        image, labels = synthetic_cells(rng, (128, 128))
        tifffile.imwrite(root / "images" / f"c{i}.tif", np.moveaxis(image * 1000, -1, 0).astype(np.uint16),
                         imagej=True, metadata={"axes": "CYX"})  # as training.datasets writes cells
        tifffile.imwrite(root / "masks" / f"c{i}.tif", labels.astype(np.uint16))
    ckpt = train(tmp_path / "run", sets=[str(root)], channels=2, base_width=4, depth=2, iterations=3, batch=2,
                 crop=64, log_every=1, diameter=30.0, formulation="flows")
    out = export_onnx(ckpt, tmp_path / "flows.onnx")
    spec = ModelSpec(id="cells", name="cells", task="cells", file=out.name, channels=2, input_multiple=4,
                     diameter=30.0, input_roles=["cyto", "nuclei"], instances="flows",
                     postprocess={"foreground_threshold": 0.5, "steps": 40, "min_cluster": 15, "min_size": 30})
    image = read_image(root / "images" / "c0.tif", keep_channels=True)
    seg = piximi_py.run_sync(segment_async(image, spec, OnnxRuntimeBackend(str(out)),
                                           channels={"cyto": 0, "nuclei": 1}, diameter=30.0))
    assert seg.labels.shape == image.shape[:2]
    with pytest.raises(ValueError, match="unknown formulation"):
        train(tmp_path / "bad", sets=[str(root)], channels=2, iterations=1, formulation="boxes")


def test_flip_averaged_output_is_the_mean_over_flips_and_favours_no_direction(models_dir):
    """``run_tile`` with the shipped whole-cell model: the mean of four plain runs on the flipped
    tiles, each flipped back with its flow turned back; so a flipped tile gives the flipped
    output, its flow reversed along the flip, and the plain model does not."""
    import dataclasses

    import piximi_py
    from piximi_py import run_sync
    from piximi_py.backends.onnxruntime import OnnxRuntimeBackend
    from piximi_py.pipeline import FLIPS, prepare_input, run_tile
    from tools.samples import two_channel_sample

    spec = piximi_py.find_model(piximi_py.load_models(models_dir), "cells")
    assert spec.flip_average
    backend = OnnxRuntimeBackend(str(models_dir / spec.file))
    image = read_image(two_channel_sample(), keep_channels=True)
    tile = prepare_input(image, spec, channels={"cyto": 0, "nuclei": 1})[:, 96:224, 160:320]
    averaged = run_sync(run_tile(tile, spec, backend))
    plain = dataclasses.replace(spec, flip_average=False)

    def flipped_back(model, axes):
        """The output for the tile flipped along ``axes``, flipped back, its flow turned back."""
        y = np.flip(run_sync(run_tile(np.flip(tile, axes).copy(), model, backend)), axes).copy()
        y[1] *= -1 if -2 in axes else 1
        y[2] *= -1 if -1 in axes else 1
        return y

    expected = np.mean([flipped_back(plain, axes) for axes in FLIPS], axis=0)
    np.testing.assert_allclose(averaged, expected, atol=1e-5)
    for axes in FLIPS[1:]:
        np.testing.assert_allclose(flipped_back(spec, axes), averaged, atol=1e-5)
    assert np.abs(flipped_back(plain, (-2,)) - run_sync(run_tile(tile, plain, backend))).max() > 0.05
    # a one-plane model's classes are averaged as they are: no plane negated
    nuclei = dataclasses.replace(piximi_py.find_model(piximi_py.load_models(models_dir), "nuclei"), flip_average=True)
    nuclei_backend = OnnxRuntimeBackend(str(models_dir / nuclei.file))
    grey = tile[:1]
    runs = [np.flip(run_sync(run_tile(np.flip(grey, axes).copy(), dataclasses.replace(nuclei, flip_average=False),
                                      nuclei_backend)), axes) for axes in FLIPS]
    np.testing.assert_allclose(run_sync(run_tile(grey, nuclei, nuclei_backend)), np.mean(runs, axis=0), atol=1e-5)
