"""Split a large image into overlapping tiles and stitch model outputs back.

Each output pixel is taken from the one tile in which it lies farthest from
a tile edge (the tile's "core"), so stitching is exact, needs no blending
and never cuts or duplicates an object as long as the overlap exceeds the
model's effective receptive field.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Tile", "plan_tiles", "tile_starts"]


@dataclass(frozen=True)
class Tile:
    """Where a tile reads its input and where its core goes in the output."""
    read: tuple[slice, slice]    #: region of the (padded) image fed to the model
    core: tuple[slice, slice]    #: region of the output this tile owns
    inner: tuple[slice, slice]   #: the same region, relative to the tile


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with at least ``overlap``."""
    if length <= tile:
        return [0]
    step = tile - overlap
    n = int(np.ceil((length - tile) / step)) + 1
    starts = np.linspace(0, length - tile, n).round().astype(int)
    return starts.tolist()


def _cores(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """Split [0, length) at midpoints of the overlaps between consecutive tiles."""
    bounds = [0] + [(starts[i] + tile + starts[i + 1]) // 2 for i in range(len(starts) - 1)] + [length]
    return list(zip(bounds[:-1], bounds[1:]))


def plan_tiles(shape: tuple[int, int], tile: int, overlap: int) -> list[Tile]:
    """Tiles covering an image of ``shape`` (already padded to the model's multiple).

    Parameters
    ----------
    shape : (int, int)
        Height and width of the image.
    tile : int
        Tile side; images no larger than this are processed whole.
    overlap : int
        Minimum overlap between neighbouring tiles, in pixels.
    """
    if overlap >= tile:
        raise ValueError("tile overlap must be smaller than the tile size")
    h, w = shape
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    th, tw = min(tile, h), min(tile, w)
    tiles = []
    for y, (cy0, cy1) in zip(ys, _cores(ys, th, h)):
        for x, (cx0, cx1) in zip(xs, _cores(xs, tw, w)):
            tiles.append(Tile(read=(slice(y, y + th), slice(x, x + tw)),
                              core=(slice(cy0, cy1), slice(cx0, cx1)),
                              inner=(slice(cy0 - y, cy1 - y), slice(cx0 - x, cx1 - x))))
    return tiles
