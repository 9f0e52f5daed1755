"""The size step: a given or estimated nucleus diameter, and rescaling to the model's."""
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

import piximi_py
from piximi_py import rescale
from piximi_py.diameter import check_diameter, diameter_from_um, median_diameter
from piximi_py.metrics import evaluate_instances
from piximi_py.postprocess import threshold_probabilities
from realdata import ROOT, stardist_sample


@pytest.fixture(scope="module")
def sample():
    image_path, mask_path = stardist_sample()
    return tifffile.imread(image_path), tifffile.imread(mask_path).astype(np.int32)


def disks(shape, centres, radius):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    labels = np.zeros(shape, np.int32)
    for i, (y, x) in enumerate(centres, 1):
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2] = i
    return labels


# ------------------------------------------------------------------ pure parts
@pytest.mark.parametrize("bad, words", [(0, "positive"), (-3, "positive"), (float("nan"), "finite"),
                                        (float("inf"), "finite"), ("abc", "number"), (True, "number"),
                                        ([20], "number"), (1.5, "not resolved"), (600, "larger than the image")])
def test_bad_diameters_are_refused_clearly(bad, words):
    with pytest.raises(ValueError, match=words):
        check_diameter(bad, (512, 512))


def test_good_diameters_pass():
    assert check_diameter(None) is None
    assert check_diameter(17) == 17.0 and check_diameter("23.5") == 23.5
    assert diameter_from_um(6.5, [0.325, 0.325]) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="pixel size"):
        diameter_from_um(6.5, None)


def test_median_diameter_leaves_out_cut_objects():
    labels = disks((200, 200), [(40, 40), (40, 120), (120, 40), (120, 120), (160, 160), (0, 100)], 10)
    d, n = median_diameter(labels)
    assert n == 5  # the disk cut by the top edge does not count
    assert d == pytest.approx(2 * np.sqrt((labels == 1).sum() / np.pi))
    assert median_diameter(np.zeros((5, 5), int)) == (pytest.approx(np.nan, nan_ok=True), 0)


def test_scale_factor_leaves_near_sizes_alone():
    assert rescale.scale_factor(20, 20) == 1.0
    assert rescale.scale_factor(22, 20) == 1.0           # within the models' own scale jitter
    assert rescale.scale_factor(40, 20) == pytest.approx(0.5)
    assert rescale.scale_factor(5, 20) == pytest.approx(4.0)
    assert rescale.scale_factor(5, 0) == 1.0             # a model without a diameter
    with pytest.raises(ValueError, match="limit"):
        rescale.check_rescaled_size((4000, 4000), 5.0)


@pytest.mark.parametrize("shape", [(37, 91), (256, 300), (1000, 1000)])
def test_resize_matches_scikit_image(shape):
    """Bilinear at pixel centres, Gaussian anti-aliasing when shrinking: scikit-image's
    ``resize(order=1, anti_aliasing=True, mode="edge")``."""
    from skimage.transform import resize as sk_resize

    rng = np.random.default_rng(0)
    image = rng.random((200, 160)).astype(np.float32)
    ours = rescale.resize(image, shape)
    sigma = [max(0, (a / b - 1) / 2) for a, b in zip(image.shape, shape)]
    theirs = sk_resize(image, shape, order=1, mode="edge", anti_aliasing=any(sigma),
                       anti_aliasing_sigma=sigma if any(sigma) else None)
    assert ours.shape == shape and ours.dtype == np.float32
    # scikit-image smooths with mode "reflect" where we hold the edge: compare inside
    inner = tuple(slice(int(np.ceil(4 * s * b / a)) + 2, n - int(np.ceil(4 * s * b / a)) - 2)
                  for s, a, b, n in zip(sigma, image.shape, shape, shape))
    np.testing.assert_allclose(ours[inner], theirs[inner], atol=2e-5)


@pytest.mark.parametrize("shape_in, shape_out", [((256, 256), (512, 512)), ((512, 300), (256, 150)),
                                                  ((37, 53), (100, 41)), ((600, 7), (601, 9)), ((1, 5), (3, 9))])
