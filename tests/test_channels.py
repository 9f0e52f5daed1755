"""Channel assignment of multi-channel (whole-cell) models, and cells linked to their nuclei."""
from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from realdata import stardist_sample

from piximi_py import channels as C
from piximi_py.io import read_image, read_image_bytes
from piximi_py.measure import link_nuclei, nucleus_columns, regionprops_table

ROLES = ["cyto", "nuclei"]


@pytest.fixture(scope="module")
def sample():
    image_path, mask_path = stardist_sample()
    return read_image(image_path), read_image(mask_path).astype(np.int32)


def _two_channel_tiff(a, b, names=None) -> bytes:
    buf = io.BytesIO()
    meta = {"axes": "CYX"}
    if names:
        meta["Channel"] = {"Name": names}
    tifffile.imwrite(buf, np.stack([a, b]), ome=True, metadata=meta)
    return buf.getvalue()


def test_keep_channels_reads_every_channel(sample):
    image, _ = sample
    other = (image.max() - image).astype(image.dtype)
    data = _two_channel_tiff(image, other)
    both = read_image_bytes(data, keep_channels=True)
    assert both.shape == image.shape + (2,)
    np.testing.assert_array_equal(both[..., 0], image)
    np.testing.assert_array_equal(both[..., 1], other)
    # without keep_channels the first plane, as before; an index still picks one
    np.testing.assert_array_equal(read_image_bytes(data), image)
    np.testing.assert_array_equal(read_image_bytes(data, index={"C": 1}, keep_channels=True), other)


def test_default_channels_from_names_then_colours(sample):
    image, _ = sample
    stack = np.stack([image, image // 2 + 1], axis=-1)
    assert C.default_channels(stack, ROLES, ["DAPI", "Phalloidin"]) == {"cyto": 1, "nuclei": 0}
    assert C.default_channels(stack, ROLES, ["membrane", "Hoechst 33342"]) == {"cyto": 0, "nuclei": 1}
    assert C.default_channels(image, ROLES) == {"cyto": 0, "nuclei": None}
    rgb = np.zeros(image.shape + (3,), image.dtype)
    rgb[..., 1], rgb[..., 2] = image, image // 3
    assert C.default_channels(rgb, ROLES) == {"cyto": 1, "nuclei": 2}
    rgb[..., 2] = 0  # an empty blue channel is no nuclear stain
    assert C.default_channels(rgb, ROLES) == {"cyto": 1, "nuclei": None}
    grey_as_rgb = np.repeat(image[..., None], 3, axis=-1)  # copies hold nothing new
    assert C.default_channels(grey_as_rgb, ROLES) == {"cyto": 0, "nuclei": None}


@pytest.mark.parametrize("bad, message", [
    ({"cyto": 2}, "not in the image"),
    ({"cyto": -1}, "not in the image"),
    ({"cyto": 0, "nucleus": 1}, "unknown channel role 'nucleus'"),
    ({"nuclei": 1}, "'cyto' channel is needed"),
    ({"cyto": 1, "nuclei": 1}, "same channel"),
    ({"cyto": "green"}, "must be a channel number"),
    ({"cyto": 0.5}, "must be a channel number"),
    ([0, 1], "must map roles"),
])
def test_bad_channels_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        C.check_channels(bad, ROLES, 2)


def test_parse_and_stack(sample):
    image, _ = sample
    assert C.parse_channels("cyto=1, nuclei=0") == {"cyto": "1", "nuclei": "0"}
    assert C.check_channels(C.parse_channels("cyto=1,nuclei=none"), ROLES, 2) == {"cyto": 1, "nuclei": None}
    with pytest.raises(ValueError, match="ROLE=CHANNEL"):
        C.parse_channels("cyto:1")
    stack = np.stack([image, image.max() - image], axis=-1)
    x = C.stack_channels(stack, {"cyto": 1, "nuclei": None}, ROLES)
    assert x.shape == (2,) + image.shape and x.dtype == np.float32
    assert not x[1].any()  # an absent nuclear channel reads zeros
    lo, hi = np.percentile(x[0], [1, 99.8])
    assert abs(lo) < 1e-3 and abs(hi - 1) < 1e-3  # each channel normalized on its own


def test_each_cell_gets_the_nucleus_inside_it(sample):
    from skimage.segmentation import expand_labels

    _, nuclei = sample
    cells = expand_labels(nuclei, 6)
    nucleus_of, count = link_nuclei(cells, nuclei)
    ids = np.unique(nuclei[nuclei > 0])
    np.testing.assert_array_equal(nucleus_of[ids], ids)
    np.testing.assert_array_equal(count[ids], 1)
    # a cell that lost its nucleus is marked 0; two nuclei in one cell: the larger part is named
    merged = cells.copy()
    a, b = ids[:2]
    merged[merged == b] = a
    no_nucleus = nuclei.copy()
    no_nucleus[no_nucleus == ids[5]] = 0
    nucleus_of, count = link_nuclei(merged, no_nucleus)
    assert count[a] == 2 and nucleus_of[a] in (a, b)
    assert nucleus_of[ids[5]] == 0 and count[ids[5]] == 0
    sizes = np.bincount(nuclei.ravel())
    assert nucleus_of[a] == (a if sizes[a] >= sizes[b] else b)
    table = nucleus_columns(regionprops_table(merged), merged, no_nucleus)
    row = list(table["label"]).index(ids[5])
    assert table["nucleus_label"][row] == 0 and table["nuclei"][row] == 0
    with pytest.raises(ValueError, match="one shape"):
        link_nuclei(cells, nuclei[:-1])


def test_links_hold_for_labels_whose_pairs_pass_two_to_the_31():
    """Cells and nuclei numbered near 70,000 (a large field): the pair key nucleus * cells + cell
    passes 2**31, which the page's 32-bit np.intp cannot hold; the links are still each pair's."""
    cells = np.zeros((4, 8), np.uint32)
    nuclei = np.zeros_like(cells)
    cells[:, :4], cells[:, 4:] = 70_000, 69_999
    nuclei[1:3, 1:3], nuclei[1:3, 5:7] = 68_000, 70_001
    nucleus_of, count = link_nuclei(cells, nuclei)
    assert 70_001 * (70_000 + 1) > 2 ** 31
    assert nucleus_of[70_000] == 68_000 and nucleus_of[69_999] == 70_001
    assert count[70_000] == count[69_999] == 1 and count.sum() == 2
