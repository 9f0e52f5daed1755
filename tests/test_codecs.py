"""Compressed TIFFs: piximi_py.codecs (the page's LZW, JPEG and Zstd decoders) against
imagecodecs, and files made from a real image read and segment as the uncompressed one."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from realdata import stardist_sample  # noqa: E402

imagecodecs = pytest.importorskip("imagecodecs")
tifffile = pytest.importorskip("tifffile")

from piximi_py import codecs  # noqa: E402
from piximi_py.io import read_image, read_image_bytes  # noqa: E402

# name -> tifffile.imwrite keywords; every compression a microscope or ImageJ/Fiji/OMERO writes
LOSSLESS = {
    "lzw": {"compression": "lzw"},
    "lzw_predictor": {"compression": "lzw", "predictor": "horizontal"},
    "deflate": {"compression": "zlib"},
    "deflate_predictor": {"compression": "zlib", "predictor": "horizontal"},
    "zstd": {"compression": "zstd"},
    "packbits": {"compression": "packbits"},
    "ome_lzw_tiled": {"compression": "lzw", "tile": (128, 128), "ome": True},
}


@pytest.fixture(scope="module")
def sample16():
    img, _ = stardist_sample()
    return read_image(img).astype(np.uint16)


def to_uint8(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [0.1, 99.9])
    return (np.clip((image - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)


def tiff(array: np.ndarray, **kwargs) -> bytes:
    buf = io.BytesIO()
    photometric = "rgb" if array.ndim == 3 else "minisblack"
    tifffile.imwrite(buf, array, photometric=photometric, **kwargs)
    return buf.getvalue()


def segments(data: bytes):
    """(page, raw segment bytes) of every strip/tile of the first page."""
    with tifffile.TiffFile(io.BytesIO(data)) as t:
        page = t.pages[0]
        for off, n in zip(page.dataoffsets, page.databytecounts):
            yield page, data[off:off + n]


@pytest.mark.parametrize("kind", ["uint8", "uint16", "rgb"])
@pytest.mark.parametrize("predictor", [None, "horizontal"])
def test_lzw_and_zstd_decode_as_imagecodecs(sample16, kind, predictor):
    u8 = to_uint8(sample16)
    array = {"uint8": u8, "uint16": sample16, "rgb": np.stack([u8, u8[::-1], u8[:, ::-1]], -1)}[kind]
    for compression, ours, theirs in (("lzw", codecs.lzw_decode, imagecodecs.lzw_decode),
                                      ("zstd", codecs.zstd_decode, imagecodecs.zstd_decode)):
        data = tiff(array, compression=compression, predictor=predictor)
        n = 0
        for _, seg in segments(data):
            assert ours(seg) == theirs(seg), f"{compression} {kind} segment {n}"
            n += 1
        assert n >= 1


@pytest.mark.parametrize("kind", ["uint8", "rgb"])
def test_jpeg_decode_as_imagecodecs(sample16, kind):
    u8 = to_uint8(sample16)
    array = u8 if kind == "uint8" else np.stack([u8, u8[::-1], u8[:, ::-1]], -1)
    data = tiff(array, compression="jpeg", compressionargs={"level": 90})
    for page, seg in segments(data):
        colorspace, out = tifffile.tifffile.jpeg_decode_colorspace(page.photometric, page.planarconfig,
                                                                   page.extrasamples, page.is_jfif)
        ours = codecs.jpeg_decode(seg, tables=page.jpegtables, colorspace=colorspace)
        theirs = imagecodecs.jpeg_decode(seg, tables=page.jpegtables, colorspace=colorspace,
                                         outcolorspace=out)
        assert ours.shape == theirs.shape
        assert np.abs(ours.astype(int) - theirs).max() <= 1  # libjpeg builds may round IDCT differently


def test_corrupt_lzw_is_an_error_not_a_hang():
    with pytest.raises(ValueError, match="LZW"):
        codecs.lzw_decode(b"\x80\x7f\xff\xff\xff\xff")  # clear code, then a code beyond the table
    with pytest.raises(ValueError, match="old-style"):
        codecs.lzw_decode(b"\x00\x01\x02")


_WITHOUT_IMAGECODECS = r"""
import io, json, sys
sys.modules["imagecodecs"] = None  # as in Pyodide: tifffile falls back to its own codecs
import numpy as np
from piximi_py.io import read_image_bytes
out = {}
for name in sys.argv[1:]:
    data = open(name, "rb").read()
    a = read_image_bytes(data, name)
    np.save(name + ".npy", a)
    out[name] = str(a.dtype)
print(json.dumps(out))
"""


def test_every_compression_reads_without_imagecodecs(sample16, tmp_path):
    """What the page runs (no imagecodecs) reads every compression as imagecodecs does."""
    u8 = to_uint8(sample16)
    files = {}
    for name, kw in LOSSLESS.items():
        files[name] = tiff(sample16, **kw)
    files["jpeg"] = tiff(u8, compression="jpeg", compressionargs={"level": 90})
    files["jpeg_rgb"] = tiff(np.stack([u8, u8[::-1], u8[:, ::-1]], -1), compression="jpeg", compressionargs={"level": 90})
    paths = []
    for name, data in files.items():
        p = tmp_path / f"{name}.tif"
        p.write_bytes(data)
        paths.append(str(p))
    run = subprocess.run([sys.executable, "-c", _WITHOUT_IMAGECODECS, *paths], capture_output=True,
                         text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    json.loads(run.stdout.strip().splitlines()[-1])
    for name, data in files.items():
        ours = np.load(tmp_path / f"{name}.tif.npy")
        theirs = read_image_bytes(data, name)  # with imagecodecs
        if name.startswith("jpeg"):
            assert np.abs(ours.astype(np.float64) - theirs).max() <= 1, name
        else:
            np.testing.assert_array_equal(ours, theirs, err_msg=name)
            np.testing.assert_array_equal(ours, sample16, err_msg=name)


@pytest.mark.slow
def test_compressed_files_segment_as_the_uncompressed_one(sample16, models_dir):
    """Lossless files give the uncompressed file's labels exactly; JPEG (quality 90) its objects."""
    import piximi_py
    from piximi_py.metrics import average_precision

    def labels(data):
        return piximi_py.segment_image(read_image_bytes(data), models_dir=models_dir).labels

    ref = labels(tiff(sample16))
    for name in ("lzw", "zstd"):
        np.testing.assert_array_equal(labels(tiff(sample16, **LOSSLESS[name])), ref, err_msg=name)
    u8 = to_uint8(sample16)
    ref8 = labels(tiff(u8))
    ap = average_precision(ref8, labels(tiff(u8, compression="jpeg", compressionargs={"level": 90})), 0.5)
    assert ap >= 0.95, f"JPEG labels vs uncompressed: AP@0.5 {ap:.3f}"


def test_register_is_a_no_op_with_imagecodecs():
    assert codecs.register_tiff_codecs() is False
    assert not codecs.needs_zstd_decoder("ZSTD")
    assert not codecs.needs_zstd_decoder("LZW")
