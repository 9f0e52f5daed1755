"""Real sample images that any machine can get: the StarDist example (CC0).

``img2d.tif`` + ``mask2d.tif`` (512x512 uint16 fluorescence nuclei from
DSB2018, and its instance labels) ship inside the ``stardist`` wheel, which
pip downloads once into ``.cache/stardist``. :func:`two_channel_sample` writes
it as the two-channel file a whole-cell model reads.
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "stardist"
STARDIST_VERSION = "0.9.2"


class SampleUnavailable(RuntimeError):
    pass


def stardist_sample() -> tuple[Path, Path]:
    """Paths of the StarDist example image and its instance mask (fetched once)."""
    image, mask = CACHE / "img2d.tif", CACHE / "mask2d.tif"
    if image.exists() and mask.exists():
        return image, mask
    wheels = CACHE / "wheel"
    wheels.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                           "-q", "-d", str(wheels), f"stardist=={STARDIST_VERSION}"],
                          capture_output=True, text=True)
    found = sorted(wheels.glob("stardist-*.whl"))
    if proc.returncode != 0 or not found:
        raise SampleUnavailable(f"could not download the stardist wheel: {proc.stderr.strip()[-300:]}")
    with zipfile.ZipFile(found[0]) as zf:
        for target in (image, mask):
            target.write_bytes(zf.read(f"stardist/data/images/{target.name}"))
    return image, mask


def two_channel_sample() -> Path:
    """The StarDist example as a 2-channel OME-TIFF: its DNA stain twice, as a cytoplasm
    stand-in and as the nuclear channel, named as a microscope names them (``Phalloidin``,
    ``DAPI``). This project ships no permissively licensed two-channel cell image."""
    import numpy as np
    import tifffile

    from piximi_py.io import read_image

    path = CACHE / "two_channel.ome.tif"
    if not path.exists():
        plane = read_image(stardist_sample()[0])
        part = path.with_suffix(".part")
        tifffile.imwrite(part, np.stack([plane, plane]), ome=True,
                         metadata={"axes": "CYX", "Channel": {"Name": ["Phalloidin", "DAPI"]}})
        part.replace(path)
    return path
