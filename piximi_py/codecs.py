"""TIFF decompression where the ``imagecodecs`` package is missing (the page).

tifffile decodes compressed TIFF segments with ``imagecodecs``; without it,
it falls back to its ``_imagecodecs`` module, which has zlib (Deflate),
PackBits and LZMA but not LZW, JPEG or Zstandard, so the most common
compressed microscopy TIFFs (ImageJ's LZW, Zstd from newer writers) could
not be opened in Pyodide, where no imagecodecs build exists. This module
supplies those decoders from what the page has (numpy and Python, Pillow's
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


#: Bits of the k-th code after a clear code (k from 0), TIFF's "early change": 9 up to
#: k = 253, 10 up to 765, 11 up to 1789, then 12. Each code but the first adds a table entry,
#: so the widths of a run of codes are known before it is read.
_RUN_WIDTHS = 9 + np.searchsorted(np.array([253, 765, 1789]), np.arange(4096), side="left")
_RUN_WIDTHS_FULL = np.full(4096, 12)   # a table past 4096 entries without a clear (tolerated)


def lzw_decode(encoded: bytes, /, *, out=None) -> bytes:
    """Decode TIFF LZW (MSB-first codes of 9-12 bits, with early change).

    The codes between two clear codes are read at once with numpy (their widths follow from
    their count, :data:`_RUN_WIDTHS`); only the table is built code by code, in Python.

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
    padded = np.frombuffer(data + b"\x00\x00", np.uint8).astype(np.int64)
    windows = (padded[:-2] << 16) | (padded[1:-1] << 8) | padded[2:]  # 3 bytes from each byte on
    result = bytearray()
    table = [bytes((i,)) for i in range(256)] + [b"", b""]
    append = table.append
    prev = None
    bitpos, widths = 0, _RUN_WIDTHS
    while True:
        ends = bitpos + np.cumsum(widths)
        n = int(np.searchsorted(ends, total_bits, side="right"))  # codes wholly within the data
        if n == 0:
            break
        starts = ends[:n] - widths[:n]
        codes = (windows[starts >> 3] >> (24 - (starts & 7) - widths[:n])) & ((1 << widths[:n]) - 1)
        special = np.flatnonzero((codes == _CLEAR) | (codes == _EOI))
        run = int(special[0]) if special.size else n
        todo = codes[:run].tolist()
        if todo and prev is None:  # the first code after a clear is a literal
            if todo[0] > 255:
                raise ValueError(f"corrupt LZW stream: code {todo[0]} after a clear code")
            prev = table[todo[0]]
            result += prev
            todo = todo[1:]
        size = len(table)
        for code in todo:
            if code < size:
                entry = table[code]
                append(prev + entry[:1])
            elif code == size:
                entry = prev + prev[:1]
                append(entry)
            else:
                raise ValueError(f"corrupt LZW stream: code {code} beyond the table ({size})")
            size += 1
            result += entry
            prev = entry
        if run == n:
            if n < len(widths):
                break                        # the data ends (without an end code)
            bitpos, widths = int(ends[-1]), _RUN_WIDTHS_FULL
            continue
        if codes[run] == _EOI:
            break
        del table[258:]                      # a clear code: a new run of 9-bit codes
        prev = None
        bitpos, widths = int(ends[run]), _RUN_WIDTHS
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
