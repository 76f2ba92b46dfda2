"""Cutting a pipe's byte stream into frames: JPEGs at their markers (bounded), raw frames by size, and
the fifo: source syntax."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sender.framing import FifoSpec, JpegSplitter, RawCutter


def jpegs(n: int, size: tuple[int, int] = (64, 48)) -> list[bytes]:
    """Real, different JPEGs (noise compresses badly, so each carries plenty of entropy-coded 0xFF)."""
    rng = np.random.default_rng(n)
    return [cv2.imencode(".jpg", rng.integers(0, 256, (size[1], size[0], 3), np.uint8))[1].tobytes()
            for _ in range(n)]


def with_comment(jpeg: bytes, text: bytes) -> bytes:
    """The JPEG with a COM segment holding `text` right after its SOI."""
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


def feed_in_pieces(splitter: JpegSplitter, data: bytes, cuts: list[int]) -> list[bytes]:
    out, start = [], 0
    for cut in sorted(c % (len(data) + 1) for c in cuts) + [len(data)]:
        out += splitter.feed(data[start:cut])
        start = cut
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 10**6), max_size=30))
def test_concatenated_jpegs_come_out_whole_however_the_bytes_arrive(cuts):
    images = jpegs(4)
    images[1] = with_comment(images[1], b"EOI \xff\xd9 and SOI \xff\xd8 inside a header")
    splitter = JpegSplitter()
    assert feed_in_pieces(splitter, b"".join(images), cuts) == images
    assert splitter.pending == 0 and not splitter.counters


def test_a_marker_inside_a_header_is_not_an_end():
    image = with_comment(jpegs(1)[0], b"\xff\xd9" * 10)
    assert cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR) is not None  # still a JPEG
    assert JpegSplitter().feed(image + image) == [image, image]


def test_junk_and_a_cut_off_image_are_skipped_and_counted():
    a, b, c = jpegs(3)
    splitter = JpegSplitter()
    out = splitter.feed(b"garbage" + a + b"\x00\xff\x12" + b[: len(b) // 2] + c)
    assert out == [a, c]
    assert splitter.counters["malformed"] == 1 and splitter.counters["skipped_bytes"] > len(b) // 2


def test_an_oversize_image_is_rejected_and_the_buffer_stays_bounded():
    small, big = jpegs(1)[0], jpegs(1, (640, 480))[0]
    limit = len(big) // 2
    splitter = JpegSplitter(max_bytes=limit)
    out, peak = [], 0
    stream = small + big + small
    for i in range(0, len(stream), 4096):
        out += splitter.feed(stream[i:i + 4096])
        peak = max(peak, len(splitter.buf))
    assert out == [small, small]
    assert splitter.counters["oversize"] == 1
    assert peak <= limit + 4096


def test_raw_frames_are_cut_by_size_and_a_partial_one_waits():
    cutter = RawCutter(6)
    assert cutter.feed(b"abcdefgh") == [b"abcdef"]
    assert cutter.pending == 2
    assert cutter.feed(b"ijklmnopqrstu") == [b"ghijkl", b"mnopqr"] and cutter.pending == 3


def test_fifo_specs():
    assert FifoSpec.parse("fifo:/run/cam.mjpeg") == FifoSpec("/run/cam.mjpeg")
    raw = FifoSpec.parse("fifo:/tmp/p?format=rawvideo&size=640x480&pix_fmt=yuv420p")
    assert (raw.width, raw.height, raw.pix_fmt, raw.frame_bytes) == (640, 480, "yuv420p", 460800)
    assert FifoSpec.parse("fifo:/tmp/p?format=rawvideo&size=4x2").frame_bytes == 24  # bgr24 by default
    for bad, why in [("fifo:", "needs a path"), ("fifo:/p?format=h264", "mjpeg or rawvideo"),
                     ("fifo:/p?format=rawvideo", "size=WIDTHxHEIGHT"), ("fifo:/p?size=2x2", "for format=rawvideo"),
                     ("fifo:/p?format=rawvideo&size=3x3&pix_fmt=yuv420p", "even"),
                     ("fifo:/p?format=rawvideo&size=2x2&pix_fmt=nv12", "pix_fmt must be"),
                     ("fifo:/p?format=rawvideo&size=8192x8192&pix_fmt=bgr24", "over 64 MiB"),
                     ("fifo:/p?colour=red", "unknown fifo parameter"), ("fifo:/p?fps=10", "unknown fifo parameter")]:
        with pytest.raises(ValueError, match=why):
            FifoSpec.parse(bad)


@pytest.mark.parametrize("pix_fmt", ["bgr24", "rgb24", "gray", "yuv420p"])
def test_raw_frames_decode_to_bgr(pix_fmt):
    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[:] = (255, 255, 255) if pix_fmt == "gray" else (30, 60, 220)  # a red the colour formats must keep red
    raw = {"bgr24": bgr, "rgb24": bgr[..., ::-1], "gray": bgr[..., 0],
           "yuv420p": cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)}[pix_fmt]
    spec = FifoSpec.parse(f"fifo:/p?format=rawvideo&size=6x4&pix_fmt={pix_fmt}")
    img = spec.decode(np.ascontiguousarray(raw).tobytes())
    assert img.shape == (4, 6, 3)
    assert np.abs(img.astype(int) - bgr).max() <= 3
