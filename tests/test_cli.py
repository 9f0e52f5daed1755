"""``python -m piximi_py segment FOLDER --out DIR``: labels, measurements CSV,
ImageJ ROI zip and COCO JSON per image, each reopened with its reference
library; a broken file is reported and skipped; pixel size from OME metadata."""
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from realdata import stardist_sample

ROOT = Path(__file__).resolve().parents[1]


def test_cli_folder_writes_every_export(tmp_path):
    pytest.importorskip("onnxruntime")
    roifile = pytest.importorskip("roifile")
    image = tifffile.imread(stardist_sample()[0])
    src = tmp_path / "in" / "plate1"
    src.mkdir(parents=True)
    tifffile.imwrite(src / "a.ome.tif", image[:256, :256], ome=True,
                     metadata={"axes": "YX", "PhysicalSizeX": 0.4, "PhysicalSizeY": 0.4})
    tifffile.imwrite(src / "b.tif", image[256:, 256:])
    (src / "broken.tif").write_bytes(b"not a tiff")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "piximi_py", "segment", str(tmp_path / "in"),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr           # one input failed
    assert "broken.tif: skipped" in proc.stderr and "[3/3]" in proc.stderr

    for stem in ("plate1/a", "plate1/b"):
        labels = tifffile.imread(out / f"{stem}_labels.tif")
        ids = np.unique(labels)[1:]
        assert len(ids) > 5
        rows = list(csv.DictReader(open(out / f"{stem}_measurements.csv")))
        assert [int(r["label"]) for r in rows] == ids.tolist()
        assert {"eccentricity", "solidity"} <= set(rows[0])
        coco = json.loads((out / f"{stem}_coco.json").read_text())
        assert [a["id"] for a in coco["annotations"]] == ids.tolist()
        try:
            from pycocotools import mask as mask_utils
            for ann in coco["annotations"]:
                np.testing.assert_array_equal(mask_utils.decode(ann["segmentation"]) > 0,
                                              labels == ann["id"])
        except ImportError:
            pass
        names = [r.name for r in roifile.roiread(out / f"{stem}_rois.zip")]
        # one ROI an object, then NAME-part2, ... for the other parts of one in separate parts
        assert [int(n) for n in names if "-part" not in n] == ids.tolist()
        assert {n.split("-part")[0] for n in names} == {f"{i:05d}" for i in ids}
    rows = list(csv.DictReader(open(out / "plate1/a_measurements.csv")))
    np.testing.assert_allclose([float(r["area_um2"]) for r in rows],
                               [int(r["area"]) * 0.16 for r in rows])
    with tifffile.TiffFile(out / "plate1/a_labels.tif") as tif:
        x = tif.pages[0].tags["XResolution"].value
        assert x[1] / x[0] == pytest.approx(0.4)
    assert "area_um2" not in list(csv.DictReader(open(out / "plate1/b_measurements.csv")))[0]
    report = json.loads((out / "run_report.json").read_text())
    assert (report["segmented"], report["failed"]) == (2, 1)


def test_output_names_drop_the_ome_suffix():
    from piximi_py.distributed import image_stem

    assert image_stem("plate/A01.ome.tif").as_posix() == "plate/A01"
    assert image_stem("A01.OME.TIFF").as_posix() == "A01"
    assert image_stem("cells.tif").as_posix() == "cells"
    assert image_stem("v1.2.png").as_posix() == "v1.2"
