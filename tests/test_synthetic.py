"""Synthetic nuclei generator (training/synthetic.py): pure numpy/scipy."""
import numpy as np
import pytest
from scipy import ndimage as ndi

from training.synthetic import _main, synthetic_nuclei, synthetic_set

SEEDS = range(12)


@pytest.fixture(scope="module")
def examples():
    return [synthetic_nuclei(np.random.default_rng(seed)) for seed in SEEDS]


def test_same_seed_same_output():
    a_img, a_lab = synthetic_nuclei(np.random.default_rng(7))
    b_img, b_lab = synthetic_nuclei(np.random.default_rng(7))
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    c_img, _ = synthetic_nuclei(np.random.default_rng(8))
    assert not np.array_equal(a_img, c_img)


def test_types_shape_finite(examples):
    for image, labels in examples:
        assert image.shape == labels.shape == (256, 256)
        assert image.dtype == np.float32 and labels.dtype == np.int32
        assert np.isfinite(image).all()
    image, labels = synthetic_nuclei(np.random.default_rng(0), shape=(96, 130))
    assert image.shape == labels.shape == (96, 130)


def test_labels_consecutive_and_connected(examples):
    for image, labels in examples:
        n = labels.max()
        assert n >= 1
        np.testing.assert_array_equal(np.unique(labels), np.arange(n + 1))
        for i, box in enumerate(ndi.find_objects(labels), start=1):
            _, pieces = ndi.label(labels[box] == i)
            assert pieces == 1, f"label {i} is in {pieces} pieces"


def test_nuclei_brighter_than_background(examples):
    for image, labels in examples:
        assert image[labels > 0].mean() > image[labels == 0].mean() + 0.05


def test_set_is_reproducible_and_prefix_stable():
    small = synthetic_set(2, seed=3, shape=(64, 64))
    large = synthetic_set(3, seed=3, shape=(64, 64))
    assert len(small) == 2 and len(large) == 3
    for (a_img, a_lab), (b_img, b_lab) in zip(small, large):
        np.testing.assert_array_equal(a_img, b_img)
        np.testing.assert_array_equal(a_lab, b_lab)


def test_command_writes_standard_layout(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    assert _main([str(tmp_path), "2", "--size", "64", "80"]) == 0
    images = sorted((tmp_path / "images").glob("*.tif"))
    masks = sorted((tmp_path / "masks").glob("*.tif"))
    assert [p.name for p in images] == [p.name for p in masks] and len(images) == 2
    mask = tifffile.imread(masks[0])
    assert mask.dtype == np.uint16 and mask.shape == (64, 80)
    assert tifffile.imread(images[0]).dtype in (np.uint8, np.uint16)
