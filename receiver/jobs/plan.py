"""How a job is cut: the tile grid its stages allow, and its tiles' bytes on the wire."""

from __future__ import annotations

import logging

import numpy as np

from common.errors import DecodeError
from common.imageinfo import MAX_IMAGE_PIXELS
from common.jobproto import Handshake
from common.pipeline import STAGES, StageSpec
from common.tiling import decode_tile, encode_tile

log = logging.getLogger(__name__)

MAX_RAW_TILE_BYTES = 12 * 1024**2  # a bigger tile (4K whole frames, stacked) travels as PNG


def job_grid(stages: tuple[StageSpec, ...], requested: tuple[int, int]) -> tuple[tuple[int, int], str]:
    """The grid a job really uses and why it differs from the requested one ("" if it does not).

    A detector looks at the whole picture: on a 3x3 tile it runs 9 times (SSDLite resizes every
    input to 300x300, so a tile costs as much as a frame) and misses whoever a seam cuts. Pipelines
    with a detector stage therefore travel as whole frames, spread over the workers frame by frame.
    """
    detectors = [s.name for s in stages if STAGES[s.name].kind != "filter"]
    if not detectors or requested == (1, 1):
        return requested, ""
    return (1, 1), f"whole frames: the pipeline has a detector ({', '.join(detectors)}), which tiles would cut"


def grid_fields(hs: Handshake) -> dict[str, str]:
    """The grid used, the one asked for and why they differ, for metrics, progress and the preview."""
    (cols, rows), note = job_grid(hs.stages, hs.tiles)
    return {"grid": f"{cols}x{rows}", "grid_requested": f"{hs.tiles[0]}x{hs.tiles[1]}", "grid_note": note}


def encode_tile_bytes(pixels: np.ndarray, tile_format: str) -> bytes:
    """A tile's pixels for the wire: raw tile bytes when asked for and small enough, else PNG
    (docs/PROTOCOL.md section 5)."""
    return encode_tile(pixels, raw=tile_format == "raw" and pixels.nbytes <= MAX_RAW_TILE_BYTES)


def decode_tile_bytes(data: bytes) -> np.ndarray | None:
    """A processed tile from a worker (raw tile bytes or PNG); None if the bytes are not a tile."""
    if not data:
        return None
    try:
        return decode_tile(data, MAX_IMAGE_PIXELS)
    except DecodeError as e:
        log.info("a worker sent back a tile that is not a tile: %s", e)
        return None
