"""An image's size from its header, checked before any decode: the guard against decompression bombs.

A 631-byte JPEG can claim 20000x20000 pixels; libjpeg fills the missing scan data and cv2.imdecode
allocates the whole image (1.2 GB), and detectors then multiply that. Every place that decodes bytes
from the wire (worker, master snapshots and annotations, job server, receiver motion gate) first
calls `check_image`, which reads the size from the header (JPEG SOF, PNG IHDR, raw tile header)
and refuses anything over the cap, or any format we do not send.
"""

from __future__ import annotations

import struct

from common.errors import DecodeError
from common.jpeginfo import jpeg_size
from common.rawtile import RAW_HEADER_BYTES, RAW_MAGIC

MAX_IMAGE_PIXELS = 4096 * 4096  # 16.8 MP: a 4K DCI frame (8.8 MP) fits twice; about 50 MB decoded as BGR
MAX_IMAGE_SIDE = 16384
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageTooLarge(DecodeError):
    """An image claims more pixels than this process accepts."""


def image_size(data: bytes | memoryview) -> tuple[int, int, str] | None:
    """(width, height, format) from a JPEG, PNG or raw tile header; None for anything else (never raises)."""
    head = bytes(data[:32])
    if head[:2] == b"\xff\xd8":
        size = jpeg_size(bytes(data))
        return (*size, "jpeg") if size else None
    if head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR" and len(head) >= 24:
        w, h = struct.unpack(">II", head[16:24])
        return (w, h, "png") if w and h else None
    if head[:4] == RAW_MAGIC and len(head) >= RAW_HEADER_BYTES:
        h, w = struct.unpack(">II", head[4:12])
        return (w, h, "raw") if w and h else None
    return None


def check_image(data: bytes | memoryview, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """(width, height) of an image small enough to decode; DecodeError for bytes that are not a JPEG,
    PNG or raw tile, ImageTooLarge for one over `max_pixels` (or MAX_IMAGE_SIDE on a side)."""
    size = image_size(data)
    if size is None:
        raise DecodeError(f"payload of {len(data)} bytes is not a decodable JPEG, PNG or raw tile "
                          "(no readable size header)")
    w, h, kind = size
    if w * h > max_pixels or max(w, h) > MAX_IMAGE_SIDE:
        raise ImageTooLarge(f"{kind} of {w}x{h} pixels is over this process's limit of {max_pixels} pixels "
                            f"({MAX_IMAGE_SIDE} per side): refused before decoding")
    return w, h
