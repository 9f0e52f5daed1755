"""piximi_py.measure against scikit-image's regionprops (the oracle; not in the page)."""
import numpy as np
import pytest
import tifffile
from skimage.measure import regionprops

from piximi_py.measure import COLUMNS, INTENSITY_COLUMNS, perimeter, regionprops_table
from realdata import stardist_sample


def oracle(labels, image=None):
    props = regionprops(labels, intensity_image=image)
    table = {
        "label": [p.label for p in props],
        "area": [p.area for p in props],
        "centroid_y": [p.centroid[0] for p in props],
        "centroid_x": [p.centroid[1] for p in props],
        "bbox_min_y": [p.bbox[0] for p in props],
        "bbox_min_x": [p.bbox[1] for p in props],
        "bbox_max_y": [p.bbox[2] for p in props],
        "bbox_max_x": [p.bbox[3] for p in props],
        "perimeter": [p.perimeter for p in props],
        "eccentricity": [p.eccentricity for p in props],
        "solidity": [p.solidity for p in props],
    }
    if image is not None:
        table["intensity_mean"] = [p.intensity_mean for p in props]
        table["intensity_min"] = [p.intensity_min for p in props]
        table["intensity_max"] = [p.intensity_max for p in props]
    return table


def assert_same(ours, theirs):
    assert list(ours) == list(theirs)
    for name, values in theirs.items():
        assert ours[name].ndim == 1 and len(ours[name]) == len(values), name
        # moments are summed in another order than scikit-image's: last bits differ
        rtol = 1e-9 if name == "eccentricity" else 1e-12
        np.testing.assert_allclose(ours[name], np.asarray(values, np.float64), rtol=rtol,
                                   atol=1e-9, err_msg=name)


def test_real_mask_and_image_match_skimage():
    image_path, mask_path = stardist_sample()
    labels, image = tifffile.imread(mask_path), tifffile.imread(image_path)
    assert labels.max() > 50
    table = regionprops_table(labels, image)
    assert tuple(table) == COLUMNS + INTENSITY_COLUMNS
    assert_same(table, oracle(labels, image))
    assert table["intensity_min"].dtype == image.dtype


def test_touching_edge_objects_and_gaps_in_ids():
    image_path, mask_path = stardist_sample()
    labels = tifffile.imread(mask_path)[100:228, 300:428].astype(np.int32)
    labels[labels > 0] += 1000            # ids with gaps, objects cut by the crop edges
    labels[0:5, 0:7] = 7                  # a rectangle touching two edges
    labels[50, 50] = 3                    # single pixel
    labels[60:62, 60:70] = 4              # thin bar, touching nothing else
    labels[61:63, 64:66] = 5              # ... and another object touching it
    image = np.random.default_rng(0).normal(size=labels.shape)  # float64: skimage averages float32 in float32
    assert_same(regionprops_table(labels, image), oracle(labels, image))


def test_sparse_ids_and_empty():
    labels = np.zeros((32, 40), np.uint32)
    labels[3:9, 4:12] = 70_000            # more than the pixel count: ids are compacted
    labels[20:30, 20:21] = 17
    assert_same(regionprops_table(labels), oracle(labels))
    labels[labels == 70_000] = 4_000_000_000   # too sparse for skimage's find_objects
    table = regionprops_table(labels)
    assert table["label"].tolist() == [17, 4_000_000_000] and table["area"].tolist() == [10, 48]
    empty = regionprops_table(np.zeros((16, 16), np.uint16), np.ones((16, 16)))
    assert all(len(v) == 0 for v in empty.values()) and tuple(empty) == COLUMNS + INTENSITY_COLUMNS


def test_perimeter_indexed_by_label():
    labels = np.zeros((10, 10), np.uint8)
    labels[2:5, 2:5] = 2
    from skimage.measure import perimeter as sk_perimeter
    p = perimeter(labels)
    assert p.shape == (3,) and p[0] == 0 and p[1] == 0
    assert p[2] == pytest.approx(sk_perimeter(labels == 2, 4))


def test_bad_arguments():
    with pytest.raises(ValueError, match="2-D integer"):
        regionprops_table(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="negative"):
        regionprops_table(-np.ones((4, 4), np.int16))
    with pytest.raises(ValueError, match="shape"):
        regionprops_table(np.zeros((4, 4), np.uint8), np.zeros((4, 5)))


@pytest.mark.parametrize("bad", [-0.5, (-0.5, 0.5), 0, float("nan"), (0.5, 0.5, 0.5), "0.5", True, "um"])
def test_bad_pixel_sizes_are_refused_everywhere_they_enter(bad):
    """A pixel size is one positive number or (y, x), in the measurements, the exports and the
    diameter in µm alike: never a negative area_um2 or numpy's own error."""
    from piximi_py.diameter import diameter_from_um
    from piximi_py.export import labels_tiff

    labels = np.zeros((8, 8), np.uint8)
    labels[2:5, 2:5] = 1
    for use in (lambda: regionprops_table(labels, pixel_size=bad), lambda: labels_tiff(labels, pixel_size=bad),
                lambda: diameter_from_um(10.0, bad)):
        with pytest.raises(ValueError, match="pixel size must be µm per pixel"):
            use()


