"""Synthetic whole-cell generator (training/synthetic_cells.py): pure numpy/scipy."""
import numpy as np
import pytest
from scipy import ndimage as ndi

from training.synthetic_cells import synthetic_cells

SEEDS = range(8)


@pytest.fixture(scope="module")
def examples():
    return [synthetic_cells(np.random.default_rng(seed)) for seed in SEEDS]


def test_same_seed_same_output():
    a_img, a_lab = synthetic_cells(np.random.default_rng(7))
    b_img, b_lab = synthetic_cells(np.random.default_rng(7))
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, synthetic_cells(np.random.default_rng(8))[0])


def test_two_normalized_channels(examples):
    for image, labels in examples:
        assert image.shape == (256, 256, 2) and labels.shape == (256, 256)
        assert image.dtype == np.float32 and labels.dtype == np.int32
        assert np.isfinite(image).all()
        assert -0.5 < np.percentile(image, 1) < 0.5 and 0.5 < np.percentile(image, 99.8) < 1.5
    image, labels = synthetic_cells(np.random.default_rng(0), shape=(96, 130))
    assert image.shape == (96, 130, 2) and labels.shape == (96, 130)


def test_cells_consecutive_connected_and_touching(examples):
    touching = 0
    for image, labels in examples:
        n = labels.max()
        assert n >= 2
        np.testing.assert_array_equal(np.unique(labels), np.arange(n + 1))
        for i, box in enumerate(ndi.find_objects(labels), start=1):
            assert ndi.label(labels[box] == i)[1] == 1, f"cell {i} is in pieces"
        # confluent fields: some cells share a border, with no background between them
        right = (labels[:, 1:] != labels[:, :-1]) & (labels[:, 1:] > 0) & (labels[:, :-1] > 0)
        touching += int(right.any())
    assert touching >= len(SEEDS) // 2


def test_cytoplasm_in_cells_and_nuclei_inside_them(examples):
    for image, labels in examples:
        cyto, nuclei = image[..., 0], image[..., 1]
        assert cyto[labels > 0].mean() > cyto[labels == 0].mean() + 0.1
        bright = nuclei > 0.5
        assert bright.any() and (labels[bright] > 0).mean() > 0.9


def test_whole_cell_training_crops_draw_synthetic_cells():
    """A two-channel crop stream (the whole-cell model's) fills its synthetic share with whole cells,
    nuclear channel and all, not with one-channel nuclei."""
    from training.data import Sample
    from training.train import CropStream

    image, labels = synthetic_cells(np.random.default_rng(1))
    real = [Sample("real/0", image, labels, "real", 30.0)]
    stream = iter(CropStream(real, batch=4, crop=64, seed=0, channels=2, synthetic_fraction=1.0, diameter=30.0,
                             drop_nuclei=0.0))
    x, target, _ = next(stream)
    assert tuple(x.shape) == (4, 2, 64, 64) and tuple(target.shape[-2:]) == (64, 64)
    assert float(x[:, 1].abs().sum()) > 0  # the synthetic crops carry their nuclei
