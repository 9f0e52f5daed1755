"""``invert``: dark objects on a lighter background read with their intensities flipped, in the
API, the CLI batch and the page's options; only the plane the objects are seen in is flipped."""

import numpy as np
import pytest
import tifffile

import piximi_py
from piximi_py.distributed import run_batch
from piximi_py.io import read_image
from piximi_py.models import can_invert, find_model
from piximi_py.pipeline import inverted
from piximi_py.preprocess import normalize_percentile
from realdata import assert_cli_flag_as_api, stardist_sample, two_channel_sample


@pytest.fixture(scope="module")
def crop():
    return tifffile.imread(stardist_sample()[0])[:256, :256]


def test_inverted_flips_one_plane_or_one_channel():
    image = np.array([[0, 5], [7, 10]], np.uint16)
    np.testing.assert_array_equal(inverted(image), [[10, 5], [3, 0]])
    stack = np.stack([image, image], axis=-1)
    out = inverted(stack, 0)
    np.testing.assert_array_equal(out[..., 0], [[10, 5], [3, 0]])
    np.testing.assert_array_equal(out[..., 1], image)  # the other channel as it was
    np.testing.assert_array_equal(stack[..., 0], image)  # the input untouched
    with_nan = np.array([[np.nan, 2.0], [4.0, 8.0]], np.float32)
    np.testing.assert_array_equal(inverted(with_nan), [[0, 6], [4, 0]])  # NaN as dark as unflipped


def test_invert_segments_the_flipped_image(crop):
    """The default model given ``invert`` segments what it segments of the image flipped by hand
    (the nuclei drawn dark on a bright background, as in brightfield), and says so."""
    dark = (crop.max() - crop).astype(np.uint16)
    flipped = piximi_py.segment_image(dark, invert=True)
    plain = piximi_py.segment_image(crop)
    assert flipped.inverted and not plain.inverted
    assert flipped.count > 0
    np.testing.assert_array_equal(flipped.labels, plain.labels)
    # and reading the dark image as it is finds something else
    assert not np.array_equal(piximi_py.segment_image(dark).labels, plain.labels)


def test_invert_flips_only_the_cytoplasm_channel():
    """A whole-cell model flips its cytoplasm channel, never the nuclear one."""
    image = read_image(two_channel_sample(), keep_channels=True)[:256, :256]
    channels = {"cyto": 0, "nuclei": 1}
    by_hand = image.copy()
    by_hand[..., 0] = image[..., 0].max() - image[..., 0]
    flipped = piximi_py.segment_image(by_hand, "cells", channels=channels, invert=True, diameter=30)
    plain = piximi_py.segment_image(image, "cells", channels=channels, diameter=30)
    np.testing.assert_array_equal(flipped.labels, plain.labels)


def test_invert_is_refused_where_it_cannot_apply(crop, tmp_path):
    specs = piximi_py.load_models()
    assert can_invert(find_model(specs, "nuclei")) and can_invert(find_model(specs, "cells"))
    assert not can_invert(find_model(specs, "nuclei_he"))             # colour
    assert not can_invert(find_model(specs, "nuclei_hematoxylin"))    # a stain's density
    rgb = np.repeat(crop[..., None], 3, axis=-1).astype(np.uint8)
    with pytest.raises(ValueError, match="invert: model 'nuclei_he' reads colour"):
        piximi_py.segment_image(rgb, "nuclei_he", invert=True)
    for bad in ("yes", 1, None):
        with pytest.raises(ValueError, match="invert must be true or false"):
            piximi_py.segment_image(crop, invert=bad)
    with pytest.raises(ValueError, match="invert"):  # before any image is read
        run_batch([tmp_path / "missing.tif"], tmp_path / "out", "nuclei_he", invert=True, log=None)


def test_cli_invert(crop, tmp_path):
    """``--invert`` reaches every image of a CLI run and the run report records it."""
    assert_cli_flag_as_api((crop.max() - crop).astype(np.uint16), tmp_path, "invert")


def test_training_shows_transmitted_light_either_way(tmp_path):
    """A whole-cell set named in ``inverted_sets`` keeps its image read as ``invert`` reads it, and
    the crop stream shows it that way at the share asked for (training both polarities)."""
    from training.data import load_set
    from training.synthetic_cells import synthetic_cells
    from training.train import CropStream, load_samples

    image, labels = synthetic_cells(np.random.default_rng(3), (96, 96))
    for sub in ("images", "masks"):
        (tmp_path / "phase" / sub).mkdir(parents=True)
    planes = np.ascontiguousarray(np.moveaxis(image, -1, 0), dtype=np.float32)
    tifffile.imwrite(tmp_path / "phase" / "images" / "a.tif", planes, imagej=True, metadata={"axes": "CYX"})
    tifffile.imwrite(tmp_path / "phase" / "masks" / "a.tif", labels.astype(np.uint16))
    plain, = load_samples([str(tmp_path / "phase")], tmp_path, 2)
    both, = load_samples([str(tmp_path / "phase")], tmp_path, 2, inverted_sets=["phase"])
    assert plain.inverted is None
    np.testing.assert_array_equal(both.image, plain.image)
    expected = normalize_percentile(inverted(planes[0]))
    np.testing.assert_allclose(both.inverted[..., 0], expected, atol=1e-6)
    np.testing.assert_array_equal(both.inverted[..., 1], plain.image[..., 1])  # nuclei as they are
    with pytest.raises(ValueError, match="inverted"):
        load_set(tmp_path / "phase", "gray", inverted=True)

    def first_batch(fraction):
        stream = CropStream([both], batch=4, crop=48, seed=0, channels=2, scale_range=(1.0, 1.0),
                            drop_nuclei=0.0, invert_fraction=fraction)
        return [t.numpy() for t in next(iter(stream))]

    (plain_x, plain_y, _), (flipped_x, flipped_y, _) = first_batch(0.0), first_batch(1.0)
    # the same crops (the polarity is drawn apart from them), the cells dark where they were bright
    np.testing.assert_array_equal(plain_y, flipped_y)
    np.testing.assert_allclose(plain_x[:, 1], flipped_x[:, 1])
    cells = plain_y > 0
    assert plain_x[:, 0][cells].mean() > plain_x[:, 0][~cells].mean() + 0.2
    assert flipped_x[:, 0][cells].mean() < flipped_x[:, 0][~cells].mean() - 0.2