def test_pixel_size_as_one_number_a_pair_or_a_0d_array():
    from piximi_py.io import check_pixel_size

    labels = np.zeros((8, 8), np.uint8)
    labels[2:5, 2:5] = 1
    for size in (0.5, np.array(0.5), [0.5, 0.5], np.float32(0.5)):
        assert check_pixel_size(size) == (0.5, 0.5)
        assert regionprops_table(labels, pixel_size=size)["area_um2"][0] == pytest.approx(9 * 0.25)
    assert check_pixel_size((0.25, 0.5)) == (0.25, 0.5) and check_pixel_size(None) is None


def test_per_channel_intensity_pixel_size_and_summary():
    from skimage.measure import regionprops_table as sk_table

    from piximi_py.measure import summarize

    image_path, mask_path = stardist_sample()
    labels = tifffile.imread(mask_path)[:200, :200]
    gray = tifffile.imread(image_path)[:200, :200].astype(np.float64)
    rgb = np.stack([gray, gray * 0.5, 255 - gray], axis=-1)
    ours = regionprops_table(labels, rgb, pixel_size=(0.5, 0.25))
    ref = sk_table(labels, rgb, properties=("label", "area", "intensity_mean", "intensity_min",
                                             "intensity_max"))
    for k in range(3):
        for stat in ("mean", "min", "max"):
            np.testing.assert_allclose(ours[f"intensity_{stat}-{k}"], ref[f"intensity_{stat}-{k}"],
                                       rtol=1e-12)
    np.testing.assert_allclose(ours["area_um2"], ref["area"] * 0.125)
    s = summarize(ours)
    assert s["count"] == len(ref["label"])
    assert s["mean_area"] == pytest.approx(ref["area"].mean())
    assert s["mean_area_um2"] == pytest.approx(ref["area"].mean() * 0.125)


def random_labels(rng, kind, shape):
    """Hard cases for the run-based measurements: ids split into many pieces,
    blobs, disks and lines over each other, random walks."""
    from scipy import ndimage as ndi
    from skimage.draw import disk, line

    h, w = shape
    if kind == 0:
        return (rng.random(shape) < rng.uniform(0.05, 0.9)) * rng.integers(1, 6, shape)
    if kind == 1:
        smooth = ndi.gaussian_filter(rng.random(shape), rng.uniform(0.5, 4))
        return ndi.label(smooth > np.quantile(smooth, rng.uniform(0.2, 0.8)))[0]
    labels = np.zeros(shape, np.int32)
    for k in range(1, 6):
        if kind == 2:
            rr, cc = disk((rng.integers(0, h), rng.integers(0, w)), rng.uniform(0.5, 30), shape=shape) \
                if k % 2 else line(rng.integers(0, h), rng.integers(0, w), rng.integers(0, h),
                                   rng.integers(0, w))
            labels[rr, cc] = k
        else:
            y, x = rng.integers(0, h), rng.integers(0, w)
            for _ in range(rng.integers(1, 200)):
                labels[y, x] = k
                y, x = np.clip((y + rng.integers(-1, 2), x + rng.integers(-1, 2)), 0, (h - 1, w - 1))
    return labels


@pytest.mark.parametrize("kind", range(4))
def test_random_shapes_match_skimage(kind):
    rng = np.random.default_rng(kind)
    for _ in range(20):
        labels = random_labels(rng, kind, tuple(rng.integers(5, 90, 2))).astype(np.int32)
        image = rng.normal(size=labels.shape)
        assert_same(regionprops_table(labels, image), oracle(labels, image))


def test_solidity_of_a_large_convex_object_with_a_spur():
    from skimage.draw import disk

    labels = np.zeros((700, 700), np.uint8)
    labels[disk((330, 330), 300)] = 1
    labels[630:660, 20:331] = 1            # hides the circle's lower left: many hull passes
    labels[5:9, 600:690] = 2
    ours = regionprops_table(labels)["solidity"]
    np.testing.assert_allclose(ours, [p.solidity for p in regionprops(labels)], rtol=1e-12)


def test_intensity_with_nan_pixels():
    labels = np.zeros((6, 8), np.int32)
    labels[1:3, 1:4], labels[4:6, 2:7], labels[0, 7] = 1, 2, 3
    image = np.arange(48, dtype=np.float32).reshape(6, 8)
    image[1, 2] = np.nan                    # object 1: one NaN pixel
    image[0, 7] = np.nan                    # object 3: NaN only
    table = regionprops_table(labels, image)
    ones = image[labels == 1]
    assert table["intensity_min"][0] == np.nanmin(ones) and table["intensity_max"][0] == np.nanmax(ones)
    assert np.isnan(table["intensity_mean"][0]) and np.isnan(table["intensity_min"][2])
    np.testing.assert_array_equal(table["intensity_mean"][1], image[labels == 2].mean(dtype=np.float64))
    assert table["intensity_min"].dtype == np.float32