def test_resampling_is_scipys_linear_interpolation(shape_in, shape_out):
    """The separable numpy resampling computes what ``scipy.ndimage.affine_transform(order=1,
    mode="nearest")`` does at pixel centres, edges held, whole or by rows (up to float32 rounding)."""
    rng = np.random.default_rng(2)
    plane = rng.random(shape_in).astype(np.float32)
    (sy, oy), (sx, ox) = rescale._axis_map(shape_in[0], shape_out[0]), rescale._axis_map(shape_in[1], shape_out[1])
    for rows in (slice(0, shape_out[0]), slice(shape_out[0] // 3, shape_out[0])):
        scipy_rows = ndi.affine_transform(plane, (sy, sx), offset=(oy + rows.start * sy, ox),
                                          output_shape=(rows.stop - rows.start, shape_out[1]), order=1,
                                          mode="nearest", prefilter=False)
        ours = rescale._resample_plane(plane, shape_out, rows)
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, scipy_rows, atol=1e-6)


def test_resample_masks_in_chunks_equals_whole():
    rng = np.random.default_rng(1)
    logits = rescale.resize(rng.normal(size=(3, 40, 50)).astype(np.float32), (97, 131))
    prob = np.exp(logits) / np.exp(logits).sum(0)
    whole = threshold_probabilities(rescale.resize(prob, (300, 410)), 0.5, 0.4)
    for rows in (7, 64, 1000):
        chunked = rescale.resample_masks(prob, (300, 410), 0.5, 0.4, rows_per_chunk=rows)
        for a, b in zip(chunked, whole):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ with the shipped model
def rescaled(image, labels, factor):
    """A real image and its mask as if taken at ``factor`` times the magnification."""
    from training.scales import rescale_case

    return rescale_case(image, labels, factor, max_side=1024)


@pytest.mark.slow
@pytest.mark.parametrize("target", [10, 45, 90])
def test_estimate_on_rescaled_real_image(sample, target):
    """The estimate is within 15 % of the true median diameter on the StarDist image
    rescaled so that its nuclei are 10, 45 and 90 px across."""
    image, labels = sample
    d0, _ = median_diameter(labels)
    img, truth = rescaled(image, labels, target / d0)
    d_true, _ = median_diameter(truth)
    result = piximi_py.segment_image(img)
    assert result.diameter_estimated
    assert abs(result.diameter / d_true - 1) <= 0.15, (result.diameter, d_true)
    assert result.labels.shape == truth.shape
    assert evaluate_instances(truth, result.labels)["ap50"] >= 0.6


def test_given_diameter_rescales_and_maps_back(sample):
    image, truth = sample
    spec = piximi_py.find_model(piximi_py.load_models(), None)
    assert spec.diameter > 0, "the default model states its training diameter"
    d_true, _ = median_diameter(truth)
    big, big_truth = rescaled(image, truth, 3.0)
    given = piximi_py.segment_image(big, diameter=3 * d_true)
    fixed = piximi_py.segment_image(big, diameter=spec.diameter)  # as it is: no rescaling
    assert given.scale == pytest.approx(spec.diameter / (3 * d_true), rel=1e-6) and fixed.scale == 1.0
    assert given.labels.shape == big_truth.shape and not given.diameter_estimated
    # nuclei three times the model's size: rescaled, they are found whole
    assert (evaluate_instances(big_truth, given.labels)["ap50"]
            > evaluate_instances(big_truth, fixed.labels)["ap50"] + 0.1)
    # the labels keep full-resolution edges: no staircase of 1/scale-pixel blocks
    edges = np.count_nonzero(np.diff(given.labels.astype(np.int64), axis=1))
    assert edges >= 0.8 * np.count_nonzero(np.diff(big_truth.astype(np.int64), axis=1))


def test_the_estimates_neighbouring_pass_is_averaged_in_for_free(sample, monkeypatch):
    """The final segmentation reuses the estimate's pass at its scale and averages in the other
    whole passes within REUSE_AVERAGE_RANGE of it (the confirming pass): different labels from the
    reused pass alone, and not one model run more."""
    from piximi_py import estimate as estimator
    from piximi_py.backends.onnxruntime import OnnxRuntimeBackend

    image, labels = sample
    img, truth = rescaled(image, labels, 20 / median_diameter(labels)[0])  # the model's size: reused
    runs = []
    plain_run = OnnxRuntimeBackend.run

    async def counted(self, batch):
        runs.append(batch.shape)
        return await plain_run(self, batch)

    monkeypatch.setattr(OnnxRuntimeBackend, "run", counted)
    averaged = piximi_py.segment_image(img)
    averaged_runs, runs[:] = len(runs), []
    monkeypatch.setattr(estimator, "REUSE_AVERAGE_RANGE", 1.0)   # nothing is near enough: the pass alone
    alone = piximi_py.segment_image(img)
    assert len(runs) == averaged_runs and alone.diameter == averaged.diameter
    assert not np.array_equal(alone.labels, averaged.labels)
    assert evaluate_instances(truth, averaged.labels)["ap50"] >= 0.6


def test_an_estimate_too_small_to_hold_is_capped_not_refused(sample, monkeypatch):
    """A given diameter that would enlarge the image past the size limit is refused; an estimate
    that would (a first pass that saw only specks) enlarges it as far as the limit allows."""
    from piximi_py import pipeline

    image, _ = sample
    image = image[:200, :160]
    monkeypatch.setattr(rescale, "MAX_RESCALED_SIDE", 300)  # the limit, lowered to keep the test short

    async def specks(x, model, backend, progress=None):
        return 4.0, []

    with pytest.raises(ValueError, match="enlarge the image"):
        piximi_py.segment_image(image, diameter=4.0)
    monkeypatch.setattr(pipeline, "estimate_diameter", specks)
    result = piximi_py.segment_image(image)
    assert result.diameter_estimated and result.scale == pytest.approx(rescale.largest_factor(image.shape))
    assert max(rescale.rescaled_shape(image.shape, result.scale)) <= rescale.MAX_RESCALED_SIDE


def test_a_taught_diameter_larger_than_the_image_is_not_an_error(sample):
    """A taught model's diameter replaces an estimate near it (or none), but on an image smaller
    than that diameter it is not the user's value to refuse: the image is segmented as estimated."""
    import dataclasses

    from piximi_py.backends.onnxruntime import OnnxRuntimeBackend
    from piximi_py.pipeline import segment_async

    spec = piximi_py.find_model(piximi_py.load_models(), None)
    backend = OnnxRuntimeBackend(piximi_py.default_models_dir() / spec.file)
    image = sample[0]
    taught = dataclasses.replace(spec, image_diameter=30.0)
    tiny = piximi_py.run_sync(segment_async(np.zeros((24, 24), np.float32), taught, backend))
    assert tiny.count == 0 and tiny.diameter != 30.0
    used = piximi_py.run_sync(segment_async(image, taught, backend))  # its nuclei measure about 26 px
    assert used.diameter == 30.0 and not used.diameter_estimated


def replay_passes(monkeypatch, spec, found, side=512):
    """Run the diameter estimate on a blank ``side``² image whose pass at each scale of ``found``
    measures ``found[scale] = (diameter in px of the image, objects)``, as a real slide's passes
    did; a pass at any other scale finds nothing. Returns the estimate and its passes."""
    from piximi_py import diameter
    from piximi_py import estimate as estimator

    async def blank(x, model, backend, progress=None):
        return np.zeros((3, *x.shape[-2:]), np.float32)

    def measured(labels, min_objects=5):
        scale = min(found, key=lambda s: abs(s * side - labels.shape[1]))
        if abs(scale * side - labels.shape[1]) > 1:
            return float("nan"), 0
        return found[scale][0] * scale, found[scale][1]

    monkeypatch.setattr(estimator, "predict_probabilities", blank)
    monkeypatch.setattr(diameter, "median_diameter", measured)
    x = np.zeros((1, side, side), np.float32)
    return piximi_py.run_sync(estimator.estimate_diameter(x, spec, None))


def test_passes_that_never_agree_give_the_finest_seen_at_the_models_size(monkeypatch):
    """When no two passes agree, the estimate is the finest pass that saw objects at the model's
    size, not the median of such passes: on a frozen H&E section (CryoNuSeg, nuclei 18 px) each
    coarser pass merged more small nuclei into blobs that again looked of the model's size, and
    the median of the passes came out at 53 px."""
    from piximi_py import estimate as estimator

    spec = piximi_py.find_model(piximi_py.load_models(), None)
    # px of the image and objects found, as that slide's passes
    estimate, passes = replay_passes(monkeypatch, spec, {1.0: (21.6, 50), 0.5: (29.9, 50), 0.25: (76.2, 50),
                                                         0.125: (136.3, 50)})
    assert [p.scale for p in passes][:4] == [1.0, 0.5, 0.25, 0.125]
    assert all(estimator._at_size(p, spec) for p in passes[:4])  # each looked of the model's size
    assert estimate == pytest.approx(21.6)


def test_a_whole_cell_model_takes_the_coarsest_unconfirmed_pass(monkeypatch):
    """A whole-cell (flow) model cuts large spread cells into pieces of its own size at fine
    scales: on a phase-contrast field of 68 px cells (Usiigaci) its passes measured 21.6 px at
    scale 1 and 49.1 px at half scale, both of the model's size, and agreed on nothing. Where a
    nuclei model takes the finest such pass (clumps of small nuclei look of its size when coarse),
    a whole-cell model takes the coarsest."""
    from piximi_py import estimate as estimator

    found = {1.0: (21.6, 422), 0.5: (49.1, 107), 0.25: (64.7, 26)}  # px, objects: that field's passes
    cells = piximi_py.find_model(piximi_py.load_models(), "cells")
    estimate, passes = replay_passes(monkeypatch, cells, found, side=1024)
    assert [p.scale for p in passes] == [1.0, 0.5, 0.25]
    assert [estimator._at_size(p, cells) for p in passes] == [True, True, False]
    assert estimate == pytest.approx(49.1)
    nuclei = piximi_py.find_model(piximi_py.load_models(), None)
    scaled = {s: (d * nuclei.diameter / cells.diameter, n) for s, (d, n) in found.items()}  # the same at its size
    assert replay_passes(monkeypatch, nuclei, scaled, side=1024)[0] == pytest.approx(scaled[1.0][0])


def test_two_passes_of_one_or_two_clumps_confirm_nothing(monkeypatch):
    """Two coarse passes that each find one or two objects of the model's size do not confirm a
    diameter: as the passes of a CoNSeP slide (nuclei 20 px) that agreed on 126 px."""
    from piximi_py import estimate as estimator

    spec = piximi_py.find_model(piximi_py.load_models(), None)
    found = {1.0: (19.6, 37), 0.5: (32.3, 10), 0.25: (102.6, 2), 0.125: (126.1, 1)}  # px, objects
    estimate, passes = replay_passes(monkeypatch, spec, found)
    assert [p.scale for p in passes][:4] == [1.0, 0.5, 0.25, 0.125]
    assert estimate == pytest.approx(19.6)
    monkeypatch.setattr(estimator, "ESTIMATE_MIN_OBJECTS", 1)  # the old rule: confirmed at 126 px
    assert replay_passes(monkeypatch, spec, found)[0] == pytest.approx(126.1)


def test_specks_in_large_nuclei_send_the_search_coarser(monkeypatch):
    """Specks or texture inside nuclei far larger than the model's are confirmed at two fine
    scales as readily as small nuclei: on a DAPI image of 142 px nuclei (Kromp et al.) the passes
    agreed on 18 px. Objects that small covering almost nothing send one pass four times coarser;
    it sees the nuclei whole, covering far more, and the search from there confirms them."""
    from piximi_py import estimate as estimator

    spec = piximi_py.find_model(piximi_py.load_models(), None)
    found = {1.0: (14.0, 20), 20 / 14: (17.0, 23),      # specks, agreeing: 17 px, covering 2 %
             0.25: (130.0, 6), 20 / 130: (135.0, 6)}     # the nuclei, covering 30 %
    estimate, passes = replay_passes(monkeypatch, spec, found)
    assert [round(p.scale, 3) for p in passes] == [1.0, 1.429, 0.25, 0.154]
    assert passes[1].cover < estimator.ESTIMATE_SPARSE <= passes[2].cover / estimator.ESTIMATE_FRAGMENTS
    assert estimate == pytest.approx(135.0)
    monkeypatch.setattr(estimator, "ESTIMATE_SPARSE", 0.0)  # without the check: the specks
    assert replay_passes(monkeypatch, spec, found)[0] == pytest.approx(17.0)


@pytest.mark.parametrize("coarse, want", [({}, "nothing there"), ({0.25: (50.0, 3)}, "clumps, never confirmed")])
def test_sparse_small_nuclei_keep_their_estimate(monkeypatch, coarse, want):
    """A few small nuclei cover little of the image too: the coarse pass finds nothing, or clumps
    that no second pass confirms, and the estimate stays theirs."""
    spec = piximi_py.find_model(piximi_py.load_models(), None)
    estimate, passes = replay_passes(monkeypatch, spec, {1.0: (12.0, 8), 20 / 12: (12.3, 8), **coarse})
    assert 0.25 in [p.scale for p in passes], want
    assert estimate == pytest.approx(12.3), want


def test_diameter_in_um_uses_the_pixel_size(sample):
    image, truth = sample
    a = piximi_py.segment_image(image, diameter=30)
    b = piximi_py.segment_image(image, diameter_um=9.75, pixel_size=0.325)
    np.testing.assert_array_equal(a.labels, b.labels)
    with pytest.raises(ValueError, match="pixel size"):
        piximi_py.segment_image(image, diameter_um=9.75)
    with pytest.raises(ValueError, match="not both"):
        piximi_py.segment_image(image, diameter=30, diameter_um=9.75)


@pytest.mark.parametrize("bad", [0, -10, float("nan"), 10 ** 5])
def test_api_refuses_bad_diameter(sample, bad):
    with pytest.raises(ValueError, match="diameter"):
        piximi_py.segment(sample[0], diameter=bad)


def test_cli_diameter(tmp_path):
    image_path, _ = stardist_sample()
    run = [sys.executable, "-m", "piximi_py", "segment", str(image_path), "--out"]
    ok = subprocess.run(run + [str(tmp_path / "a"), "--diameter", "30"], capture_output=True, text=True,
                        cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    rows = (tmp_path / "a" / "run_images.csv").read_text().splitlines()
    assert "diameter" in rows[0].split(",") and ",30.0," in rows[1]
    labels = tifffile.imread(tmp_path / "a" / f"{image_path.stem}_labels.tif")
    np.testing.assert_array_equal(labels, piximi_py.segment(image_path, diameter=30))
    bad = subprocess.run(run + [str(tmp_path / "b"), "--diameter", "-4"], capture_output=True, text=True,
                         cwd=ROOT)
    assert bad.returncode == 2 and "diameter must be positive" in bad.stderr


@pytest.mark.parametrize("any_size", [None, (8.0, 120.0)])
def test_training_crops_show_nuclei_at_the_sizes_asked(sample, any_size):
    """Size-aware training crops show the StarDist image's nuclei at the model's diameter (times the
    random factor); crops "at any size" spread over the whole range the diameter estimate's first
    passes can show the model."""
    from training.data import Sample, random_crop

    image, labels = sample
    d0, _ = median_diameter(labels)
    real = Sample("stardist", image.astype(np.float32), labels, "stardist", d0)
    rng = np.random.default_rng(0)
    sizes = []
    for _ in range(24):
        _, target, _ = random_crop(real, 192, rng, (0.55, 1.8), diameter=20.0, diameters=any_size)
        # the target's classes: a nucleus is its interior plus a 2-px rim all round
        found, count = median_diameter(ndi.label(target == 1)[0], min_objects=1)
        if count:
            sizes.append(found + 4)
    low, high = any_size or (20.0 * 0.55, 20.0 * 1.8)
    # objects cut by the crop's edge and merged touching nuclei blur each crop's median: 25 % either way
    assert low * 0.75 <= min(sizes) and max(sizes) <= high * 1.25, sizes
    if any_size:
        assert min(sizes) < 15 and max(sizes) > 60, sizes  # both ends of the range, not the model's size only
