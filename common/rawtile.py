"""Raw tile bytes: a tile's pixels as they are, with a small header, for the trip between the job
server and the workers (docs/PROTOCOL.md section 5). Pure (numpy only)."""

from __future__ import annotations

import struct

import numpy as np

# A tile crosses the wire twice (job server -> worker -> job server). PNG costs ~26 ms per 768x432
# frame in encode + decode; raw bytes cost a copy. Format (docs/PROTOCOL.md section 5):
#   magic b"FHRT" | height u32 BE | width u32 BE | channels u8 | height*width*channels uint8, row-major
# Channels is 1 (grey, e.g. Canny's output) or 3 (BGR). Nothing else: no compression, no padding.

RAW_MAGIC = b"FHRT"
_RAW_HEADER = struct.Struct(">4sIIB")
RAW_HEADER_BYTES = _RAW_HEADER.size


def is_raw_tile(data: bytes | memoryview) -> bool:
    """True if `data` starts with the raw tile magic (JPEG and PNG never do)."""
    return bytes(data[:4]) == RAW_MAGIC


def encode_raw_tile(image: np.ndarray) -> bytes:
    """A uint8 HxW or HxWx{1,3} image as raw tile bytes (header + pixels)."""
    if image.dtype != np.uint8:
        raise ValueError(f"a raw tile must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] in (1, 3):
        channels = image.shape[2]
    elif image.ndim == 2:
        channels = 1
    else:
        raise ValueError(f"a raw tile must be HxW, HxWx1 or HxWx3, got shape {image.shape}")
    h, w = image.shape[:2]
    return _RAW_HEADER.pack(RAW_MAGIC, h, w, channels) + np.ascontiguousarray(image).tobytes()


def decode_raw_tile(data: bytes | memoryview) -> np.ndarray:
    """Raw tile bytes back to an image: HxW for 1 channel, HxWx3 for 3. A read-only view of `data`.

    ValueError if the header is not a raw tile's or the pixel count does not match it.
    """
    if len(data) < RAW_HEADER_BYTES:
        raise ValueError(f"raw tile of {len(data)} bytes is shorter than its {RAW_HEADER_BYTES}-byte header")
    magic, h, w, channels = _RAW_HEADER.unpack_from(data)
    if magic != RAW_MAGIC:
        raise ValueError(f"not a raw tile: magic {magic!r}, expected {RAW_MAGIC!r}")
    if channels not in (1, 3) or h < 1 or w < 1:
        raise ValueError(f"raw tile header is invalid: {h}x{w}, {channels} channels")
    expected = h * w * channels
    got = len(data) - RAW_HEADER_BYTES
    if got != expected:
        raise ValueError(f"raw tile {h}x{w}x{channels} needs {expected} pixel bytes, got {got}")
    pixels = np.frombuffer(data, np.uint8, count=expected, offset=RAW_HEADER_BYTES)
    return pixels.reshape((h, w) if channels == 1 else (h, w, 3))
