"""File-job framing and handshake validation (common/jobproto.py)."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import jobproto
from common.errors import DecodeError
from common.jobproto import (
    MAX_CONTROL_BYTES,
    MAX_DATA_CHUNK,
    Handshake,
    JobProtocolError,
    data_header,
    data_size,
    decode_body,
    encode,
    parse_handshake,
    read_data,
    read_message,
    recv_exact,
    recv_message,
    send_data,
    send_message,
)

SHA = "ab" * 32
T = TypeVar("T")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
messages = st.builds(lambda t, rest: {**rest, "type": t},
                     st.text(min_size=1), st.dictionaries(st.text(), json_values, max_size=6))


def stream_handshake(**overrides: object) -> dict:
    msg = {"type": "handshake", "version": 1, "protocol": "stream", "tiles": "3x3",
           "filters": "canny,blur:3", "codec": "h264", "name": "in.mp4", "preview": False,
           "size": 1234, "sha256": SHA}
    msg.update(overrides)
    return {k: v for k, v in msg.items() if v is not ...}


def feed(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    """A StreamReader holding `data` (call inside a running loop)."""
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


def read_with(data: bytes, read: Callable[[asyncio.StreamReader], Awaitable[T]], *, eof: bool = True) -> T:
    """Run `read` on a StreamReader fed with `data` (and EOF unless eof=False)."""
    async def go() -> T:
        return await read(feed(data, eof=eof))

    return asyncio.run(go())


@given(messages)
def test_encode_decode_round_trip(msg: dict) -> None:
    frame = encode(msg)
    (n,) = struct.unpack("!I", frame[:4])
    assert n == len(frame) - 4
    assert decode_body(frame[4:]) == msg


@given(st.lists(messages, max_size=5))
def test_async_read_message_round_trip(msgs: list[dict]) -> None:
    async def read_all() -> list[dict]:
        reader = feed(b"".join(encode(m) for m in msgs))
        return [await read_message(reader) for _ in msgs]

    assert asyncio.run(read_all()) == msgs


def test_encode_is_compact_utf8() -> None:
    assert encode({"type": "x", "a": "é"}) == struct.pack("!I", 21) + '{"type":"x","a":"é"}'.encode()


def test_data_header_is_a_data_message() -> None:
    assert decode_body(data_header(42)[4:]) == {"type": "data", "size": 42}


@pytest.mark.parametrize("msg", [{}, {"type": 3}, {"a": 1}, [("type", "x")]])
def test_encode_refuses_a_message_without_a_type(msg: object) -> None:
    with pytest.raises(ValueError):
        encode(msg)  # type: ignore[arg-type]


def test_encode_refuses_an_oversized_control_message() -> None:
    encode({"type": "x", "pad": "a" * (MAX_CONTROL_BYTES - 30)})
    with pytest.raises(ValueError, match="exceeds"):
        encode({"type": "x", "pad": "a" * MAX_CONTROL_BYTES})


def test_encode_refuses_nan() -> None:
    with pytest.raises(ValueError):
        encode({"type": "x", "v": float("nan")})


@pytest.mark.parametrize("body", [b"\xff\xfe", b"not json", b"[1, 2]", b'"type"', b"{}",
                                  b'{"type": 1}', b'{"type": "x", "v": NaN}'])
def test_decode_body_refuses_bad_bodies(body: bytes) -> None:
    with pytest.raises(JobProtocolError) as err:
        decode_body(body)
    assert isinstance(err.value, DecodeError)
    assert err.value.code == "bad_handshake"


def test_protocol_error_refuses_unknown_codes() -> None:
    assert JobProtocolError("x").code == "bad_handshake"
    with pytest.raises(ValueError):
        JobProtocolError("x", "nope")


def test_read_message_refuses_an_oversized_length_before_reading_the_body() -> None:
    with pytest.raises(JobProtocolError) as err:
        read_with(struct.pack("!I", MAX_CONTROL_BYTES + 1), read_message, eof=False)
    assert err.value.code == "too_large"


@pytest.mark.parametrize("cut", [0, 2, 4, 10])
def test_read_message_on_a_truncated_stream_raises_incomplete_read(cut: int) -> None:
    frame = encode({"type": "progress", "frames_in": 3})
    with pytest.raises(asyncio.IncompleteReadError):
        read_with(frame[:cut], read_message)


def test_read_data_reads_exactly_the_announced_bytes() -> None:
    async def go() -> tuple[bytes, dict]:
        reader = feed(data_header(5) + b"hello" + encode({"type": "eof"}))
        n = data_size(await read_message(reader))
        return await read_data(reader, n), await read_message(reader)

    assert asyncio.run(go()) == (b"hello", {"type": "eof"})


def test_read_data_truncated_and_oversized() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        read_with(b"abc", lambda r: read_data(r, 5))
    with pytest.raises(JobProtocolError) as err:
        read_with(b"", lambda r: read_data(r, MAX_DATA_CHUNK + 1))
    assert err.value.code == "too_large"


@pytest.mark.parametrize(("msg", "code"), [
    ({"type": "data", "size": MAX_DATA_CHUNK + 1}, "too_large"),
    ({"type": "data", "size": -1}, "bad_handshake"),
    ({"type": "data", "size": True}, "bad_handshake"),
    ({"type": "data"}, "bad_handshake"),
    ({"type": "eof", "size": 3}, "bad_handshake"),
])
def test_data_size_refuses(msg: dict, code: str) -> None:
    with pytest.raises(JobProtocolError) as err:
        data_size(msg)
    assert err.value.code == code


def test_blocking_helpers_over_a_socket_pair() -> None:
    a, b = socket.socketpair()
    with a, b:
        send_message(a, {"type": "accepted", "job_id": "j1"})
        send_data(a, b"xyz")
        assert recv_message(b) == {"type": "accepted", "job_id": "j1"}
        assert recv_exact(b, data_size(recv_message(b))) == b"xyz"
        a.sendall(struct.pack("!I", MAX_CONTROL_BYTES + 1))
        with pytest.raises(JobProtocolError):
            recv_message(b)
        a.sendall(b"ab")
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(ConnectionError):
            recv_exact(b, 3)


def test_parse_stream_handshake() -> None:
    hs = parse_handshake(stream_handshake(tiles=[4, 2], filters="Canny, blur:5, face", sha256=SHA.upper()))
    assert hs == Handshake(version=1, protocol="stream", tiles=(4, 2), filters="canny,blur:5,face",
                           stages=hs.stages, codec="h264", name="in.mp4", preview=False, size=1234, sha256=SHA)
    assert [s.name for s in hs.stages] == ["canny", "blur", "face"]
    assert parse_handshake(json.loads(json.dumps(hs.to_wire()))) == hs


def test_parse_file_handshake_with_defaults() -> None:
    hs = parse_handshake(stream_handshake(protocol="file", path="/jobs/in.mp4", size=..., sha256=...,
                                          name=..., preview=...))
    assert (hs.protocol, hs.path, hs.name, hs.preview, hs.size, hs.sha256, hs.tile_format) == (
        "file", "/jobs/in.mp4", "upload", False, None, None, "raw")
    assert parse_handshake(hs.to_wire()) == hs


def test_tile_format_png_survives_the_wire() -> None:
    hs = parse_handshake(stream_handshake(tile_format="png"))
    assert hs.tile_format == "png" and parse_handshake(hs.to_wire()).tile_format == "png"


@pytest.mark.parametrize(("overrides", "code"), [
    ({"type": "hello"}, "bad_handshake"),
    ({"version": 2}, "bad_handshake"),
    ({"version": True}, "bad_handshake"),
    ({"version": ...}, "bad_handshake"),
    ({"protocol": "ftp"}, "bad_handshake"),
    ({"name": ""}, "bad_handshake"),
    ({"name": "x" * 256}, "bad_handshake"),
    ({"name": 7}, "bad_handshake"),
    ({"preview": "yes"}, "bad_handshake"),
    ({"size": 0}, "bad_handshake"),
    ({"size": "12"}, "bad_handshake"),
    ({"size": ...}, "bad_handshake"),
    ({"sha256": "xyz"}, "bad_handshake"),
    ({"sha256": "g" * 64}, "bad_handshake"),
    ({"sha256": ...}, "bad_handshake"),
    ({"protocol": "file"}, "bad_handshake"),  # no path
    ({"protocol": "file", "path": ""}, "bad_handshake"),
    ({"tiles": "0x3"}, "bad_tiles"),
    ({"tiles": "17x1"}, "bad_tiles"),
    ({"tiles": "3by3"}, "bad_tiles"),
    ({"tiles": [3]}, "bad_tiles"),
    ({"tiles": [3, "3"]}, "bad_tiles"),
    ({"tiles": ...}, "bad_tiles"),
    ({"filters": "sharpen"}, "unknown_filter"),
    ({"filters": "blur:4"}, "unknown_filter"),
    ({"filters": ""}, "unknown_filter"),
    ({"filters": ["canny"]}, "unknown_filter"),
    ({"filters": ...}, "unknown_filter"),
    ({"codec": "vp9"}, "bad_codec"),
    ({"codec": None}, "bad_codec"),
    ({"tile_format": "jpeg"}, "bad_handshake"),  # lossy tiles would leave seams
    ({"tile_format": None}, "bad_handshake"),
])
def test_parse_handshake_refusals(overrides: dict, code: str) -> None:
    with pytest.raises(JobProtocolError) as err:
        parse_handshake(stream_handshake(**overrides))
    assert err.value.code == code


def test_module_constants() -> None:
    assert (jobproto.VERSION, jobproto.MAX_CONTROL_BYTES, jobproto.MAX_DATA_CHUNK, jobproto.DEFAULT_PORT) == (
        1, 65536, 4 * 1024 * 1024, 9090)
