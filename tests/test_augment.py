"""Averaging over scales (``augment``): the shipped default model on the StarDist sample, in the
API, the CLI batch and the averaging step itself."""

import numpy as np
import pytest
import tifffile

import piximi_py
from piximi_py import run_sync
from piximi_py.backends.onnxruntime import OnnxRuntimeBackend
from piximi_py.metrics import evaluate_instances
from piximi_py.models import default_models_dir, find_model
from piximi_py.pipeline import check_augment, predict_masks, predict_masks_averaged, prepare_input
from realdata import assert_cli_flag_as_api, stardist_sample


@pytest.fixture(scope="module")
def sample():
    image_path, mask_path = stardist_sample()
    return tifffile.imread(image_path), tifffile.imread(mask_path)


@pytest.fixture(scope="module")
def default_model():
    spec = find_model(piximi_py.load_models(), None)
    return spec, OnnxRuntimeBackend(str(default_models_dir() / spec.file))


@pytest.mark.parametrize("scale", [1.0, 0.6, 1.7])
def test_one_scale_averaged_is_the_plain_pass(sample, default_model, scale):
    """The averaging step over the one scale asked for gives :func:`predict_masks`' masks, so
    what ``augment`` changes is the other scales; over three scales the masks differ."""
    spec, backend = default_model
    x = prepare_input(sample[0][:200, :256], spec)   # not square, not a tile multiple
    plain = run_sync(predict_masks(x, spec, backend, scale=scale))
    one = run_sync(predict_masks_averaged(x, spec, backend, scale=scale, factors=(1.0,)))
    for a, b in zip(plain, one):
        assert a.shape == b.shape == x.shape[-2:] and a.dtype == b.dtype == bool
        np.testing.assert_array_equal(a, b)
    three = run_sync(predict_masks_averaged(x, spec, backend, scale=scale))
    assert three[0].shape == x.shape[-2:] and not np.array_equal(three[0], plain[0])


def test_progress_covers_every_scale(sample, default_model):
    spec, backend = default_model
    x = prepare_input(sample[0][:256, :256], spec)
    seen = []
    run_sync(predict_masks_averaged(x, spec, backend, lambda stage, done, total: seen.append((stage, done, total))))
    fractions = [done / total for _, done, total in seen]
    assert {s for s, _, _ in seen} == {"inference"} and fractions == sorted(fractions)
    assert fractions[0] == 0 and fractions[-1] == 1 and len(seen) >= 6


def test_segment_with_augment(sample):
    """The API's option: the result says it was averaged, scores at least as well as without on
    the sample (0.699 AP@0.5 plain; the README's unseen-source figures are the real test), and
    the labels differ from the plain ones."""
    image, truth = sample
    plain = piximi_py.segment_image(image)
    averaged = piximi_py.segment_image(image, augment=True)
    assert averaged.augmented and not plain.augmented
    assert averaged.diameter == plain.diameter  # the estimate is not averaged
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
    assert_cli_flag_as_api(image[:256, :256], tmp_path, "augment")
