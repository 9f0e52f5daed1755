"""TIFF decompression where the ``imagecodecs`` package is missing (the page).

tifffile decodes compressed TIFF segments with ``imagecodecs``; without it,
it falls back to its ``_imagecodecs`` module, which has zlib (Deflate),
PackBits and LZMA but not LZW, JPEG or Zstandard, so the most common
compressed microscopy TIFFs (ImageJ's LZW, Zstd from newer writers) could
not be opened in Pyodide, where no imagecodecs build exists. This module
supplies those decoders from what the page has (pure Python, Pillow's
libjpeg, a JavaScript Zstandard decoder the worker imports on first use) and
lends them to tifffile's fallback (:func:`register_tiff_codecs`). CPython installs ``imagecodecs``, which
tifffile prefers; the tests check these decoders against it.
"""
from __future__ import annotations

import io as _io

import numpy as np

__all__ = ["lzw_decode", "jpeg_decode", "zstd_decode", "register_tiff_codecs", "set_zstd_decoder",
           "needs_zstd_decoder"]

_CLEAR, _EOI = 256, 257


def lzw_decode(encoded: bytes, /, *, out=None) -> bytes:
    """Decode TIFF LZW (MSB-first codes of 9-12 bits, with early change).

    Parameters
    ----------
    encoded : bytes
        One compressed strip or tile.
    out : ignored
        For the signature tifffile calls decoders with.

    Returns
    -------
    bytes
        The decompressed bytes (before any predictor is undone).

    Raises
    ------
    ValueError
        For old-style (LSB-first, pre-TIFF 6.0) LZW or a corrupt stream.
    """
    del out
    data = bytes(encoded)
    if data[:2] == b"\x00\x01":
        raise ValueError("old-style (LSB-first) LZW is not supported; re-save the TIFF")
    total_bits = 8 * len(data)
    data += b"\x00\x00\x00"  # codes are read 3 bytes at a time
    from_bytes = int.from_bytes
    result = bytearray()
    table = [bytes((i,)) for i in range(256)] + [b"", b""]
    append = table.append
    width, mask, next_width_at = 9, 511, 511
    prev = None
    bitpos = 0
    while bitpos + width <= total_bits:
        p = bitpos >> 3
        code = (from_bytes(data[p:p + 3], "big") >> (24 - (bitpos & 7) - width)) & mask
        bitpos += width
        if code == _EOI:
            break
        if code == _CLEAR:
            del table[258:]
            width, mask, next_width_at = 9, 511, 511
            prev = None
            continue
        if prev is None:  # the first code after a clear is a literal
            if code > 255:
                raise ValueError(f"corrupt LZW stream: code {code} after a clear code")
            entry = table[code]
        elif code < len(table):
            entry = table[code]
            append(prev + entry[:1])
        elif code == len(table):
            entry = prev + prev[:1]
            append(entry)
        else:
            raise ValueError(f"corrupt LZW stream: code {code} beyond the table ({len(table)})")
        result += entry
        prev = entry
        if len(table) >= next_width_at and width < 12:  # early change: one code before the table fills
            width += 1
            mask = (1 << width) - 1
            next_width_at = mask
    return bytes(result)


def _merge_jpeg_tables(tables: bytes | None, data: bytes) -> bytes:
    """A TIFF JPEG segment and its JPEGTables tag as one JPEG stream."""
    if not tables:
        return data
    # tables: SOI, DQT/DHT..., EOI; data: SOI, frame... -> SOI, tables, frame...
    return tables[:-2] + data[2:]


def jpeg_decode(data: bytes, /, *, bitspersample=None, tables=None, header=None, colorspace=None,
                outcolorspace=None, shape=None, out=None) -> np.ndarray:
    """Decode a baseline 8-bit JPEG segment of a TIFF with Pillow's libjpeg.

    ``colorspace`` is tifffile's: 2 (RGB) when the segment's samples are RGB
    rather than YCbCr, so no colour transform is applied. Returns ``(H, W)``
    or ``(H, W, 3)`` uint8.
    """
    from PIL import Image

    del out, outcolorspace
    if bitspersample not in (None, 8):
        raise ValueError(f"{bitspersample}-bit JPEG is not supported here; re-save the TIFF as LZW or Deflate")
    stream = _merge_jpeg_tables(tables, bytes(header or b"") + bytes(data))
    with Image.open(_io.BytesIO(stream)) as im:
        if im.mode == "RGB" and colorspace == 2:
            im.tile = [(t[0], t[1], t[2], ("RGB", "RGB")) for t in im.tile]  # samples are RGB: no transform
        im.load()
        arr = np.asarray(im)
    if shape is not None and tuple(arr.shape[:2]) != tuple(shape[:2]):
        # segments at the image's edge may be coded smaller or larger than the tile
        full = np.zeros(tuple(shape[:2]) + arr.shape[2:], arr.dtype)
        h, w = min(arr.shape[0], shape[0]), min(arr.shape[1], shape[1])
        full[:h, :w] = arr[:h, :w]
        arr = full
    return arr


_zstd_decoder = None  # set by the page: a JavaScript decoder (fzstd), see set_zstd_decoder


def _python_zstd():
    try:
        import zstandard
    except ImportError:
        try:
            from compression import zstd
        except ImportError:
            return None
        return zstd.decompress
    return lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data)


def set_zstd_decoder(decoder) -> None:
    """Use ``decoder(bytes) -> bytes`` for Zstandard where Python has no module for it
    (the page: Pyodide ships none that the site can serve, so it lends fzstd)."""
    global _zstd_decoder
    _zstd_decoder = decoder


def zstd_decode(data: bytes, /, *, out=None) -> bytes:
    """Decode a Zstandard frame (``zstandard``, Python 3.14's ``compression.zstd``,
    or the decoder given to :func:`set_zstd_decoder`)."""
    del out
    decode = _python_zstd() or _zstd_decoder
    if decode is None:
        raise ImportError("Zstandard TIFFs need the 'zstandard' package")
    return bytes(decode(bytes(data)))


def _has_imagecodecs() -> bool:
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        return False
    return True


def register_tiff_codecs() -> bool:
    """Give tifffile the decoders above where ``imagecodecs`` is missing.

    Returns
    -------
    bool
        True when tifffile's fallback codecs were extended, False when
        ``imagecodecs`` is installed (tifffile uses it).
    """
    import tifffile.tifffile as tt

    if getattr(tt.imagecodecs, "__name__", "").split(".")[-1] != "_imagecodecs":
        return False
    fallback = tt.imagecodecs
    fallback.lzw_decode = lzw_decode
    fallback.jpeg_decode = jpeg_decode
    fallback.zstd_decode = zstd_decode
    return True


def needs_zstd_decoder(compression: str | None) -> bool:
    """Whether a TIFF compressed so (tifffile's name, e.g. "ZSTD") needs a decoder
    lent with :func:`set_zstd_decoder` before it can be read."""
    return (str(compression or "").upper().startswith("ZSTD") and not _has_imagecodecs()
            and _python_zstd() is None and _zstd_decoder is None)
