"""preprocess, tiling, postprocess and metrics: constructed cases + scikit-image as oracle."""
import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import measure, morphology, segmentation

from piximi_py import postprocess, preprocess, tiling
from piximi_py.metrics import average_precision, evaluate_instances, iou_matrix


def disks(shape, centers, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centers, 1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = i
    return labels


def probabilities_from_labels(labels):
    boundary = segmentation.find_boundaries(labels, mode="inner") & (labels > 0)
    prob = np.zeros((3,) + labels.shape, np.float32)
    prob[0][labels == 0] = 1
    prob[1][(labels > 0) & ~boundary] = 1
    prob[2][boundary] = 1
    return prob


# ---------------------------------------------------------------- preprocess
def test_normalize_percentile_matches_definition():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 100.0, (64, 64)).astype(np.uint16)
    lo, hi = np.percentile(x.astype(np.float32), [1, 99.8])
    np.testing.assert_allclose(preprocess.normalize_percentile(x), (x - lo) / (hi - lo), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype, top", [(np.uint8, 256), (np.uint16, 65536), (np.uint16, 40)])
@pytest.mark.parametrize("n", [1, 2, 9, 4099])
def test_histogram_percentiles_equal_numpy(dtype, top, n):
    """8/16-bit percentiles come from a histogram (no sorted copy): same values as np.percentile."""
    a = np.random.default_rng(n).integers(0, top, n).astype(dtype)
    q = [0, 0.5, 1, 3.3, 50, 99.8, 100]
    np.testing.assert_allclose(preprocess.percentiles(a, q, chunk=1000), np.percentile(a, q), rtol=1e-12)
    with pytest.raises(ValueError, match="uint8 or uint16"):
        preprocess.percentiles(a.astype(np.int32), q)


def test_normalize_handles_nan_inf_and_flat():
    x = np.arange(100, dtype=np.float32).reshape(10, 10)
    x[0, 0], x[0, 1], x[0, 2] = np.nan, np.inf, -np.inf
    y = preprocess.normalize_percentile(x)
    assert np.isfinite(y).all()
    assert (preprocess.normalize_percentile(np.full((9, 9), 7, np.uint8)) == 0).all()
    with pytest.raises(ValueError, match="no finite"):
        preprocess.to_float(np.full((4, 4), np.nan))


def test_pad_to_multiple_roundtrip():
    x = np.arange(5 * 7, dtype=np.float32).reshape(1, 5, 7)
    padded, crop = preprocess.pad_to_multiple(x, 16)
    assert padded.shape == (1, 16, 16)
    np.testing.assert_array_equal(padded[(slice(None),) + crop], x)


# ---------------------------------------------------------------- tiling
@pytest.mark.parametrize("shape,tile,overlap", [((512, 512), 512, 64), ((1000, 700), 256, 48), ((64, 2000), 128, 32)])
def test_tile_cores_partition_the_image(shape, tile, overlap):
    plan = tiling.plan_tiles(shape, tile, overlap)
    cover = np.zeros(shape, np.int32)
    for t in plan:
        cover[t.core] += 1
        # the core lies inside the tile with at least overlap/2 context where there is a neighbour
        assert t.read[0].start <= t.core[0].start and t.core[0].stop <= t.read[0].stop
        assert t.read[1].start <= t.core[1].start and t.core[1].stop <= t.read[1].stop
    assert (cover == 1).all()


# ---------------------------------------------------------------- postprocess
def test_touching_disks_are_separated():
    truth = disks((80, 120), [(40, 30), (40, 52), (40, 90)], 12)  # first two touch
    labels = postprocess.probabilities_to_labels(probabilities_from_labels(truth))
    assert labels.max() == 3
    assert average_precision(truth, labels, 0.9) == 1.0


def test_relabel_and_remove_small_match_skimage():
    rng = np.random.default_rng(1)
    labels = measure.label(rng.random((96, 96)) > 0.7)
    ours = postprocess.remove_small_objects(labels, 5)
    ref = morphology.remove_small_objects(labels, max_size=4)  # removes < 5 pixels
    np.testing.assert_array_equal(ours, ref)
    relabelled = postprocess.relabel_sequential(ours * 7)
    ref_rel = segmentation.relabel_sequential(ours * 7)[0]
    assert relabelled.max() == ref_rel.max()
    assert average_precision(ref_rel, relabelled, 0.99) == 1.0


def test_relabel_numbers_objects_in_raster_order():
    rng = np.random.default_rng(2)
    labels = np.zeros((64, 80), np.int32)  # overlapping boxes of unsorted, gappy ids
    for value, (y, x) in zip(rng.permutation(np.arange(3, 3000, 7))[:150], rng.integers(0, (64, 80), (150, 2))):
        labels[y:y + 3, x:x + 4] = value
    out = postprocess.relabel_sequential(labels)
    flat = labels.ravel()
    ids, first = np.unique(flat[flat > 0], return_index=True)
    expected = np.zeros(flat.max() + 1, np.int64)
    expected[ids[np.argsort(np.flatnonzero(flat > 0)[first])]] = np.arange(1, len(ids) + 1)
    np.testing.assert_array_equal(out, expected[labels])
    assert out.dtype == np.uint16
    assert postprocess.relabel_sequential(np.zeros((0, 5), np.int32)).shape == (0, 5)
    assert not postprocess.relabel_sequential(np.zeros((4, 5), np.int32)).any()


def test_fill_holes():
    labels = disks((40, 40), [(20, 20)], 10)
    labels[18:22, 18:22] = 0
    filled = postprocess.fill_holes(labels)
    assert (filled[18:22, 18:22] == 1).all()


def test_fill_holes_gives_each_hole_pixel_its_nearest_object():
    """fill_holes fills each hole from a window around it; the result equals one distance
    transform over the whole image, also where several objects enclose a hole together, where
    one object encloses it (filled from its rim, as the flow models' specks are), where holes
    touch the border (not holes) or are as big as the image."""
    rng = np.random.default_rng(0)
    yy, xx = np.ogrid[:96, :96]
    for _ in range(60):
        labels = np.zeros((96, 96), np.int32)
        for k in range(1, rng.integers(2, 14)):
            y, x, r = rng.integers(0, 96), rng.integers(0, 96), rng.integers(3, 30)
            d2 = (yy - y) ** 2 + (xx - x) ** 2
            labels[(d2 <= r * r) & (d2 > (r * rng.uniform(0.2, 0.8)) ** 2)] = k
        labels[rng.random(labels.shape) < 0.05] = 0  # specks
        holes = ndi.binary_fill_holes(labels > 0) & (labels == 0)
        iy, ix = ndi.distance_transform_edt(labels == 0, return_distances=False, return_indices=True)
        expected = np.where(holes, labels[iy, ix], labels)
        np.testing.assert_array_equal(postprocess.fill_holes(labels), expected)
    frame = np.ones((50, 60), np.int32)
    frame[1:-1, 1:-1] = 0  # one hole almost the size of the image
    assert (postprocess.fill_holes(frame) == 1).all()
    assert postprocess.fill_holes(np.zeros((0, 4), np.int32)).shape == (0, 4)


def test_orphan_foreground_without_seed_is_kept():
    truth = disks((40, 40), [(20, 20)], 6)
    prob = probabilities_from_labels(truth)
    prob[2] += prob[1]  # all boundary, no interior seed
    prob[1] = 0
    assert postprocess.probabilities_to_labels(prob).max() == 1


def nearest_own_seed(foreground, seed_mask, min_seed_size=4, min_size=12):
    """masks_to_labels by its definition: one distance transform over the whole image per
    foreground component, to that component's seeds only."""
    seeds = postprocess.remove_small_objects(ndi.label(seed_mask)[0], min_seed_size)
    seeds[~foreground] = 0
    components, n = ndi.label(foreground)
    labels = np.zeros(foreground.shape, np.int64)
    for c in range(1, n + 1):
        own = np.where(components == c, seeds, 0)
        if own.any():
            iy, ix = ndi.distance_transform_edt(own == 0, return_distances=False, return_indices=True)
            labels[components == c] = own[iy, ix][components == c]
        else:
            labels[components == c] = 10_000 + c
    labels = postprocess.remove_small_objects(postprocess.fill_holes(labels), min_size)
    return postprocess.relabel_sequential(labels)


def test_pixels_join_the_nearest_seed_of_their_own_component():
    rng = np.random.default_rng(3)
    for _ in range(30):
        shape = tuple(rng.integers(20, 120, 2))
        smooth = ndi.gaussian_filter(rng.random(shape), rng.uniform(1, 4))
        foreground = smooth > np.quantile(smooth, rng.uniform(0.3, 0.7))
        seed_mask = (ndi.gaussian_filter(rng.random(shape), 1.5) > 0.55) & foreground
        np.testing.assert_array_equal(postprocess.masks_to_labels(foreground, seed_mask),
                                      nearest_own_seed(foreground, seed_mask))
    # two touching-free nuclei: a pixel of the right one is nearer the left one's seed
    foreground = np.zeros((20, 40), bool)
    foreground[5:15, 2:19] = foreground[5:15, 20:38] = True
    seed_mask = np.zeros_like(foreground)
    seed_mask[8:12, 14:18] = seed_mask[8:12, 33:37] = True
    labels = postprocess.masks_to_labels(foreground, seed_mask)
    assert (labels[foreground] > 0).all() and labels.max() == 2


def test_nested_components_share_one_transform():
    """Concentric rings, each two seeds: their boxes overlap, so after four rings the rest
    go through one transform (nearest seed overall; here always the ring's own)."""
    yy, xx = np.ogrid[:200, :200]
    radius = np.hypot(yy - 100, xx - 100)
    foreground = (radius.astype(int) % 6 < 4) & (radius < 99)
    seed_mask = foreground & (np.abs(xx - 100) > 1)
    labels = postprocess.masks_to_labels(foreground, seed_mask)
    np.testing.assert_array_equal(labels, nearest_own_seed(foreground, seed_mask))
    assert labels.max() == 2 * 17 and (labels[foreground] > 0).all()


def test_separated_seeds_keep_touching_objects_apart():
    """Each object's pixels whose 3 x 3 neighbourhood is all that object (scikit-image's erosion of
    each object alone by a square), so that objects touching side by side or corner to corner
    are separate seeds: one cell grows from each."""
    labels = np.zeros((30, 40), np.int32)
    labels[5:15, 3:13] = 1
    labels[5:15, 13:23] = 2            # touches 1 along a side
    labels[15:25, 23:33] = 3           # touches 2 at a corner
    labels[20:22, 3:5] = 4             # too thin to keep a core
    seeds = postprocess.separated_seeds(labels)
    expected = np.zeros_like(seeds)
    for k in range(1, 5):
        expected |= morphology.binary_erosion(labels == k, np.ones((3, 3), bool))
    np.testing.assert_array_equal(seeds, expected)
    assert ndi.label(seeds)[1] == 3
    cells = postprocess.masks_to_labels(labels > 0, seeds, min_seed_size=1, min_size=1)
    # the thin object apart from the others has no seed and stays an object of its own
    assert cells.max() == 4 and all(len(np.unique(cells[seeds & (labels == k)])) == 1 for k in (1, 2, 3))


def test_trim_to_contrast_removes_the_halo_of_a_blurred_nucleus():
    """A bright disk blurred into a dim halo, outlined with its halo (as the model outlines blurred
    nuclei, IoU 0.53 and 0.62): trimmed at half its contrast over the ring around it, it nears
    the disk (0.78, 0.88); at a fifth (the default models' setting) the faint outer halo goes
    (0.61, 0.71). The rule ignores an affine change of intensities, and 0 keeps every pixel."""
    yy, xx = np.mgrid[:64, :96]
    disk = lambda cy, cx, r: (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
    truth = np.zeros((64, 96), np.int32)
    truth[disk(22, 28, 10)] = 1                           # numbered in raster order
    truth[disk(34, 66, 14)] = 2
    image = ndi.gaussian_filter(np.where(truth > 0, 1000.0, 100.0), 2.5)
    wide = segmentation.expand_labels(truth, 4)           # outlines 4 px too wide
    trimmed, half = (postprocess.trim_to_contrast(wide, image, f) for f in (0.2, 0.5))
    iou = lambda a, b: (a & b).sum() / (a | b).sum()
    assert trimmed.max() == half.max() == 2
    for k in (1, 2):  # only shrinks, keeps the core, and fits the disk better
        assert (half == k).sum() < (trimmed == k).sum() < (wide == k).sum()
        assert (half[truth == k] == k).mean() > 0.95
        assert iou(half == k, truth == k) > iou(wide == k, truth == k) + 0.2
        assert iou(trimmed == k, truth == k) > iou(wide == k, truth == k) + 0.07
    np.testing.assert_array_equal(postprocess.trim_to_contrast(wide, 3.0 * image - 50.0, 0.2), trimmed)
    np.testing.assert_array_equal(postprocess.trim_to_contrast(wide, image, 0.0), wide)
    # uint32 labels (over 65535 objects), which np.bincount refuses as they are in the page
    many = np.where(wide == 2, 70000, wide).astype(np.uint32)
    np.testing.assert_array_equal(postprocess.trim_to_contrast(many, image, 0.2), trimmed)
    # an object with no background around it (the whole image) is kept whole
    np.testing.assert_array_equal(postprocess.trim_to_contrast(np.ones((8, 8), np.int32), image[:8, :8], 0.2),
                                  np.ones((8, 8)))


def test_uint32_above_65535():
    assert postprocess.label_dtype(70000) == np.uint32
    assert postprocess.label_dtype(100) == np.uint16


# ---------------------------------------------------------------- metrics
def test_metrics_constructed():
    truth = disks((64, 64), [(16, 16), (48, 48)], 8)
    pred = disks((64, 64), [(16, 16), (48, 16)], 8)  # one right, one wrong
    r = evaluate_instances(truth, pred)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 1, 1)
    assert r["ap50"] == pytest.approx(1 / 3) and r["f1"] == pytest.approx(0.5)
    assert iou_matrix(truth, truth).diagonal().tolist() == [1.0, 1.0]
    assert evaluate_instances(np.zeros((8, 8), int), np.zeros((8, 8), int))["ap50"] == 1.0


def test_relatively_small_objects_are_dropped():
    """Objects under a fraction of the median object area go (skimage.morphology.remove_small_objects
    at that area as the oracle); with fewer than three objects, or fraction 0, nothing does."""
    rng = np.random.default_rng(3)
    labels = np.zeros((200, 200), np.uint32)  # uint32: the page's bincount refuses it unless cast
    yy, xx = np.mgrid[:200, :200]
    for i, (y, x) in enumerate(rng.integers(20, 180, (12, 2)), 1):
        r = 2 if i % 4 == 0 else 9  # every fourth a speck
        labels[((yy - y) ** 2 + (xx - x) ** 2 <= r * r) & (labels == 0)] = i
    area = np.bincount(labels.ravel().astype(np.intp))[1:]
    area = area[area > 0]
    out = postprocess.remove_relatively_small(labels, 0.15)
    smaller = int(np.ceil(0.15 * np.median(area)))
    want = morphology.remove_small_objects(labels.astype(np.int64), max_size=smaller - 1)  # < smaller px
    np.testing.assert_array_equal(out > 0, want > 0)
    assert out.max() == len(np.unique(want)) - 1 < labels.max()
    # raster-ordered labels stay raster-ordered
    ordered = postprocess.relabel_sequential(labels)
    np.testing.assert_array_equal(postprocess.remove_relatively_small(ordered, 0.15),
                                  postprocess.relabel_sequential(np.where(want > 0, ordered, 0)))
    assert postprocess.remove_relatively_small(labels, 0.0) is labels
    two = np.where(np.isin(labels, np.unique(labels)[1:3]), labels, 0)
    assert postprocess.remove_relatively_small(two, 0.9) is two
