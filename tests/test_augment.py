"""Averaging over flips (``augment``): the shipped default model on the StarDist sample, in the
API, the Dask/CLI batch and through the backend wrapper itself."""
import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

import piximi_py
from piximi_py import run_sync
from piximi_py.augment import FLIPS, FlipAveraged, check_augment
from piximi_py.backends.onnxruntime import OnnxRuntimeBackend
from piximi_py.metrics import evaluate_instances
from piximi_py.models import default_models_dir, find_model
from piximi_py.pipeline import prepare_input
from realdata import ROOT, stardist_sample


@pytest.fixture(scope="module")
def sample():
    image_path, mask_path = stardist_sample()
    return tifffile.imread(image_path), tifffile.imread(mask_path)


@pytest.fixture(scope="module")
def default_backend():
    spec = find_model(piximi_py.load_models(), None)
    return spec, OnnxRuntimeBackend(str(default_models_dir() / spec.file))


def test_the_average_over_flips_is_exactly_flip_equivariant(sample, default_backend):
    """A flipped input gives the flipped output (the network alone does not: each view's output
    is flipped back before the mean), and the average is not the plain output."""
    spec, backend = default_backend
    x = prepare_input(sample[0][:128, :192], spec)[None]  # not square: the flips keep the shape
    averaged = FlipAveraged(backend)
    y = run_sync(averaged.run(x))
    assert y.shape == (1, 3, 128, 192) and y.dtype == np.float32
    for axes in FLIPS[1:]:
        flipped = run_sync(averaged.run(np.ascontiguousarray(np.flip(x, axes))))
        np.testing.assert_allclose(np.flip(flipped, axes), y, atol=2e-6, err_msg=str(axes))
    plain = run_sync(backend.run(x))
    for axes in FLIPS[1:]:  # the network is not equivariant by itself, or there is nothing to average
        assert np.abs(np.flip(run_sync(backend.run(np.ascontiguousarray(np.flip(x, axes)))), axes)
                      - plain).max() > 1e-3
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)  # still probabilities
    assert averaged.name == backend.name


def test_segment_with_augment(sample):
    """The API's option: the result says it was averaged, scores as well as without on the
    sample (0.699 AP@0.5 plain; the README's unseen-source figures are the real test), and the
    labels differ from the plain ones."""
    image, truth = sample
    plain = piximi_py.segment_image(image)
    averaged = piximi_py.segment_image(image, augment=True)
    assert averaged.augmented and not plain.augmented
    assert not np.array_equal(averaged.labels, plain.labels)
    ap = evaluate_instances(truth, averaged.labels)["ap50"]
    assert ap >= 0.65, ap
    assert abs(averaged.count - plain.count) <= 0.1 * plain.count


@pytest.mark.parametrize("bad", ["yes", "false", 1, None])
def test_bad_augment_values_are_refused(sample, bad, tmp_path):
    with pytest.raises(ValueError, match="augment must be true or false"):
        check_augment(bad)
    with pytest.raises(ValueError, match="augment"):
        piximi_py.segment_image(sample[0][:64, :64], augment=bad)
    from piximi_py.distributed import run_batch

    with pytest.raises(ValueError, match="augment"):  # before any image is read
        run_batch([tmp_path / "missing.tif"], tmp_path / "out", augment=bad, log=None)


def test_cli_augment(sample, tmp_path):
    """``--augment`` reaches every image of a CLI run and the run report records it."""
    image, _ = sample
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "a.tif", image[:256, :256])
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "piximi_py", "segment", str(src), "--out", str(out),
                           "--augment", "--diameter", "20"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "run_report.json").read_text())
    assert report["options"]["augment"] is True and report["segmented"] == 1
    expected = piximi_py.segment_image(image[:256, :256], diameter=20, augment=True).labels
    np.testing.assert_array_equal(tifffile.imread(out / "a_labels.tif"), expected)
