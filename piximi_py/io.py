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
"Z": 5}`` to pick another plane, and ``project={"Z": "max"}`` to project an
axis (maximum or mean) instead. :func:`describe_image` tells what a file holds
(axes, sizes, pixel size, channel names) from its header, without decoding
the pixels, so a user interface can offer the choices.
"""
from __future__ import annotations

import io as _io
import os
from pathlib import Path

import numpy as np

__all__ = ["ImageReadError", "read_image", "read_image_bytes", "sniff_format",
           "validate_image", "describe_image", "MAX_PIXELS", "MAX_BYTES", "MIN_SIDE",
           "MAX_CHANNELS", "check_pixel_size", "parse_axes"]

#: Largest plane accepted (pixels); bigger ones would exhaust a browser tab.
MAX_PIXELS = 16384 * 16384
#: Largest decoded file (all planes) accepted, in bytes.
MAX_BYTES = 4 << 30
#: Smallest side accepted; the models need some context around a nucleus.
MIN_SIDE = 8
#: Most channels a plane (height, width, channels) may have: an array with more along its last
#: axis is a stack or a channel-first image, which must be made one plane first.
MAX_CHANNELS = 16


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
               filename: str | None = None, project: dict | None = None,
               keep_channels: bool = False) -> np.ndarray:
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
    project : dict of {str: str}, optional
        Axes to project rather than index, ``"max"`` or ``"mean"``
        (``{"Z": "max"}``: maximum-intensity projection over z).
    filename : str, optional
        Used in error messages when ``source`` is bytes.
    keep_channels : bool
        Keep every channel as a last axis: the TIFF ``C`` axis (unless
        ``index`` picks one), else RGB samples; for multi-channel models
        (:mod:`piximi_py.channels`).

    Returns
    -------
    ndarray
        ``(H, W)`` in the file's dtype (float32 after averaging RGB), or
        ``(H, W, 3)`` when ``color`` is true and the file is RGB, or
        ``(H, W, C)`` with ``keep_channels`` and more than one channel.

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
    return read_image_bytes(data, filename=filename, color=color, index=index, project=project,
                            keep_channels=keep_channels)


def read_image_bytes(data: bytes, filename: str | None = None, *, color: bool = False,
                     index: dict | None = None, project: dict | None = None,
                     keep_channels: bool = False) -> np.ndarray:
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
            image = _read_tiff(data, what, color, index or {}, project or {}, keep_channels)
        else:
            if project or index:
                unknown = sorted(set(index or {}) | set(project or {}))
                raise ImageReadError(f"{what} is a single-plane {fmt}; it has no axis {unknown}")
            image = _read_pillow(data, what, fmt, color or keep_channels)
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
    """Check the shape, size and dtype of a decoded plane; return it unchanged.

    A plane is (height, width) or (height, width, channels) with at most
    :data:`MAX_CHANNELS` channels: anything else (a z-stack, a time series, a
    channel-first array) is refused with a message saying how to make it one plane,
    rather than read with its axes mistaken."""
    if image.ndim not in (2, 3):
        raise ImageReadError(
            f"{what} has {image.ndim} dimension(s) (shape {tuple(image.shape)}); one plane is needed: "
            "(height, width) or (height, width, channels). Select or project the other axes first "
            "(for a TIFF file: the index= and project= options)")
    if image.ndim == 3 and image.shape[-1] > MAX_CHANNELS:
        raise ImageReadError(
            f"{what} has shape {tuple(image.shape)}: {image.shape[-1]} channels along its last axis, "
            f"more than the {MAX_CHANNELS} supported. If it is a stack of {image.shape[0]} planes or "
            "channel-first, give one plane (e.g. image[0] or image.max(axis=0)) or move the channels "
            "last (np.moveaxis(image, 0, -1))")
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


def _read_tiff(data: bytes, what: str, color: bool, index: dict, project: dict,
               keep_channels: bool = False) -> np.ndarray:
    import tifffile

    from .codecs import register_tiff_codecs

    register_tiff_codecs()
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
        nbytes = int(np.prod(shape, dtype=np.float64)) * np.dtype(series.dtype).itemsize
        if nbytes > MAX_BYTES:
            raise ImageReadError(f"{what} holds {nbytes / 2**30:.1f} GiB of pixels (axes "
                                 f"{axes}, shape {tuple(shape)}), more than the "
                                 f"{MAX_BYTES / 2**30:.0f} GiB supported")
        for axis, how in project.items():
            if how not in ("max", "mean"):
                raise ImageReadError(f"projection {how!r} of axis {axis}: use 'max' or 'mean'")
            if axis in "YXS":
                raise ImageReadError(f"axis {axis} cannot be projected")
        unknown = (set(index) | set(project)) - set(axes)
        if unknown:
            raise ImageReadError(f"{what} has axes {axes!r}; it has no axis {sorted(unknown)}")
        in_plane = sorted(set(index) & set("YXS"))
        if in_plane:
            raise ImageReadError(f"axis {in_plane[0]} is part of the plane; it cannot be indexed")
        channel_axis = keep_channels and "C" in axes and "C" not in index and "C" not in project
        # each axis but the plane's: the positions read, checked before anything is decoded
        picks = {axis: _positions(axis, size, index, what) if axis in index else
                 (list(range(size)) if axis in project or (axis == "C" and channel_axis) else [0])
                 for axis, size in zip(axes, shape) if axis not in "YXS"}
        page = series.pages[0] if series.pages else None
        compression = getattr(getattr(page, "compression", None), "name", "")
        try:
            array, only_picked = _decode_picked(tif, series, picks)
        except (ValueError, NotImplementedError, KeyError, ImportError) as exc:
            if compression and compression not in ("NONE",):
                raise ImageReadError(
                    f"{what} uses {compression} compression, which cannot be decoded here "
                    f"({exc}); save it uncompressed, or with LZW, Deflate or Zstd") from None
            raise
    selection, kept = [], []
    for axis in axes:
        if axis in "YXS" or axis in project or (axis == "C" and channel_axis):
            selection.append(slice(None))
            kept.append(axis)
        else:
            selection.append(0 if only_picked else picks[axis][0])
    plane = array[tuple(selection)]
    for axis, how in project.items():
        i = kept.index(axis)
        plane = plane.max(axis=i) if how == "max" else plane.mean(axis=i, dtype=np.float64).astype(np.float32)
        kept.pop(i)
    if channel_axis:
        if "S" in kept:  # RGB samples per channel: their mean
            plane = plane.astype(np.float32).mean(axis=kept.index("S"))
            kept.remove("S")
        plane = np.moveaxis(plane, kept.index("C"), -1)
        return np.ascontiguousarray(plane[..., 0]) if plane.shape[-1] == 1 else plane
    return _to_plane(plane, color or keep_channels)


def _positions(axis: str, size: int, index: dict, what: str) -> list[int]:
    """The one position ``index`` names on ``axis`` (of length ``size``), as a list: a whole
    number inside the axis (negative counts from the end), else a clear error."""
    value = index[axis]
    try:  # a number, or its text ("3", from a form or a URL)
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not number.is_integer():
        raise ImageReadError(f"index of axis {axis} must be a whole number, got {value!r}")
    i = int(number)
    if not -size <= i < size:
        raise ImageReadError(f"{what}: index {i} is outside axis {axis} of length {size}")
    return [i % size]


def _decode_picked(tif, series, picks: dict) -> tuple[np.ndarray, bool]:
    """The series' pixels, and whether only the picked positions were decoded: where each page
    holds one plane, only the pages of ``picks`` are read (one plane of a large stack is not
    decoded whole, which a browser tab could not hold); otherwise the whole series."""
    import itertools

    sizes = [series.shape[series.axes.index(a)] for a in picks]
    plane = [n for a, n in zip(series.axes, series.shape) if a in "YXS"]
    keyframe = getattr(series, "keyframe", None)
    one_plane_pages = (picks and len(series.pages) == int(np.prod(sizes)) and keyframe is not None
                       and int(np.prod(keyframe.shape)) == int(np.prod(plane)))
    if not one_plane_pages or all(len(p) == n for p, n in zip(picks.values(), sizes)):
        return series.asarray(), False
    keys = [int(np.ravel_multi_index(c, sizes)) for c in itertools.product(*picks.values())]
    array = tif.asarray(key=keys, series=tif.series.index(series))
    return array.reshape([len(p) for p in picks.values()] + plane), True


def parse_axes(text: str, what: str = "index") -> dict:
    """``"Z=3,T=0"`` or ``"Z=max"`` (command line) as ``{"Z": 3, "T": 0}`` or ``{"Z": "max"}``:
    axis letters upper-cased, whole numbers as int; checked against a file when it is read."""
    out = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        axis, sep, value = (x.strip() for x in part.partition("="))
        if not sep or len(axis) != 1 or not axis.isalpha() or not value:
            raise ValueError(f"{what}: expected AXIS=VALUE pairs such as Z=3,T=0 or Z=max; got {text!r}")
        out[axis.upper()] = int(value) if value.lstrip("-").isdigit() else value.lower()
    return out


def check_pixel_size(pixel_size) -> tuple[float, float] | None:
    """``pixel_size`` (µm per pixel: one number, or ``(y, x)``) as a ``(y, x)`` pair of positive
    finite floats, or None; ``ValueError`` with a clear message when it is unusable."""
    if pixel_size is None:
        return None
    bad = ValueError(f"pixel size must be µm per pixel, one positive number or (y, x), got {pixel_size!r}")
    if isinstance(pixel_size, (bool, str, bytes)):
        raise bad
    try:
        values = np.asarray(pixel_size, np.float64).ravel()
    except (TypeError, ValueError):
        raise bad from None
    if values.size == 1:
        values = np.repeat(values, 2)
    if values.size != 2 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise bad
    return float(values[0]), float(values[1])


#: Units to µm, keyed in lower case (units are looked up lower-cased): ImageJ writes µ as
#: the escape "\\u00B5" in its metadata, read here as "\\u00b5m".
_UNIT_UM = {"um": 1.0, "µm": 1.0, "μm": 1.0, "\\u00b5m": 1.0, "micron": 1.0, "microns": 1.0,
            "micrometer": 1.0, "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3,
            "cm": 1e4, "m": 1e6}


def describe_image(data: bytes, filename: str | None = None) -> dict:
    """What an image file holds, read from its header (pixels are not decoded).

    Parameters
    ----------
    data : bytes
        The file's bytes.
    filename : str, optional
        Used in error messages.

    Returns
    -------
    dict
        ``format`` ("TIFF", "PNG", ...), ``axes`` (tifffile letters, e.g.
        ``"ZCYX"``; ``"YX"``/``"YXS"`` for other formats), ``shape``, ``sizes``
        (``{axis: length}``), ``dtype``, ``width``, ``height``, ``pixel_size``
        (``[y, x]`` in µm, or None when the file does not say), ``channel_names``
        (list or None), ``compression`` (TIFF) and ``kind`` ("ome", "imagej" or
        "plain").

    Raises
    ------
    ImageReadError
        For empty, unrecognised, truncated or implausibly large files.
    """
    what = _describe(filename)
    if len(data) == 0:
        raise ImageReadError(f"{what} is empty (0 bytes)")
    fmt = sniff_format(bytes(data[:8]))
    if fmt is None:
        raise ImageReadError(f"{what} is not a PNG, JPEG, BMP or TIFF image "
                             f"(it starts with {bytes(data[:8])!r})")
    try:
        info = _describe_tiff(data, what) if fmt == "TIFF" else _describe_pillow(data, what, fmt)
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ImageReadError(f"could not read the header of {what} as {fmt}: {exc}. "
                             "The file may be truncated or corrupt.") from None
    try:  # a header's nonsense pixel size (0, negative, NaN) is as good as none
        stated = check_pixel_size(info["pixel_size"])
    except ValueError:
        stated = None
    info["pixel_size"] = list(stated) if stated else None
    info["format"] = fmt
    info["sizes"] = dict(zip(info["axes"], info["shape"]))
    info["height"], info["width"] = info["sizes"]["Y"], info["sizes"]["X"]
    return info


def _describe_pillow(data, what, fmt) -> dict:
    from PIL import Image

    img = Image.open(_io.BytesIO(data))
    _check_plane_size((img.height, img.width), what)
    bands = len(img.getbands())
    color = img.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "RGBX", "PA")
    pixel_size = None
    dpi = img.info.get("dpi")
    if fmt == "PNG" and dpi and dpi[0] and dpi[0] > 1000:  # pixels per metre stored as dpi
        pixel_size = [25400.0 / float(dpi[1]), 25400.0 / float(dpi[0])]
    axes, shape = ("YXS", [img.height, img.width, 3]) if color else ("YX", [img.height, img.width])
    if bands == 2 and not color:
        axes, shape = "YX", [img.height, img.width]
    return {"axes": axes, "shape": shape, "dtype": "uint8" if img.mode not in ("I;16", "I", "F")
            else {"I;16": "uint16", "I": "int32", "F": "float32"}[img.mode],
            "pixel_size": pixel_size, "channel_names": None, "compression": None,
            "kind": "plain", "mode": img.mode}


def _describe_tiff(data, what) -> dict:
    import tifffile

    with tifffile.TiffFile(_io.BytesIO(data)) as tif:
        if not tif.series:
            raise ImageReadError(f"{what} contains no image")
        series = tif.series[0]
        axes, shape = series.axes, [int(n) for n in series.shape]
        if "Y" not in axes or "X" not in axes:
            raise ImageReadError(f"{what} has axes {axes!r} without both Y and X")
        _check_plane_size((shape[axes.index("Y")], shape[axes.index("X")]), what)
        page = series.pages[0] if series.pages else tif.pages[0]
        compression = getattr(getattr(page, "compression", None), "name", None)
        pixel_size, names, kind = None, None, "plain"
        if tif.is_ome and tif.ome_metadata:
            kind = "ome"
            pixel_size, names = _ome_metadata(tif.ome_metadata)
        elif tif.is_imagej:
            kind = "imagej"
            meta = tif.imagej_metadata or {}
            factor = _UNIT_UM.get(str(meta.get("unit", "")).strip().lower())
            pixel_size = _tag_pixel_size(page, factor) if factor else None
            labels = meta.get("Labels")
            n_c = shape[axes.index("C")] if "C" in axes else 0
            if isinstance(labels, (list, tuple)) and n_c and len(labels) == n_c:
                names = [str(x) for x in labels]
        else:
            unit = page.tags.get("ResolutionUnit")
            if unit is not None and int(unit.value) == 3:   # centimetre: a real pixel size
                pixel_size = _tag_pixel_size(page, 1e4)
        return {"axes": axes, "shape": shape, "dtype": str(series.dtype),
                "pixel_size": pixel_size, "channel_names": names, "compression": compression,
                "kind": kind}


def _tag_pixel_size(page, factor_um):
    try:
        xr, yr = page.tags["XResolution"].value, page.tags["YResolution"].value
        px, py = xr[1] / xr[0] * factor_um, yr[1] / yr[0] * factor_um
    except (KeyError, ZeroDivisionError, TypeError, IndexError):
        return None
    return [float(py), float(px)] if px > 0 and py > 0 else None


def _ome_metadata(xml: str):
    """(pixel size [y, x] in µm or None, channel names or None) of the first OME image."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    pixels = next((e for e in root.iter() if e.tag.endswith("}Pixels") or e.tag == "Pixels"), None)
    if pixels is None:
        return None, None
    size = []
    for ax in ("Y", "X"):
        value = pixels.get(f"PhysicalSize{ax}")
        unit = pixels.get(f"PhysicalSize{ax}Unit", "µm")
        factor = _UNIT_UM.get(unit.strip().lower()) if unit else 1.0
        size.append(float(value) * factor if value and factor else None)
    channels = [c.get("Name") for c in pixels if c.tag.endswith("Channel")]
    names = channels if channels and all(channels) else None
    return (size if None not in size else None), names


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
