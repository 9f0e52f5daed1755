"""piximi_py.export: every file is reopened with the reference library and
compared with the labels (tifffile, PIL, csv, pycocotools, roifile)."""
import csv
import io
import json
import zipfile

import numpy as np
import pytest
import tifffile
from PIL import Image

from piximi_py import export
from piximi_py.measure import regionprops_table
from realdata import stardist_sample


@pytest.fixture(scope="module")
def real():
    image_path, mask_path = stardist_sample()
    return tifffile.imread(image_path), tifffile.imread(mask_path).astype(np.uint16)


def fill_polygon(points_xy: np.ndarray, shape) -> np.ndarray:
    """Pixels whose centre lies inside a polygon with pixel-corner vertices."""
    from skimage.draw import polygon2mask

    return polygon2mask(shape, np.asarray(points_xy, float)[:, ::-1] - 0.5)


def test_labels_tiff_uint16_imagej(real):
    _, labels = real
    data = export.labels_tiff(labels, pixel_size=0.65)
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        assert tif.is_imagej
        back = tif.asarray()
        xres = tif.pages[0].tags["XResolution"].value
        assert tif.imagej_metadata.get("unit") in ("um", "micron")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, labels)
    assert xres[1] / xres[0] == pytest.approx(0.65, rel=1e-6)


def test_labels_tiff_uint32_above_65535():
    labels = np.zeros((300, 300), np.uint32)
    labels.ravel()[::2] = np.arange(1, 45001) * 2    # ids up to 90000
    data = export.labels_tiff(labels)
    back = tifffile.imread(io.BytesIO(data))
    assert back.dtype == np.uint32
    np.testing.assert_array_equal(back, labels)
    # its pixel size in centimetres (a plain TIFF's default unit is the inch), read back as written
    from piximi_py.io import describe_image

    sized = export.labels_tiff(labels, pixel_size=(0.5, 0.25))
    with tifffile.TiffFile(io.BytesIO(sized)) as tif:
        assert tif.pages[0].tags["ResolutionUnit"].value == 3
    assert describe_image(sized)["pixel_size"] == pytest.approx([0.5, 0.25])
    assert describe_image(export.labels_tiff(labels[:, :100] // 2, pixel_size=0.5))["pixel_size"] == \
        pytest.approx([0.5, 0.5])


def test_mask_and_overlay(real):
    image, labels = real
    mask = tifffile.imread(io.BytesIO(export.mask_tiff(labels)))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    np.testing.assert_array_equal(mask > 0, labels > 0)
    for mode in ("outline", "fill"):
        png = np.asarray(Image.open(io.BytesIO(export.overlay_png(image, labels, mode=mode))))
        assert png.shape == labels.shape + (3,)
        coloured = (png[..., 0] != png[..., 1]) | (png[..., 1] != png[..., 2])
        assert not coloured[labels == 0].any()          # background stays gray
        frac = coloured[labels > 0].mean()
        assert (frac > 0.9) if mode == "fill" else (0.1 < frac < 0.9)


def test_measurements_csv_round_trip(real):
    image, labels = real
    table = regionprops_table(labels, image, pixel_size=0.5)
    text = export.measurements_csv(table, extra={"image": "a.tif"})
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(table["label"]) and list(rows[0]) == ["image"] + list(table)
    for name, values in table.items():
        np.testing.assert_array_equal(np.array([float(r[name]) for r in rows]), values)
    assert rows[0]["image"] == "a.tif"
    np.testing.assert_allclose(table["area_um2"], table["area"] * 0.25)


def test_rle_matches_pycocotools(real):
    mask_utils = pytest.importorskip("pycocotools.mask")
    _, labels = real
    coco = export.coco_json(labels, file_name="x.tif")
    ids = np.unique(labels)[1:]
    assert [a["id"] for a in coco["annotations"]] == ids.tolist()
    for ann in coco["annotations"]:
        obj = labels == ann["id"]
        ref = mask_utils.encode(np.asfortranarray(obj.astype(np.uint8)))
        assert ann["segmentation"]["counts"] == ref["counts"].decode()
        np.testing.assert_array_equal(mask_utils.decode(ann["segmentation"]).astype(bool), obj)
        assert ann["area"] == obj.sum() == mask_utils.area(ref)
        np.testing.assert_allclose(ann["bbox"], mask_utils.toBbox(ref))
    # uncompressed counts decode too (via frPyObjects)
    raw = export.coco_json(labels[:64, :64], compress=False)["annotations"][0]
    rle = mask_utils.frPyObjects(raw["segmentation"], 64, 64)
    np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), labels[:64, :64] == raw["id"])


