"""The local socket's framing: a 22-byte header and the JPEG, decoded incrementally and bounded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.unixproto import HEADER, MAX_FRAME_BYTES, FrameDecoder, UnixFrame, UnixFrameError, encode_header


def frame_bytes(port: int, seq: int, capture_ns: int, data: bytes) -> bytes:
    return encode_header(port=port, seq=seq, capture_ns=capture_ns, length=len(data)) + data


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 2**32 - 1), st.integers(0, 2**63 - 1),
                          st.binary(min_size=1, max_size=300)), max_size=8),
       st.lists(st.integers(1, 64), min_size=1))
def test_frames_come_out_whole_however_the_bytes_arrive(frames, steps):
    stream = b"".join(frame_bytes(*f) for f in frames)
    decoder, out, i, k = FrameDecoder(), [], 0, 0
    while i < len(stream):
        step = steps[k % len(steps)]
        out += decoder.feed(stream[i:i + step])
        i, k = i + step, k + 1
    assert out == [UnixFrame(*f) for f in frames]
    assert not decoder.pending


def test_the_header_is_22_bytes_in_network_order():
    h = encode_header(port=5010, seq=7, capture_ns=1, length=3)
    assert HEADER.size == 22 and h[:4] == b"FU\x01\x00" and h[4:6] == (5010).to_bytes(2, "big")
    assert h[-4:] == (3).to_bytes(4, "big")
    with pytest.raises(ValueError):
        encode_header(port=1, seq=0, capture_ns=0, length=MAX_FRAME_BYTES + 1)


@pytest.mark.parametrize(("raw", "reason"), [
    (b"XX" + bytes(20), "bad_magic"),
    (b"FU\x02\x00" + bytes(18), "bad_version"),
    (b"FU\x01\x01" + bytes(18), "bad_version"),
    (frame_bytes(1, 0, 0, b"x")[:18] + (1000).to_bytes(4, "big"), "bad_length"),
    (frame_bytes(1, 0, 0, b"x")[:18] + bytes(4), "bad_length"),
])
def test_a_broken_header_ends_the_stream_with_its_reason_after_the_frames_before_it(raw, reason):
    decoder = FrameDecoder(max_bytes=999)
    good = frame_bytes(1, 5, 6, b"ok")
    assert decoder.feed(good + raw + good) == [UnixFrame(1, 5, 6, b"ok")]
    assert isinstance(decoder.error, UnixFrameError) and decoder.error.reason == reason
    assert decoder.feed(good) == [] and not decoder.buf  # nothing after it is read or kept


def test_the_decoder_holds_at_most_one_frame():
    decoder = FrameDecoder(max_bytes=1000)
    assert decoder.feed(frame_bytes(1, 0, 0, b"a" * 1000)[:-1]) == [] and decoder.pending
    assert len(decoder.buf) == 999  # the header is taken as soon as it is whole; the payload waits
