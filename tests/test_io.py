"""Decoding real and constructed files, and clear refusals of bad ones."""
import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from piximi_py.io import ImageReadError, read_image, read_image_bytes, sniff_format
from realdata import stardist_sample


def tiff_bytes(array, **kwargs) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, array, **kwargs)
    return buf.getvalue()


def pil_bytes(array, fmt, mode=None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def real():
    image_path, mask_path = stardist_sample()
    return tifffile.imread(image_path), image_path


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_tiff_dtypes_roundtrip(real, dtype, byteorder):
    image = real[0].astype(dtype)
    out = read_image_bytes(tiff_bytes(image, byteorder=byteorder), "x.tif")
    assert out.shape == image.shape
    np.testing.assert_array_equal(out.astype(dtype), image)


def test_real_tiff_from_path(real):
    image, path = real
    out = read_image(path)
    assert out.dtype == np.uint16 and out.shape == (512, 512)
    np.testing.assert_array_equal(out, image)


def test_bigtiff_and_compressed(real):
    image = real[0]
    np.testing.assert_array_equal(read_image_bytes(tiff_bytes(image, bigtiff=True)), image)
    np.testing.assert_array_equal(read_image_bytes(tiff_bytes(image, compression="zlib")), image)


def test_stack_default_first_plane_and_index(real):
    image = real[0]
    stack = np.stack([image, image[::-1], image[:, ::-1]])
    data = tiff_bytes(stack, metadata={"axes": "ZYX"}, imagej=True)
    np.testing.assert_array_equal(read_image_bytes(data), image)
    np.testing.assert_array_equal(read_image_bytes(data, index={"Z": 2}), image[:, ::-1])
    with pytest.raises(ImageReadError, match="outside axis Z"):
        read_image_bytes(data, index={"Z": 7})
    with pytest.raises(ImageReadError, match="no axis"):
        read_image_bytes(data, index={"T": 1})


def test_rgb_averaged_or_kept(real):
    image = (real[0] // 256).astype(np.uint8) if real[0].max() > 255 else real[0].astype(np.uint8)
    rgb = np.stack([image, image // 2, image // 3], axis=-1)
    gray = read_image_bytes(tiff_bytes(rgb, photometric="rgb"))
    np.testing.assert_allclose(gray, rgb.astype(np.float32).mean(-1))
    assert read_image_bytes(tiff_bytes(rgb, photometric="rgb"), color=True).shape == rgb.shape


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "JPEG"])
def test_pillow_formats(real, fmt):
    image = real[0].astype(np.uint8)
    out = read_image_bytes(pil_bytes(image, fmt))
    assert out.shape == image.shape
    if fmt != "JPEG":
        np.testing.assert_array_equal(out, image)
    else:
        assert np.abs(out.astype(int) - image).mean() < 6  # quality-75 JPEG of a noisy image


def test_png_16bit_palette_and_1bit(real):
    image16 = real[0].astype(np.uint16) * 100
    np.testing.assert_array_equal(read_image_bytes(pil_bytes(image16, "PNG")), image16)
    image8 = real[0].astype(np.uint8)
    pal = read_image_bytes(pil_bytes(np.stack([image8] * 3, -1), "PNG", mode="P"))
    assert pal.shape == image8.shape
    onebit = read_image_bytes(pil_bytes(image8 > 10, "PNG", mode="1"))
    assert onebit.shape == image8.shape and set(np.unique(onebit)) <= {0, 255}


def test_sniff_format():
    assert sniff_format(b"II*\x00abcd") == "TIFF"
    assert sniff_format(b"\x89PNG\r\n\x1a\n") == "PNG"
    assert sniff_format(b"hello") is None


def test_empty_file():
    with pytest.raises(ImageReadError, match="empty"):
        read_image_bytes(b"", "a.tif")


def test_text_renamed_tif():
    with pytest.raises(ImageReadError, match="not a PNG, JPEG, BMP or TIFF"):
        read_image_bytes(b"sample,count\n1,2\n", "table.tif")


def test_truncated_tiff(real):
    data = tiff_bytes(real[0])
    with pytest.raises(ImageReadError, match="truncated|corrupt|readable"):
        read_image_bytes(data[: len(data) // 3], "cut.tif")


def test_tiny_image():
    with pytest.raises(ImageReadError, match="1×1 pixels"):
        read_image_bytes(tiff_bytes(np.zeros((1, 1), np.uint8)), "dot.tif")


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="cannot open"):
        read_image(tmp_path / "nope.tif")
