"""Colour-coded nucleus masks to instance labels (no network)."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # training/ is not installed
from training.datasets import (DATA_CACHE, fluorescence_plane, labels_from_color_mask,
                               labels_from_instance_masks, labels_from_polygons, mirror_gitdir, safe_name)


def rgba_mask():
    """Red on two disjoint blobs, green on one, the rest background."""
    rgba = np.zeros((12, 12, 4), np.uint8)
    rgba[1:4, 1:4] = (255, 0, 0, 255)      # red, blob 1
    rgba[8:11, 8:11] = (255, 0, 0, 255)    # red again, far away: blob 2
    rgba[1:4, 8:11] = (0, 255, 0, 255)     # green
    rgba[6, 0:3] = (0, 0, 255, 0)          # coloured but transparent: background
    rgba[5, 5] = (0, 0, 0, 255)            # opaque black: background
    return rgba


def test_two_colours_three_labels():
    rgba = rgba_mask()
    labels = labels_from_color_mask(rgba)
    assert labels.dtype == np.uint16 and labels.shape == (12, 12)
    assert sorted(np.unique(labels)) == [0, 1, 2, 3]
    red_ids = set(np.unique(labels[(rgba[..., 0] == 255)]))
    assert len(red_ids) == 2 and 0 not in red_ids
    green_ids = set(np.unique(labels[1:4, 8:11]))
    assert len(green_ids) == 1 and not green_ids & red_ids
    for blob in (labels[1:4, 1:4], labels[8:11, 8:11], labels[1:4, 8:11]):
        assert len(np.unique(blob)) == 1 and np.bincount(labels.ravel())[blob[0, 0]] == 9
    assert labels[6, 0:3].max() == 0 and labels[5, 5] == 0 and labels[0].max() == 0


def test_diagonal_touch_is_one_object_and_small_pieces_drop():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[1:3, 1:3] = rgba[3:5, 3:5] = (9, 9, 9, 255)   # touch at a corner: 8-connected
    rgba[7, 7] = (9, 9, 9, 255)                        # a 1-px stray of the same colour
    labels = labels_from_color_mask(rgba)
    assert labels.max() == 1 and (labels == 1).sum() == 8 and labels[7, 7] == 0
    assert labels_from_color_mask(rgba, min_size=1).max() == 2


def test_rgb_without_alpha_and_bad_input():
    rgb = rgba_mask()[..., :3].copy()
    rgb[6, 0:3] = 0
    np.testing.assert_array_equal(labels_from_color_mask(rgb), labels_from_color_mask(rgba_mask()))
    with pytest.raises(ValueError):
        labels_from_color_mask(np.zeros((4, 4), np.uint8))


def test_safe_name():
    assert safe_name("test", "2023-05-31_misc", "MAX_2022-12-29 ATF3 tilescan.lif - BAY") == \
        "test-2023-05-31_misc-MAX_2022-12-29_ATF3_tilescan.lif_BAY"


def test_instance_masks_first_mask_wins_and_small_drop():
    a = np.zeros((6, 6), np.uint8); a[0:3, 0:3] = 255
    b = np.zeros((6, 6), np.uint8); b[2:5, 2:5] = 255       # overlaps a at (2, 2)
    c = np.zeros((6, 6), np.uint8); c[5, 5] = 255            # 1 px: dropped
    labels, overlap = labels_from_instance_masks([a, b, c])
    assert labels.dtype == np.uint16 and overlap == 1 and labels.max() == 2
    assert labels[2, 2] == 1 and (labels == 2).sum() == 8 and labels[5, 5] == 0


def test_fluorescence_plane_keeps_gray_bright_nuclei_only():
    labels = np.zeros((8, 8), np.uint16); labels[2:5, 2:5] = 1
    gray = np.full((8, 8), 10, np.uint8); gray[labels > 0] = 200
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 255)])
    plane, why = fluorescence_plane(rgba, labels)
    assert why == "" and plane.dtype == np.uint8 and np.array_equal(plane, gray)
    assert fluorescence_plane(255 - rgba[..., :3], labels) == (None, "dark nuclei")
    tinted = rgba.copy(); tinted[0, 0, 2] = 11
    assert fluorescence_plane(tinted, labels) == (None, "colour")


def test_polygons_fill_as_drawn_later_outline_on_top():
    wide = np.array([(1, 1), (8, 1), (8, 3), (1, 3)], float)            # (x, y) vertices: 8 wide, 3 high
    triangle = np.array([(5, 2), (9, 2), (5, 6)], float)                # overlaps the rectangle
    labels = labels_from_polygons([wide, np.array([(0, 9), (1, 9)]), triangle], (12, 12))
    assert labels.dtype == np.uint16 and labels.max() == 2              # a two-vertex "polygon" is dropped
    assert (labels[1] == 1).sum() == 8 and labels[0].max() == 0 and labels[:, 0].max() == 0
    assert labels[2, 6] == 2 and labels[1, 6] == 1 and labels[5, 5] == 2  # the later outline wins the overlap
    assert labels_from_polygons([], (4, 4)).max() == 0


def test_missing_mirror_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="owner\\+name/repo|github:owner/name"):
        mirror_gitdir("owner/name", "0" * 40, tmp_path)


@pytest.mark.skipif(not (DATA_CACHE / "dsb2018_train" / "index.csv").exists(),
                    reason="run python -m training.datasets dsb2018_train first")
def test_converted_dsb2018_train():
    import csv
    import tifffile
    root = DATA_CACHE / "dsb2018_train"
    rows = list(csv.DictReader(open(root / "index.csv")))
    assert len(rows) == len(list((root / "images").glob("*.tif"))) == 541
    for row in rows[::60]:
        image = tifffile.imread(root / "images" / f"{row['name']}.tif")
        labels = tifffile.imread(root / "masks" / f"{row['name']}.tif")
        assert image.ndim == 2 and image.shape == labels.shape and labels.dtype == np.uint16
        assert labels.max() == int(row["nuclei"]) == len(np.unique(labels)) - 1


def committed(work: Path) -> str:
    """Make ``work`` a git repository with its files committed, as a mirror; the commit."""
    import subprocess

    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "data"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def test_aits_u2os_conversion_from_a_mirror(tmp_path):
    """The evaluation-only U2OS set: the repository's PNG (three equal channels) and HoVer-Net
    .mat (inst_map) become a gray uint8 image and uint16 labels numbered 1..n, slivers dropped;
    run on a git repository laid out as the mirror is."""
    import tifffile
    from PIL import Image
    from scipy.io import savemat

    from training.datasets import AITS_DIR, convert_aits_u2os

    work = tmp_path / "work"
    (work / AITS_DIR / "normalized_nuclei").mkdir(parents=True)
    (work / AITS_DIR / "annotation_nuclei").mkdir(parents=True)
    gray = (np.arange(32 * 32).reshape(32, 32) % 251).astype(np.uint8)
    Image.fromarray(np.repeat(gray[..., None], 3, axis=2)).save(work / AITS_DIR / "normalized_nuclei" / "img1.png")
    inst = np.zeros((32, 32), np.uint8)
    inst[2:8, 2:8], inst[20:30, 20:30], inst[0, 31] = 7, 3, 9  # ids with gaps; id 9 is a 1-px sliver
    savemat(work / AITS_DIR / "annotation_nuclei" / "img1.mat", {"inst_map": inst, "inst_centroid": np.zeros((3, 2))})
    records = convert_aits_u2os(work / ".git", tmp_path / "set", committed(work))
    assert [r["name"] for r in records] == ["aits_img1"] and records[0]["nuclei"] == 2
    image = tifffile.imread(tmp_path / "set" / "images" / "aits_img1.tif")
    labels = tifffile.imread(tmp_path / "set" / "masks" / "aits_img1.tif")
    assert image.dtype == np.uint8 and np.array_equal(image, gray)
    assert labels.dtype == np.uint16 and sorted(np.unique(labels)) == [0, 1, 2]
    assert labels[0, 31] == 0 and labels[3, 3] != labels[25, 25] != 0
    assert "evaluation only" in (tmp_path / "set" / "README.md").read_text()


def test_kromp_and_bitdepth_conversion_from_mirrors(tmp_path):
    """The two DAPI sets from other labs: Kromp's uint8 images (an RGB one of three equal channels
    becomes gray) and BitDepth's 16-bit images with the authors' corrected label masks ("label
    masks modify", not "label masks") become gray images and uint16 labels numbered 1..n, slivers
    dropped; run on git repositories laid out as the mirrors are."""
    import tifffile

    from training.datasets import KROMP_DIR, convert_bitdepth_dapi, convert_kromp_dapi

    gray = (np.arange(32 * 32).reshape(32, 32) % 251).astype(np.uint8)
    inst = np.zeros((32, 32), np.uint16)
    inst[2:8, 2:8], inst[20:30, 20:30], inst[0, 31] = 7, 3, 9  # ids with gaps; id 9 is a 1-px sliver
    kromp = tmp_path / "kromp"
    for sub in ("rawimages", "groundtruth"):
        (kromp / KROMP_DIR / sub).mkdir(parents=True)
    tifffile.imwrite(kromp / KROMP_DIR / "rawimages" / "Neuroblastoma_1.tif", np.repeat(gray[..., None], 3, axis=2))
    tifffile.imwrite(kromp / KROMP_DIR / "groundtruth" / "Neuroblastoma_1.tif", inst)
    bitdepth = tmp_path / "bitdepth"
    for sub in ("images_16bit", "label masks", "label masks modify"):
        (bitdepth / "data" / "40x oil" / sub).mkdir(parents=True)
    tifffile.imwrite(bitdepth / "data" / "40x oil" / "images_16bit" / "liver_40x_1.tif", gray.astype(np.uint16) * 100)
    tifffile.imwrite(bitdepth / "data" / "40x oil" / "label masks" / "liver_40x_1.tif", np.zeros_like(inst))
    tifffile.imwrite(bitdepth / "data" / "40x oil" / "label masks modify" / "liver_40x_1.tif", inst)
    for convert, work, name, dtype in ((convert_kromp_dapi, kromp, "kromp_Neuroblastoma_1", np.uint8),
                                       (convert_bitdepth_dapi, bitdepth, "bitdepth_liver_40x_1", np.uint16)):
        dest = tmp_path / f"set-{work.name}"
        records = convert(work / ".git", dest, committed(work))
        assert [r["name"] for r in records] == [name] and records[0]["nuclei"] == 2
        image = tifffile.imread(dest / "images" / f"{name}.tif")
        labels = tifffile.imread(dest / "masks" / f"{name}.tif")
        assert image.dtype == dtype and np.array_equal(image, gray.astype(dtype) * (1 if dtype == np.uint8 else 100))
        assert labels.dtype == np.uint16 and sorted(np.unique(labels)) == [0, 1, 2]
        assert labels[0, 31] == 0 and labels[3, 3] != labels[25, 25] != 0
        assert "left out by its own fold" in (dest / "README.md").read_text()


def test_koyuncu_hoechst_conversion_from_a_mirror(tmp_path):
    """The evaluation-only HepG2/Huh7 set: a pseudocoloured JPEG becomes the uint16 sum of its
    channels, a text label image uint16 labels numbered 1..n (slivers dropped), and the README
    and index say what it is; run on a git repository laid out as the mirror is."""
    import csv

    import tifffile
    from PIL import Image

    from training.datasets import convert_koyuncu_hoechst

    work = tmp_path / "work"
    (work / "dataset" / "images").mkdir(parents=True)
    (work / "dataset" / "annotations").mkdir(parents=True)
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[4:12, 4:12] = (10, 90, 200)  # a blue-cyan nucleus, as the set renders Hoechst
    Image.fromarray(rgb).save(work / "dataset" / "images" / "26.jpg", quality=95)
    inst = np.zeros((32, 48), int)
    inst[4:12, 4:12], inst[20:30, 30:40], inst[0, 47] = 5, 2, 9  # ids with gaps; id 9 is a 1-px sliver
    np.savetxt(work / "dataset" / "annotations" / "26", inst, fmt="%d", delimiter="  ")
    dest = tmp_path / "set"
    records = convert_koyuncu_hoechst(work / ".git", dest, committed(work))
    assert [r["name"] for r in records] == ["koyuncu_26"] and records[0]["nuclei"] == 2
    image = tifffile.imread(dest / "images" / "koyuncu_26.tif")
    labels = tifffile.imread(dest / "masks" / "koyuncu_26.tif")
    decoded = np.asarray(Image.open(work / "dataset" / "images" / "26.jpg").convert("RGB"))
    assert image.dtype == np.uint16 and np.array_equal(image, decoded.astype(np.uint16).sum(axis=2))
    assert image[8, 8] > 250 and image[25, 35] < 20  # the nucleus keeps its whole signal
    assert labels.dtype == np.uint16 and labels.shape == (32, 48) and sorted(np.unique(labels)) == [0, 1, 2]
    assert labels[0, 47] == 0 and labels[8, 8] != labels[25, 35] != 0
    assert next(csv.DictReader(open(dest / "index.csv")))["cell_line"] == "Huh7"
    assert "evaluation only" in (dest / "README.md").read_text()


def test_he_tnbc_and_cryonuseg_conversion_from_mirrors(tmp_path):
    """TNBC's binary masks become their 8-connected components (slivers dropped); CryoNuSeg's
    RGB-coded instance map one nucleus per colour; both keep the RGB of the tile."""
    import tifffile
    from PIL import Image

    from training.datasets import CRYONUSEG_DIR, convert_he_cryonuseg, convert_he_tnbc

    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    work = tmp_path / "tnbc"
    for sub in ("Slide_03", "GT_03"):
        (work / "dataset" / "TNBC" / sub).mkdir(parents=True)
    Image.fromarray(np.dstack([rgb, np.full((32, 32), 255, np.uint8)])).save(work / "dataset/TNBC/Slide_03/03_2.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[2:8, 2:8], mask[8:12, 8:12], mask[20:30, 20:30], mask[0, 31] = 255, 255, 255, 255  # diagonal touch
    Image.fromarray(mask).save(work / "dataset/TNBC/GT_03/03_2.png")
    records = convert_he_tnbc(work / ".git", tmp_path / "tnbc_set", committed(work))
    assert [(r["name"], r["nuclei"], r["slide"]) for r in records] == [("tnbc_03_2", 2, "03")]
    assert np.array_equal(tifffile.imread(tmp_path / "tnbc_set/images/tnbc_03_2.tif"), rgb)
    labels = tifffile.imread(tmp_path / "tnbc_set/masks/tnbc_03_2.tif")
    assert labels[3, 3] == labels[9, 9] != labels[25, 25] != 0 and labels[0, 31] == 0

    work = tmp_path / "cop"
    for sub in ("image", "mask_instance"):
        (work / CRYONUSEG_DIR / sub).mkdir(parents=True)
    tifffile.imwrite(work / CRYONUSEG_DIR / "image/Human_Skin_03.tif", rgb, photometric="rgb")
    ids = np.zeros((32, 32, 3), np.uint8)
    ids[2:8, 2:8] = (0, 1, 0)        # one colour per nucleus (id = B * 256 + G)
    ids[6:12, 6:12] = (0, 0, 1)      # a second one, touching the first
    ids[0, 31] = (0, 2, 0)           # a sliver
    Image.fromarray(ids).save(work / CRYONUSEG_DIR / "mask_instance/Human_Skin_03.png")
    records = convert_he_cryonuseg(work / ".git", tmp_path / "cryo_set", committed(work))
    assert [(r["name"], r["nuclei"]) for r in records] == [("cryonuseg_Human_Skin_03", 2)]
    labels = tifffile.imread(tmp_path / "cryo_set/masks/cryonuseg_Human_Skin_03.tif")
    assert labels[3, 3] != labels[10, 10] != 0 and labels[0, 31] == 0 and labels.max() == 2
    assert "non-commercial" in (tmp_path / "cryo_set/README.md").read_text()


def test_he_nuinsseg_conversion_from_a_mirror(tmp_path):
    """NuInsSeg's YOLO polygons (fractions of the tile, vertices on the nucleus's own boundary
    pixels) become nuclei that keep those boundary pixels; the split and organ come from the path."""
    import tifffile
    from PIL import Image

    from training.datasets import NUINSSEG_DIR, convert_he_nuinsseg, labels_from_polygons, yolo_polygons

    square = yolo_polygons(b"0 0.125 0.125 0.25 0.125 0.25 0.25 0.125 0.25\n", (32, 32))[0]
    assert np.allclose(square, [(4, 4), (8, 4), (8, 8), (4, 8)])
    assert (labels_from_polygons([square], (32, 32), outline=True) > 0).sum() == 25  # rows and columns 4..8
    slanted = np.array([(4, 4), (9, 6), (5, 10)], float)   # vertices on its boundary pixels
    filled, outlined = (labels_from_polygons([p], (32, 32), outline=o) for p, o in ((slanted, False), (slanted, True)))
    assert (filled > 0).sum() == 18 and (outlined > 0).sum() == 23 and outlined[5, 4] and not filled[5, 4]

    rgb = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    work = tmp_path / "cv"
    for sub in ("images", "labels"):
        (work / NUINSSEG_DIR / "val" / sub).mkdir(parents=True)
    Image.fromarray(rgb).save(work / NUINSSEG_DIR / "val/images/mouse_heart_07.png")
    (work / NUINSSEG_DIR / "val/labels/mouse_heart_07.txt").write_text(
        "0 0.125 0.125 0.25 0.125 0.25 0.25 0.125 0.25\n0 0.5 0.5 0.75 0.5 0.75 0.75\n0 0.9 0.9\n")
    records = convert_he_nuinsseg(work / ".git", tmp_path / "set", committed(work))
    assert [(r["name"], r["nuclei"], r["split"], r["organ"]) for r in records] == [
        ("nuinsseg_mouse_heart_07", 2, "val", "mouse_heart")]
    assert np.array_equal(tifffile.imread(tmp_path / "set/images/nuinsseg_mouse_heart_07.tif"), rgb)
    labels = tifffile.imread(tmp_path / "set/masks/nuinsseg_mouse_heart_07.tif")
    assert labels[4, 4] == labels[8, 8] == 1 and labels[17, 20] == 2 and labels[3, 3] == 0
    assert "CC BY 4.0" in (tmp_path / "set/README.md").read_text()


def test_deepcell_conversion_from_a_mirror(tmp_path, monkeypatch):
    """DeepCell's scored-only whole cells: phase and nuclear planes become a CYX image; each cell
    interior (PNG in one folder, TIFF in another) a label that takes the drawn edge around it;
    interiors under 100 px or a tenth of the median are slivers; the mirror may come as a
    repository with its git directory inside."""
    import tifffile
    from PIL import Image

    import training.datasets as DS

    work = tmp_path / "DeepCell"
    phase = (np.arange(128 * 128).reshape(128, 128) % 4001).astype(np.uint16)
    nuclear = phase[::-1].copy()
    interiors = np.zeros((128, 128), np.uint8)
    interiors[10:55, 10:55] = interiors[70:115, 70:115] = 255   # two cells of 2025 px
    interiors[10:20, 100:115] = 255                              # 150 px: under a tenth of the median
    edges = np.zeros((128, 128), np.uint8)
    edges[8:57, 8:57] = 255
    edges[10:55, 10:55] = 0                                      # a 2-px edge drawn around the first
    for folder, ext in (("HeLa_joint/set1", "png"), ("3T3/set1", "tif")):
        field = work / "training_data" / folder
        field.mkdir(parents=True)
        Image.fromarray(phase).save(field / "phase.png")
        Image.fromarray(nuclear).save(field / "nuclear.png")
        for name, plane in (("feature_0", edges), ("feature_1", interiors)):
            if ext == "png":
                Image.fromarray(plane).save(field / f"{name}.png")
            else:
                tifffile.imwrite(field / f"{name}.tif", plane)
    monkeypatch.setattr(DS, "DEEPCELL_FIELDS", ("HeLa_joint/set1", "3T3/set1"))
    mirrors = tmp_path / "mirrors"
    (mirrors / "CovertLab+DeepCell").mkdir(parents=True)
    commit = committed(work)
    work.rename(mirrors / "CovertLab+DeepCell" / "repo")
    root = DS._fetch_from_mirror(tmp_path / "set", DS.DEEPCELL_REPO, commit, DS.convert_cells_deepcell, mirrors)
    assert sorted(p.name for p in (root / "images").iterdir()) == ["deepcell_3t3_set1.tif", "deepcell_hela_set1.tif"]
    for name in ("deepcell_3t3_set1", "deepcell_hela_set1"):
        image = tifffile.imread(root / "images" / f"{name}.tif")
        labels = tifffile.imread(root / "masks" / f"{name}.tif")
        assert image.shape == (2, 128, 128) and np.array_equal(image[0], phase) and np.array_equal(image[1], nuclear)
        assert labels.dtype == np.uint16 and sorted(np.unique(labels)) == [0, 1, 2]
        assert labels[9, 30] == labels[30, 30] != 0 and labels[90, 90] not in (0, labels[30, 30])
        assert labels[15, 105] == 0                              # the sliver
    assert "evaluation only" in (root / "README.md").read_text()


def test_livecell_conversion_from_a_mirror(tmp_path):
    """LIVECell's COCO polygons (flat ``[x1, y1, x2, y2, ...]`` lists, one or more per cell) become
    one label per cell over the phase-contrast plane, overlaps going to the later cell; an image
    is read from the folder its annotation file names."""
    import json

    import tifffile

    import training.datasets as DS

    work = tmp_path / "livecell"
    phase = np.random.default_rng(0).integers(0, 256, (40, 48), dtype=np.uint8)
    for annotations, folder in DS.LIVECELL_ANNOTATIONS.items():
        (work / folder).mkdir(parents=True)
        name = "A172_Phase_C7_1_00d00h00m_1.tif" if "test" in annotations else "MCF7_Phase_G4_2_02d16h00m_1.tif"
        tifffile.imwrite(work / folder / name, phase)
        cells = [[[4, 4, 14, 4, 14, 14, 4, 14]], [[10, 10, 24, 10, 24, 20, 10, 20]], [[30, 30, 31, 30, 31, 31]]]
        (work / annotations).write_text(json.dumps({
            "images": [{"id": 7, "file_name": name, "width": 48, "height": 40}],
            "annotations": [{"id": i, "image_id": 7, "segmentation": s} for i, s in enumerate(cells)]}))
    records = DS.convert_cells_livecell(work / ".git", tmp_path / "set", committed(work))
    assert [(r["name"], r["cells"]) for r in records] == [("livecell_a172_phase_c7_1_00d00h00m_1", 2),
                                                          ("livecell_mcf7_phase_g4_2_02d16h00m_1", 2)]
    labels = tifffile.imread(tmp_path / "set/masks/livecell_a172_phase_c7_1_00d00h00m_1.tif")
    assert labels[5, 5] == 1 and labels[12, 12] == 2 and labels[18, 22] == 2 and labels[30, 30] == 0
    assert np.array_equal(tifffile.imread(tmp_path / "set/images/livecell_a172_phase_c7_1_00d00h00m_1.tif"), phase)
    assert "CC BY-NC 4.0" in (tmp_path / "set/README.md").read_text()
