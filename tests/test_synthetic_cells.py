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


def test_transmitted_light_cells_same_seed_same_output_and_normalized():
    from training.synthetic_cells import synthetic_transmitted_cells

    a_img, a_lab = synthetic_transmitted_cells(np.random.default_rng(3))
    b_img, b_lab = synthetic_transmitted_cells(np.random.default_rng(3))
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    with_nuclei = 0
    for seed in SEEDS:
        image, labels = synthetic_transmitted_cells(np.random.default_rng(seed))
        assert image.shape == (256, 256, 2) and image.dtype == np.float32 and np.isfinite(image).all()
        assert labels.max() >= 2 and np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
        assert -0.5 < np.percentile(image[..., 0], 1) < 0.5 and 0.5 < np.percentile(image[..., 0], 99.8) < 1.5
        with_nuclei += bool(image[..., 1].any())
    assert 0 < with_nuclei < len(SEEDS)  # a nuclear stain beside the transmitted light only sometimes


def _disc(radius=20, size=128):
    yy, xx = np.mgrid[:size, :size]
    return (np.hypot(yy - size / 2, xx - size / 2) < radius).astype(np.float32)


def test_phase_contrast_reads_a_cell_dark_with_a_bright_halo():
    from training.synthetic_cells import _phase_contrast

    cell = _disc()
    image = _phase_contrast(np.random.default_rng(0), cell, diameter=40.0)
    ring = ndi.binary_dilation(cell > 0, iterations=3) & (cell == 0)
    far = ~ndi.binary_dilation(cell > 0, iterations=40)
    assert image[cell > 0].mean() < image[far].mean() - 0.05
    assert image[ring].mean() > image[far].mean() + 0.01


def test_dic_lights_a_cell_from_one_side():
    from training.synthetic_cells import _dic

    image = _dic(np.random.default_rng(0), _disc())
    edge = ndi.binary_dilation(_disc() > 0, iterations=2) & ~ndi.binary_erosion(_disc() > 0, iterations=2)
    yy, xx = np.nonzero(edge)
    bright_side = image[yy, xx] > 0.5
    # the lit and shaded halves of the outline face opposite ways
    assert 0.2 < bright_side.mean() < 0.8
    centre = np.array([64.0, 64.0])
    lit = np.array([yy[bright_side].mean(), xx[bright_side].mean()]) - centre
    shaded = np.array([yy[~bright_side].mean(), xx[~bright_side].mean()]) - centre
    assert lit @ shaded < 0


def test_training_crops_draw_transmitted_light_cells_when_asked():
    from training.data import Sample
    from training.train import CropStream

    image, labels = synthetic_cells(np.random.default_rng(1))
    real = [Sample("real/0", image, labels, "real", 30.0)]

    def pool_renders(share):
        stream = CropStream(real, batch=2, crop=64, seed=0, channels=2, synthetic_fraction=1.0, diameter=30.0,
                            synthetic_transmitted=share)
        rng = np.random.default_rng(0)
        return [stream._synthetic(rng) for _ in range(6)]

    # the fluorescence cells keep a bright cytoplasm in their cells; transmitted light does not
    def bright_cells(s):
        return s.image[..., 0][s.labels > 0].mean() > s.image[..., 0][s.labels == 0].mean() + 0.1
    assert all(bright_cells(s) for s in pool_renders(0.0))
    assert not all(bright_cells(s) for s in pool_renders(1.0))
