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
