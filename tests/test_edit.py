"""piximi_py.edit on the real StarDist sample's annotated nuclei; scikit-image as the oracle
for polygon filling."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from realdata import stardist_sample  # noqa: E402

from piximi_py import edit  # noqa: E402


@pytest.fixture(scope="module")
def truth():
    import tifffile

    _, mask = stardist_sample()
    return tifffile.imread(mask).astype(np.uint16)


def _big_object(labels):
    areas = np.bincount(labels.ravel())
    areas[0] = 0
    return int(np.argmax(areas))


def test_polygon_mask_matches_skimage():
    from skimage.draw import polygon

    rng = np.random.default_rng(0)
    for _ in range(50):
        n = rng.integers(3, 9)
        verts = rng.uniform(-5, 45, (n, 2)) + rng.choice([0.0, 0.5], (n, 2))
        ours = edit.polygon_mask((40, 40), verts)
        rr, cc = polygon(verts[:, 1], verts[:, 0], (40, 40))
        ref = np.zeros((40, 40), bool)
        ref[rr, cc] = True
        # skimage counts pixel centres on an edge as inside; the even-odd rule may not
        differ = ours ^ ref
        assert differ.sum() <= 0.02 * max(ref.sum(), 1) + 3, (verts, differ.sum(), ref.sum())


def test_delete_and_box_selection(truth):
    ids = edit.objects_in_box(truth, (0, 0, 127, 127))
    assert ids, "the corner holds objects"
    out = edit.delete_objects(truth, ids)
    assert not np.isin(out, ids).any()
    keep = ~np.isin(truth, ids)
    np.testing.assert_array_equal(out[keep], truth[keep])
    assert truth.max() > 0 and np.isin(truth, ids).any()  # the input is unchanged
    # every selected object lies mostly in the box; an object wholly outside is never selected
    for i in ids:
        ys, xs = np.nonzero(truth == i)
        assert ((ys <= 127) & (xs <= 127)).mean() >= 0.5


def test_label_at(truth):
    ys, xs = np.nonzero(truth)
    assert edit.label_at(truth, xs[0], ys[0]) == truth[ys[0], xs[0]]
    assert edit.label_at(truth, -3, 5) == 0


def test_split_and_merge_give_back_the_object(truth):
    k = _big_object(truth)
    ys, xs = np.nonzero(truth == k)
    cy = int(np.median(ys))
    cut = edit.split_object(truth, k, (xs.min() - 2, cy), (xs.max() + 2, cy))
    parts = np.unique(cut[truth == k])
    assert len(parts) == 2 and k in parts and int(truth.max()) + 1 in parts
    # no pixel lost or moved: the parts cover the object exactly, the rest is untouched
    np.testing.assert_array_equal(cut > 0, truth > 0)
    np.testing.assert_array_equal(cut[truth != k], truth[truth != k])
    top, bottom = (cut == parts[0]), (cut == parts[1])
    assert abs(np.nonzero(top)[0].mean() - np.nonzero(bottom)[0].mean()) > 2
    merged = edit.merge_objects(cut, parts)
    np.testing.assert_array_equal(merged, truth)
    # a line that misses the object leaves it whole
    np.testing.assert_array_equal(edit.split_object(truth, k, (0, 0), (1, 0)), truth)


def test_add_object_replaces_what_it_covers(truth):
    k = _big_object(truth)
    mask = ndi_dilate(truth == k)
    out, new_id, removed = edit.add_object(truth, mask)
    assert new_id == int(truth.max()) + 1 and k in removed
    assert (out == new_id).sum() == mask.sum() and not (out == k).any()
    # without overwrite the neighbours keep their pixels
    out2, new2, _ = edit.add_object(truth, mask, overwrite=False, replace_fraction=1.1)
    np.testing.assert_array_equal(out2[truth > 0], truth[truth > 0])
    assert (out2 == new2).sum() == (mask & (truth == 0)).sum()
    with pytest.raises(ValueError, match="empty"):
        edit.add_object(truth, np.zeros_like(mask))


def ndi_dilate(mask, n=2):
    from scipy import ndimage as ndi

    return ndi.binary_dilation(mask, iterations=n)


def test_paint_and_erase(truth):
    k = _big_object(truth)
    ys, xs = np.nonzero(truth == k)
    centre = (float(np.median(xs)), float(np.median(ys)))
    erased = edit.paint(truth, [centre], 3, 0)
    assert (erased == 0).sum() > (truth == 0).sum() and (erased == k).sum() < (truth == k).sum()
    new = int(truth.max()) + 1
    painted = edit.paint(truth, [(5, 5), (40, 5)], 2, new)
    np.testing.assert_array_equal(painted[truth > 0], truth[truth > 0])   # only background taken
    assert (painted == new).sum() > 0
    over = edit.paint(truth, [centre], 3, new, overwrite=True)
    assert (over == new).sum() >= 25
    with pytest.raises(ValueError, match="radius"):
        edit.paint(truth, [centre], 0, 1)


def test_ids_beyond_uint16_grow_the_dtype():
    labels = np.zeros((8, 8), np.uint16)
    labels[2:5, 2:5] = 65535
    out, new_id, _ = edit.add_object(labels, np.pad(np.ones((2, 2), bool), ((5, 1), (5, 1))))
    assert new_id == 65536 and out.dtype == np.uint32 and out[6, 6] == 65536


def test_uint32_labels_never_reach_bincount_as_uint32(monkeypatch):
    """In the page (wasm32, numpy 2.0) bincount refuses uint32 labels, which a field of more than
    65535 objects or an edit past that id has: every edit, the diameter a taught model measures and
    the small-object filter count in intp. Here bincount is made to refuse them as the page's does."""
    from piximi_py.diameter import median_diameter
    from piximi_py.postprocess import remove_small_objects

    bincount = np.bincount

    def as_in_the_page(x, *args, **kwargs):
        if np.asarray(x).dtype == np.uint32:
            raise TypeError("Cannot cast array data from dtype('uint32') to dtype('int32') according to the "
                            "rule 'safe'")
        return bincount(x, *args, **kwargs)

    monkeypatch.setattr(np, "bincount", as_in_the_page)
    labels = np.zeros((16, 16), np.uint32)
    labels[2:6, 2:6], labels[9:14, 9:14], labels[0, 15] = 70_000, 70_001, 70_002
    assert edit.objects_in_box(labels, (0, 0, 7, 7)) == [70_000]
    out, new_id, removed = edit.add_object(labels, labels == 70_001)
    assert new_id == 70_003 and removed == [70_001]
    assert median_diameter(labels, min_objects=1)[1] == 2
    assert (remove_small_objects(labels, 2) == 70_002).sum() == 0


def test_a_box_outside_the_image_selects_nothing():
    labels = np.zeros((50, 50), np.uint16)
    labels[49, 49], labels[0, 0] = 7, 3
    assert edit.objects_in_box(labels, (60, 60, 80, 80)) == []
    assert edit.objects_in_box(labels, (-20, -20, -10, -10)) == []
    assert edit.objects_in_box(labels, (80, 80, 40, 40)) == [7]  # corners in any order, clipped


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="2-D integer"):
        edit.delete_objects(np.zeros((4, 4), np.float32), [1])
    with pytest.raises(ValueError, match="no object"):
        edit.split_object(np.zeros((4, 4), np.uint16), 3, (0, 0), (3, 3))
    with pytest.raises(ValueError, match="two objects"):
        edit.merge_objects(np.ones((4, 4), np.uint16), [1])
    with pytest.raises(ValueError, match="3 vertices"):
        edit.polygon_mask((4, 4), [(0, 0), (1, 1)])
