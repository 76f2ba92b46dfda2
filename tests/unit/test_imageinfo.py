"""Image sizes read from headers, and the cap checked before any decode (decompression bombs)."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from cluster.testdata import jpeg_claiming
from common.errors import DecodeError
from common.imageinfo import MAX_IMAGE_PIXELS, ImageTooLarge, check_image, image_size
from common.rawtile import encode_raw_tile


def png_claiming(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk)) \
        + b"\0" * 20


def test_sizes_from_headers():
    img = np.zeros((48, 64, 3), np.uint8)
    assert image_size(cv2.imencode(".jpg", img)[1].tobytes()) == (64, 48, "jpeg")
    assert image_size(cv2.imencode(".png", img)[1].tobytes()) == (64, 48, "png")
    assert image_size(encode_raw_tile(img)) == (64, 48, "raw")
    assert image_size(b"GIF89a....") is None and image_size(b"") is None


def test_a_small_bomb_is_refused_before_decoding():
    bomb = jpeg_claiming(20000, 20000)
    assert len(bomb) < 1000
    with pytest.raises(ImageTooLarge, match="20000x20000"):
        check_image(bomb)
    with pytest.raises(ImageTooLarge):
        check_image(png_claiming(12000, 12000))
    with pytest.raises(ImageTooLarge):
        check_image(jpeg_claiming(65000, 10))  # thin but too long a side


def test_normal_frames_pass_and_the_cap_is_configurable():
    frame = cv2.imencode(".jpg", np.zeros((1080, 1920, 3), np.uint8))[1].tobytes()
    assert check_image(frame) == (1920, 1080)
    assert 1920 * 1080 < MAX_IMAGE_PIXELS
    with pytest.raises(ImageTooLarge, match="limit of 1000000 pixels"):
        check_image(frame, max_pixels=1_000_000)


def test_anything_else_is_not_an_image():
    with pytest.raises(DecodeError, match="not a decodable JPEG, PNG or raw tile"):
        check_image(b"\x00" * 100)
    with pytest.raises(DecodeError):
        check_image(b"\xff\xd8\xff\xda" + b"\0" * 10)  # a scan before any frame header