def test_coco_polygons_fill_back(real):
    _, labels = real
    coco = json.loads(export.coco_json_bytes(labels, encoding="polygon"))
    assert len(coco["annotations"]) == len(np.unique(labels)) - 1
    exact = 0
    for ann in coco["annotations"]:
        obj = labels == ann["id"]
        filled = np.zeros(labels.shape, bool)
        for poly in ann["segmentation"]:
            filled |= fill_polygon(np.reshape(poly, (-1, 2)), labels.shape)
        exact += np.array_equal(filled, ndi_fill(obj))
    assert exact == len(coco["annotations"])


def ndi_fill(obj):
    from scipy import ndimage as ndi

    return ndi.binary_fill_holes(obj)


def test_roi_zip_reopens_with_roifile(real, tmp_path):
    roifile = pytest.importorskip("roifile")
    _, labels = real
    merged = labels.copy()
    a, b = np.unique(labels)[1:3]
    merged[merged == b] = a                   # an object of two separate parts, as a merge makes
    data = export.roi_zip(merged)
    ids = np.unique(merged)[1:]
    rois = _read_rois(data)
    by_object = {}
    for roi in rois:
        assert roi.roitype == roifile.ROI_TYPE.TRACED
        by_object.setdefault(int(roi.name.split("-")[0]), []).append(roi)
    assert sorted(by_object) == ids.tolist()
    assert [r.name for r in by_object[a]] == [f"{a:05d}", f"{a:05d}-part2"]
    for i in ids:
        # the object's ROIs, filled, give back its pixels (holes filled); the first is its largest part
        filled = np.zeros(labels.shape, bool)
        for roi in by_object[i]:
            filled |= fill_polygon(roi.coordinates(), labels.shape)
        np.testing.assert_array_equal(filled, ndi_fill(merged == i))
        first = fill_polygon(by_object[i][0].coordinates(), labels.shape)
        np.testing.assert_array_equal(first, ndi_fill(largest_part(merged == i)))
    # roifile's own zip reader agrees
    path = tmp_path / "rois.zip"
    path.write_bytes(data)
    assert [r.name for r in roifile.roiread(path)] == [r.name for r in rois]


def largest_part(obj):
    """The largest 4-connected part (an ImageJ ROI is one polygon)."""
    from scipy import ndimage as ndi

    parts, n = ndi.label(obj)
    if n <= 1:
        return obj
    return parts == 1 + np.argmax(np.bincount(parts.ravel())[1:])


def _read_rois(data: bytes):
    import roifile

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [roifile.ImagejRoi.frombytes(zf.read(n)) for n in zf.namelist()]


def test_outlines_holes_and_diagonal_contacts():
    mask = np.zeros((8, 8), bool)
    mask[1:6, 1:6] = True
    mask[3, 3] = False                   # a hole
    mask[6, 6] = True                    # touches only diagonally: a separate outline
    loops = export.outlines(mask)
    signs = sorted(np.sign(export._signed_area(p)) for p in loops)
    assert signs == [-1, 1, 1]
    assert export.outlines(np.ones((1, 1), bool))[0].tolist() == [[0, 0], [1, 0], [1, 1], [0, 1]]


def test_display_of_8_and_16_bit_images_by_lookup_table(real):
    """8/16-bit gray images are shown through a lookup table (no float copies of the image):
    the same pixels as the float path, with automatic and given limits and for a flat image."""
    image, _ = real
    rng = np.random.default_rng(0)
    for a in (image, rng.integers(0, 256, (60, 70)).astype(np.uint8), np.full((8, 9), 7, np.uint16)):
        for limits in (None, (10.0, 200.0)):
            fast = export._display(a, limits)
            assert fast.dtype == np.uint8
            np.testing.assert_array_equal(fast, export._display(a.astype(np.float32), limits))
