"""The stain front end (piximi_py.preprocess) against scikit-image on a real stained slide
(scikit-image's immunohistochemistry sample, H-DAB), the model suggestion, and the
hematoxylin route through the pipeline."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realdata import shared_set, stardist_sample  # noqa: E402

skimage = pytest.importorskip("skimage")
from skimage import color, data  # noqa: E402

import piximi_py  # noqa: E402
from piximi_py import preprocess as P  # noqa: E402
from piximi_py.io import read_image  # noqa: E402
from piximi_py.models import suggest_model  # noqa: E402


@pytest.fixture(scope="module")
def slide():
    return data.immunohistochemistry()


def test_colour_deconvolution_equals_scikit_image(slide):
    np.testing.assert_allclose(P.separate_stains(slide), color.rgb2hed(slide), atol=1e-12)
    np.testing.assert_allclose(P.separate_stains(slide, P.RGB_FROM_HDX),
                               color.separate_stains(slide, color.hdx_from_rgb), atol=1e-12)
    np.testing.assert_allclose(P.RGB_FROM_HED, color.rgb_from_hed)
    as_float = slide.astype(np.float64) / 255
    np.testing.assert_allclose(P.separate_stains(as_float), color.rgb2hed(as_float), atol=1e-12)
    density = P.hematoxylin_density(slide)
    assert density.dtype == np.float32 and density.shape == slide.shape[:2]
    np.testing.assert_allclose(density, color.rgb2hed(slide)[..., 0], atol=1e-6)


def test_macenko_vectors_and_normalization(slide):
    vectors = P.stain_vectors_macenko(slide)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-9)
    hematoxylin = P.RGB_FROM_HED[0] / np.linalg.norm(P.RGB_FROM_HED[0])
    assert vectors[0] @ hematoxylin > 0.9  # this slide's hematoxylin is close to the textbook one
    own = P.hematoxylin_density(slide, "macenko")
    fixed = P.hematoxylin_density(slide)
    assert np.corrcoef(own.ravel(), fixed.ravel())[0, 1] > 0.8
    normalized = P.normalize_stains(slide)
    assert normalized.dtype == np.uint8 and normalized.shape == slide.shape
    again = P.stain_vectors_macenko(normalized)
    np.testing.assert_allclose(again[:2], P.MACENKO_REFERENCE[0] / np.linalg.norm(P.MACENKO_REFERENCE[0], axis=1,
                                                                                  keepdims=True), atol=0.1)
    with pytest.raises(ValueError, match="colour image"):
        P.separate_stains(slide[..., 0])
    with pytest.raises(ValueError, match="unknown stain separation"):
        P.hematoxylin_density(slide, "guess")
    white = np.full((64, 64, 3), 255, np.uint8)  # no stained pixel: the textbook vectors
    np.testing.assert_array_equal(P.stain_vectors_macenko(white), P.RGB_FROM_HED)


def test_stained_slides_get_the_brightfield_model(slide, models_dir):
    specs = piximi_py.load_models(models_dir)
    stained, why = P.looks_stained(slide)
    assert stained and "bright background" in why
    assert suggest_model(specs, slide)[0].id == "nuclei_hematoxylin"
    image_path, _ = stardist_sample()
    fluorescence = read_image(image_path)
    assert not P.looks_stained(fluorescence)[0]
    assert suggest_model(specs, fluorescence)[0].id == "nuclei"
    scaled = (fluorescence / fluorescence.max() * 255).astype(np.uint8)
    composite = np.stack([np.zeros_like(scaled), scaled, scaled // 2], axis=-1)  # a colour fluorescence merge
    stained, why = P.looks_stained(composite)
    assert not stained and "dark background" in why


def test_hematoxylin_route_segments_stained_nuclei(models_dir):
    root = shared_set("dsb2018_stage1test_color")
    from piximi_py.metrics import average_precision

    path = sorted((root / "images").glob("*.tif"))[1]
    image = read_image(path, color=True)
    truth = read_image(root / "masks" / path.name).astype(np.int32)
    labels = piximi_py.segment(str(path), model="nuclei_hematoxylin", models_dir=models_dir)
    grey = piximi_py.segment(str(path), model="nuclei_unet", models_dir=models_dir)  # same file, intensity
    assert labels.shape == image.shape[:2]
    assert average_precision(truth, labels) > average_precision(truth, grey) + 0.2


def test_stain_leakage_augmentation(slide):
    """Training's "mixed" H&E input: channel 0 of the stain densities is exactly what a stain model
    reads; mixing nothing in gives it back, and a mix adds the other stains' densities linearly."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from training.data import mix_stains, stain_densities

    densities = stain_densities(slide)
    np.testing.assert_allclose(densities[..., 0], P.normalize_percentile(P.hematoxylin_density(slide)),
                               atol=1e-5)
    crop = np.moveaxis(densities[:64, :64], -1, 0)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(mix_stains(crop, rng, 0.0), crop[:1])
    a, b = np.random.default_rng(1).uniform(-0.25, 0.25, 2)
    np.testing.assert_allclose(mix_stains(crop, np.random.default_rng(1), 0.25),
                               crop[:1] + a * crop[1:2] + b * crop[2:3], atol=1e-6)
