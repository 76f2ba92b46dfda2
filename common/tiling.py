"""Seamless tiling: split a frame into a grid of cores, cut each with a halo, place results back;
and the tile codec both sides of a file job use (raw tile bytes, or PNG).

The geometry is pure (numpy only). The cores partition the frame exactly; each cut is its core grown by `halo`
pixels on every side and clipped to the frame, so a filter whose radius of influence is at most
`halo` gives, on the cut's core, exactly the pixels it gives on the whole frame. At the frame
border the cut touches the real border, so the filter's border mode sees the same pixels too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from common.errors import DecodeError
from common.imageinfo import check_image
from common.rawtile import decode_raw_tile, encode_raw_tile, is_raw_tile

MAX_GRID = 16
_GRID_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


@dataclass(frozen=True)
class Rect:
    """An axis-aligned rectangle in pixels: top-left (x, y), size (w, h)."""

    x: int
    y: int
    w: int
    h: int

    @property
    def x2(self) -> int:
        return self.x + self.w

    @property
    def y2(self) -> int:
        return self.y + self.h

    def contains(self, other: Rect) -> bool:
        return self.x <= other.x and self.y <= other.y and other.x2 <= self.x2 and other.y2 <= self.y2


@dataclass(frozen=True)
class Tile:
    """One grid cell: its core in the frame and the halo-grown cut (clipped to the frame)."""

    index: int
    col: int
    row: int
    core: Rect
    cut: Rect

    @property
    def offset_x(self) -> int:
        """Column of the core's left edge inside the cut."""
        return self.core.x - self.cut.x

    @property
    def offset_y(self) -> int:
        """Row of the core's top edge inside the cut."""
        return self.core.y - self.cut.y


def parse_grid(text: str) -> tuple[int, int]:
    """Parse "COLSxROWS" (e.g. "3x3", "2X4") into (cols, rows), each 1..16."""
    m = _GRID_RE.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"bad tile grid {text!r}: expected COLSxROWS, e.g. '3x3'")
    cols, rows = int(m.group(1)), int(m.group(2))
    for name, value in (("columns", cols), ("rows", rows)):
        if not 1 <= value <= MAX_GRID:
            raise ValueError(f"bad tile grid {text!r}: {name} must be 1..{MAX_GRID}, got {value}")
    return cols, rows


def _bounds(length: int, parts: int) -> list[int]:
    """Cut points 0 = b0 < b1 < ... < b_parts = length; part sizes differ by at most 1."""
    return [i * length // parts for i in range(parts + 1)]


def plan_tiles(width: int, height: int, cols: int, rows: int, halo: int) -> list[Tile]:
    """Tiles in row-major order whose cores partition a width x height frame; cuts add `halo` px."""
    if cols < 1 or rows < 1:
        raise ValueError(f"grid must be at least 1x1, got {cols}x{rows}")
    if width < cols or height < rows:
        raise ValueError(f"a {width}x{height} frame is too small for a {cols}x{rows} grid")
    if halo < 0:
        raise ValueError(f"halo must be >= 0 px, got {halo}")
    xs, ys = _bounds(width, cols), _bounds(height, rows)
    tiles = []
    for row in range(rows):
        for col in range(cols):
            core = Rect(xs[col], ys[row], xs[col + 1] - xs[col], ys[row + 1] - ys[row])
            x0, y0 = max(0, core.x - halo), max(0, core.y - halo)
            x1, y1 = min(width, core.x2 + halo), min(height, core.y2 + halo)
            tiles.append(Tile(len(tiles), col, row, core, Rect(x0, y0, x1 - x0, y1 - y0)))
    return tiles


def cut(frame: np.ndarray, tile: Tile) -> np.ndarray:
    """A contiguous copy of the tile's cut region of `frame` (HxW or HxWxC)."""
    c = tile.cut
    if frame.ndim < 2 or frame.shape[0] < c.y2 or frame.shape[1] < c.x2:
        raise ValueError(f"frame of shape {frame.shape} does not contain cut {c}")
    return np.ascontiguousarray(frame[c.y : c.y2, c.x : c.x2])


def place(canvas: np.ndarray, tile: Tile, processed_cut: np.ndarray) -> None:
    """Write the core part of a processed cut into `canvas` (same channel layout as the cut)."""
    c, k = tile.cut, tile.core
    if processed_cut.shape[:2] != (c.h, c.w):
        raise ValueError(f"processed tile {tile.index} is {processed_cut.shape[:2]}, expected {(c.h, c.w)}")
    if canvas.shape[2:] != processed_cut.shape[2:]:
        raise ValueError(f"canvas channels {canvas.shape[2:]} differ from the tile's {processed_cut.shape[2:]}")
    oy, ox = tile.offset_y, tile.offset_x
    canvas[k.y : k.y2, k.x : k.x2] = processed_cut[oy : oy + k.h, ox : ox + k.w]


def assemble(tiles_and_outputs: Iterable[tuple[Tile, np.ndarray]], width: int, height: int) -> np.ndarray:
    """A new height x width canvas, shaped like the first output (dtype, channels), with every core placed."""
    canvas: np.ndarray | None = None
    for tile, output in tiles_and_outputs:
        if canvas is None:
            canvas = np.zeros((height, width, *output.shape[2:]), dtype=output.dtype)
        place(canvas, tile, output)
    if canvas is None:
        raise ValueError("nothing to assemble: no tiles given")
    return canvas


# ----- the tile codec: what travels between the job server and the workers ------------------------


def encode_tile(pixels: np.ndarray, *, raw: bool = True) -> bytes:
    """A tile's pixels for the wire, losslessly: raw tile bytes (a copy, no compression), or PNG at fast
    compression (fewer bytes, far more CPU) when `raw` is false. DecodeError if PNG encoding fails."""
    if raw:
        return encode_raw_tile(pixels)
    ok, data = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise DecodeError(f"could not encode a {pixels.shape} tile as PNG")
    return data.tobytes()


def decode_tile(data: bytes, max_pixels: int, *, color: bool = False) -> np.ndarray:
    """Raw tile bytes, PNG or JPEG back to a writable image, after its header's size is checked against
    `max_pixels`. A raw tile keeps its channels; an encoded image is read as it is (gray stays gray),
    or as BGR with `color`. DecodeError (ImageTooLarge for a bomb) when the bytes are not an image."""
    check_image(data, max_pixels)
    if is_raw_tile(data):
        try:
            return decode_raw_tile(data).copy()
        except ValueError as e:
            raise DecodeError(str(e)) from e
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR if color else cv2.IMREAD_UNCHANGED) \
        if data else None
    if image is None:
        raise DecodeError(f"{len(data)} bytes are not a decodable JPEG/PNG image")
    return image
