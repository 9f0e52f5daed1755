"""Decode image files into numpy arrays, with messages a person can act on.

Formats are recognised by their first bytes, not by the file name, so a
mislabelled file is still read (or clearly refused). Supported: TIFF (classic
and BigTIFF, 8/16/32-bit integer and float, either byte order, multi-page and
multi-channel), PNG, JPEG and BMP.

Plane selection
---------------
A file can hold more than one 2-D plane (channels, z-slices, time points,
RGB samples). By default :func:`read_image` returns the **first** plane along
every axis other than Y and X, except RGB(A) samples, which are averaged into
one grayscale plane (or kept when ``color=True``). Pass ``index={"C": 1,
"Z": 5}`` to pick another plane.
"""
from __future__ import annotations

import io as _io
import os
from pathlib import Path

import numpy as np

__all__ = ["ImageReadError", "read_image", "read_image_bytes", "sniff_format",
           "validate_image", "MAX_PIXELS", "MIN_SIDE"]

#: Largest plane accepted (pixels); bigger ones would exhaust a browser tab.
MAX_PIXELS = 16384 * 16384
#: Smallest side accepted; the models need some context around a nucleus.
MIN_SIDE = 8


class ImageReadError(ValueError):
    """The input is not an image this tool can read; the message says why."""


def sniff_format(head: bytes) -> str | None:
    """Name of the container format from the first bytes, or None."""
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:2] == b"BM":
        return "BMP"
    return None


def _describe(filename) -> str:
    return f"'{os.path.basename(str(filename))}'" if filename else "the file"


def read_image(source, *, color: bool = False, index: dict | None = None,
               filename: str | None = None) -> np.ndarray:
    """Read one 2-D image plane from a path, bytes or a binary file object.

    Parameters
    ----------
    source : str, Path, bytes, bytearray, memoryview or file object
    color : bool
        Keep RGB samples as a last axis of length 3 (alpha dropped) instead of
        averaging them into grayscale.
    index : dict of {str: int}, optional
        Plane to take along non-spatial axes, by tifffile axis letter
        (``C`` channel, ``Z`` depth, ``T`` time, ``Q``/``I`` other pages).
    filename : str, optional
        Used in error messages when ``source`` is bytes.

    Returns
    -------
    ndarray
        ``(H, W)`` in the file's dtype (float32 after averaging RGB), or
        ``(H, W, 3)`` when ``color`` is true and the file is RGB.

    Raises
    ------
    ImageReadError
        For empty, truncated, unrecognised, unsupported or implausible files.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        filename = filename or path.name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageReadError(f"cannot open {_describe(filename)}: {exc.strerror or exc}") from None
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        data = source.read()
    return read_image_bytes(data, filename=filename, color=color, index=index)


def read_image_bytes(data: bytes, filename: str | None = None, *, color: bool = False,
                     index: dict | None = None) -> np.ndarray:
    """Like :func:`read_image`, for the bytes of a file."""
    what = _describe(filename)
    if len(data) == 0:
        raise ImageReadError(f"{what} is empty (0 bytes)")
    fmt = sniff_format(bytes(data[:8]))
    if fmt is None:
        raise ImageReadError(
            f"{what} is not a PNG, JPEG, BMP or TIFF image "
            f"(it starts with {bytes(data[:8])!r}); was it renamed from another format?")
    try:
        if fmt == "TIFF":
            image = _read_tiff(data, what, color, index or {})
        else:
            image = _read_pillow(data, what, fmt, color)
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(f"{what} is too large to decode in the available memory") from None
    except Exception as exc:  # decoders raise many types for corrupt data
        raise ImageReadError(
            f"could not decode {what} as {fmt}: {exc}. The file may be truncated or corrupt."
        ) from None
    return validate_image(image, what)


def validate_image(image: np.ndarray, what: str = "the image") -> np.ndarray:
    """Check the size and dtype of a decoded plane; return it unchanged."""
    h, w = image.shape[:2]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ImageReadError(
            f"{what} is {w}×{h} pixels; at least {MIN_SIDE}×{MIN_SIDE} is needed to find nuclei")
    if h * w > MAX_PIXELS:
        raise ImageReadError(f"{what} is {w}×{h} pixels, more than the {MAX_PIXELS:,} supported")
    if image.dtype.kind == "c":
        raise ImageReadError(f"{what} holds complex numbers, not intensities")
    return image


def _check_plane_size(shape, what):
    h, w = int(shape[0]), int(shape[1])
    if h * w > MAX_PIXELS:
        raise ImageReadError(
            f"{what} claims {w}×{h} pixels, more than the {MAX_PIXELS:,} supported")


def _to_plane(array: np.ndarray, color: bool) -> np.ndarray:
    """Average RGB(A) samples to gray unless ``color``; drop alpha."""
    if array.ndim == 3:
        if array.shape[-1] in (3, 4):
            rgb = array[..., :3]
            if color:
                return np.ascontiguousarray(rgb)
            return rgb.astype(np.float32).mean(axis=-1)
        if array.shape[-1] in (1, 2):  # gray (+ alpha)
            return array[..., 0]
    return array


def _read_tiff(data: bytes, what: str, color: bool, index: dict) -> np.ndarray:
    import tifffile

    try:
        tif = tifffile.TiffFile(_io.BytesIO(data))
    except Exception as exc:
        raise ImageReadError(f"{what} is not a readable TIFF: {exc}") from None
    with tif:
        if not tif.series:
            raise ImageReadError(f"{what} contains no image")
        series = tif.series[0]
        axes, shape = series.axes, series.shape
        if "Y" not in axes or "X" not in axes:
            raise ImageReadError(f"{what} has axes {axes!r} without both Y and X")
        _check_plane_size((shape[axes.index("Y")], shape[axes.index("X")]), what)
        unknown = set(index) - set(axes)
        if unknown:
            raise ImageReadError(f"{what} has axes {axes!r}; it has no axis {sorted(unknown)}")
        page = series.pages[0] if series.pages else None
        compression = getattr(getattr(page, "compression", None), "name", "")
        try:
            array = series.asarray()
        except (ValueError, NotImplementedError, KeyError) as exc:
            if compression and compression not in ("NONE",):
                raise ImageReadError(
                    f"{what} uses {compression} compression, which cannot be decoded here "
                    f"({exc}); save it uncompressed, or with LZW or Deflate") from None
            raise
    selection = []
    for axis, size in zip(axes, shape):
        if axis in "YXS":
            selection.append(slice(None))
        else:
            i = int(index.get(axis, 0))
            if not -size <= i < size:
                raise ImageReadError(f"{what}: index {i} is outside axis {axis} of length {size}")
            selection.append(i)
    plane = array[tuple(selection)]
    return _to_plane(plane, color)


def _read_pillow(data: bytes, what: str, fmt: str, color: bool) -> np.ndarray:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # our own limit below is checked before decoding
    img = Image.open(_io.BytesIO(data))
    _check_plane_size((img.height, img.width), what)
    img.load()
    if img.mode in ("P", "PA", "1", "LA", "CMYK", "YCbCr", "HSV", "LAB", "RGBA", "RGBX", "RGBa"):
        img = img.convert("RGB" if (color or img.mode not in ("1", "LA")) else "L")
        if img.mode == "RGB" and not color:
            array = np.asarray(img)
            if (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all():
                return np.ascontiguousarray(array[..., 0])
            return _to_plane(array, color)
    array = np.asarray(img)
    if img.mode == "RGB" and not color:
        if (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all():
            return np.ascontiguousarray(array[..., 0])
    return _to_plane(array, color)
