"""Real annotated images for tests.

* The StarDist example (CC0) from the ``stardist`` wheel, fetched with pip at
  test time (:mod:`tools.samples`): available on any machine that reaches PyPI.
* ``../shared/data`` exists only on the project's own machines; tests that
  need it call :func:`shared_set` and skip without it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_DATA = ROOT.parent / "shared" / "data"

from tools import samples  # noqa: E402


def stardist_sample() -> tuple[Path, Path]:
    """Paths of the StarDist example image and mask, or skip the test."""
    try:
        return samples.stardist_sample()
    except samples.SampleUnavailable as exc:
        pytest.skip(str(exc))


def two_channel_sample() -> Path:
    """The StarDist example as a two-channel OME-TIFF (:func:`tools.samples.two_channel_sample`),
    or skip the test."""
    stardist_sample()
    return samples.two_channel_sample()


def shared_set(name: str) -> Path:
    """A set of ``../shared/data``, or skip the test when this machine has none."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} not present (only on the project's own machines)")
    return path


def assert_cli_flag_as_api(image, tmp_path: Path, flag: str) -> None:
    """``python -m piximi_py segment --FLAG`` on a folder holding ``image`` alone: the run report
    records the flag and the labels equal :func:`piximi_py.segment_image` with ``FLAG=True`` (both
    at a given diameter of 20 px)."""
    import json
    import subprocess

    import numpy as np
    import tifffile

    import piximi_py

    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "a.tif", image)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "piximi_py", "segment", str(src), "--out", str(out),
                           f"--{flag}", "--diameter", "20"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "run_report.json").read_text())
    assert report["options"][flag] is True and report["segmented"] == 1
    expected = piximi_py.segment_image(image, diameter=20, **{flag: True}).labels
    np.testing.assert_array_equal(tifffile.imread(out / "a_labels.tif"), expected)
