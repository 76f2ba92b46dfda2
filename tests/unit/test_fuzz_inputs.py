"""Fuzz targets for everything that parses bytes from the network: the datagram decoder, the
reassembler fed hostile sequences (keyless and keyed), and the file-job protocol decoder.

Each target states the only errors it may raise and the bounds that must hold; hypothesis looks for
a counter-example. max_examples are tuned so the whole file runs in about 10 s.
"""

from __future__ import annotations

import asyncio
import json
import random
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import jobproto
from common.protocol import (
    CRC_OFFSET,
    FLAG_SIGNED,
    HEADER,
    HEADER_BYTES,
    MAC_BYTES,
    MAGIC,
    DatagramError,
    decode_datagram,
    encode_frame,
)
from common.reassembly import REPLAY_WINDOW_FRAMES, FrameAssembler, ReassemblyLimits
from tests.cores import BUILT, CORES, NOT_BUILT, compiled_assembler

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = bytes(range(32))

u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)


@st.composite
def crafted_datagrams(draw: st.DrawFn) -> bytes:
    """A header with arbitrary fields, an arbitrary payload and, most of the time, a correct CRC:
    this gets past the cheap checks into the length and chunk logic."""
    flags = draw(st.sampled_from([0, 0, FLAG_SIGNED, 0x80]) | u8)
    payload = draw(st.binary(max_size=300))
    payload_len = draw(st.one_of(st.just(len(payload)), u16))
    fields = (draw(st.sampled_from([MAGIC, b"HF"])), draw(st.sampled_from([1, 1, 2])), flags,
              draw(st.integers(0, 3) | u32), draw(st.integers(0, 5) | u32), draw(st.integers(0, 4) | u16),
              draw(st.integers(0, 5) | u16), draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 2000) | u32),
              payload_len, 0)
    head = HEADER.pack(*fields)
    trailer = draw(st.binary(min_size=MAC_BYTES, max_size=MAC_BYTES)) if flags & FLAG_SIGNED else b""
    crc = zlib.crc32(payload, zlib.crc32(head[:CRC_OFFSET])) & 0xFFFFFFFF
    if draw(st.booleans()) and draw(st.booleans()):
        crc ^= 1
    return head[:CRC_OFFSET] + crc.to_bytes(4, "big") + payload + trailer


any_datagram = st.binary(max_size=200) | crafted_datagrams()


@given(any_datagram)
@FAST
def test_decode_datagram_raises_only_protocol_error_and_what_it_returns_is_consistent(datagram: bytes) -> None:
    try:
        head, payload = decode_datagram(datagram)
    except DatagramError as e:
        assert e.reason in {"short", "bad_magic", "bad_version", "bad_flags", "bad_length", "bad_chunk",
                            "bad_checksum"}
        return
    assert head.payload_len == len(payload) and 0 <= head.index < head.count
    trailer = MAC_BYTES if head.flags & FLAG_SIGNED else 0
    assert len(datagram) == HEADER_BYTES + len(payload) + trailer


REAL = [random.Random(i).randbytes(n) for i, n in enumerate((700, 1500, 90))]
LIMITS = ReassemblyLimits(max_frame_bytes=4000, max_chunks=64, max_frames_in_flight=3, max_streams=4,
                          max_buffered_bytes=3000, frame_timeout_s=1.0, stream_idle_s=5.0)


def real_datagrams(key: bytes | None) -> list[bytes]:
    out = []
    for seq, data in enumerate(REAL):
        out += encode_frame(data, stream_id=1, seq=seq, capture_ns=seq, chunk_bytes=200, key=key)
    return out


def mutate(rng: random.Random, g: bytes) -> bytes:
    b = bytearray(g)
    op = rng.randrange(3)
    if op == 0 and b:
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif op == 1:
        b = b[:rng.randrange(len(b) + 1)]
    else:
        b += rng.randbytes(rng.randrange(1, 20))
    return bytes(b)


@st.composite
def sequences(draw: st.DrawFn, key: bytes | None) -> list[tuple[bytes, int, float]]:
    """(datagram, source index, time) triples: real datagrams (some repeated, reordered or mangled)
    interleaved with crafted ones from up to 8 sources, with time moving forward."""
    real = real_datagrams(key)
    rng = random.Random(draw(st.integers(0, 2**32)))
    steps = []
    now = 0.0
    for _ in range(draw(st.integers(1, 60))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            g = rng.choice(real)
        elif kind == 1:
            g = mutate(rng, rng.choice(real))
        else:
            g = draw(any_datagram)
        now += draw(st.sampled_from([0.0, 0.0, 0.01, 0.6, 3.0]))
        steps.append((g, draw(st.integers(0, 7)), now))
    return steps


def check_bounds(asm) -> None:
    held = asm.occupancy()
    assert asm.buffered_bytes == held["buffered_bytes"] == held["held_bytes"] <= LIMITS.max_buffered_bytes
    assert held["streams"] <= LIMITS.max_streams
    assert held["most_frames_per_stream"] <= LIMITS.max_frames_in_flight
    assert held["most_replay_entries"] <= REPLAY_WINDOW_FRAMES


@given(sequences(None))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@pytest.mark.parametrize("make", CORES)
def test_reassembler_never_raises_and_keeps_its_bounds(make, steps) -> None:
    asm = make(LIMITS)
    for g, src, now in steps:
        frame = asm.add(g, ("10.0.0.1", 1000 + src), now)
        if frame is not None:
            assert len(frame.data) <= LIMITS.max_frame_bytes and frame.chunks <= LIMITS.max_chunks
        asm.expire(now)
        check_bounds(asm)
    assert asm.counters["datagrams"] == len(steps)


@given(sequences(KEY))
@FAST
@pytest.mark.parametrize("make", CORES)
def test_keyed_reassembler_delivers_only_real_frames_each_at_most_once(make, steps) -> None:
    """Whatever arrives from whichever (spoofed) source address, only the real frames come out, once."""
    asm = make(LIMITS, key=KEY)
    delivered = []
    for g, src, now in steps:
        frame = asm.add(g, ("10.0.0.1", 1000 + src), now)
        if frame is not None:
            assert frame.data == REAL[frame.seq]  # nothing forged or mangled ever completes a frame
            delivered.append(frame.seq)
        asm.expire(now)
        check_bounds(asm)
    assert len(delivered) == len(set(delivered))


def outcome(frame) -> tuple | None:
    return None if frame is None else (frame.source, frame.stream_id, frame.seq, frame.capture_ns, frame.data,
                                       frame.first_at, frame.completed_at, frame.chunks)


@pytest.mark.skipif(not BUILT, reason=NOT_BUILT)
@pytest.mark.parametrize("key", [None, KEY], ids=["keyless", "keyed"])
@given(data=st.data())
@FAST
def test_compiled_core_does_what_the_python_reference_does(key, data) -> None:
    """Differential: the same hostile sequence into both cores gives the same frames, the same counters
    and the same holdings after every datagram (the Python core is the specification)."""
    steps = data.draw(sequences(key))
    ref, fast = FrameAssembler(LIMITS, key=key), compiled_assembler()(LIMITS, key=key)
    for g, src, now in steps:
        source = ("10.0.0.1", 1000 + src)
        assert outcome(fast.add(g, source, now)) == outcome(ref.add(g, source, now))
        if data.draw(st.booleans()):
            assert fast.expire(now) == ref.expire(now)
        assert +fast.counters == +ref.counters
        assert fast.occupancy() == ref.occupancy()


# ----- the file-job protocol (common/jobproto.py, tested only) -------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
handshake_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["handshake", "data", "eof"]) | st.text(max_size=5)},
    optional={"version": st.sampled_from([1, 2, True, "1"]) | json_values,
              "protocol": st.sampled_from(["stream", "file"]) | json_values,
              "tiles": st.sampled_from(["3x3", "1x1", "0x3", "17x1", "axb", [2, 2]]) | json_values,
              "filters": st.sampled_from(["canny", "blur:3", "canny,blur:3", "nope", "blur:x", ""]) | json_values,
              "codec": st.sampled_from(["h264", "vp9"]) | json_values,
              "name": json_values, "preview": json_values,
              "tile_format": st.sampled_from(["raw", "png"]) | json_values,
              "size": st.integers(-5, 2**40) | json_values, "sha256": st.just("ab" * 32) | json_values,
              "path": json_values})


@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
@FAST
def test_jobproto_decode_body_raises_only_protocol_error(body: bytes) -> None:
    try:
        msg = jobproto.decode_body(body)
    except jobproto.JobProtocolError as e:
        assert e.code in jobproto.ERROR_CODES
        return
    assert isinstance(msg, dict) and isinstance(msg["type"], str)


@given(handshake_like)
@FAST
def test_jobproto_parse_handshake_raises_only_protocol_error(msg: dict) -> None:
    try:
        hs = jobproto.parse_handshake(msg)
    except jobproto.JobProtocolError as e:
        assert e.code in jobproto.ERROR_CODES
        return
    assert 1 <= hs.tiles[0] <= 16 and 1 <= hs.tiles[1] <= 16 and hs.protocol in jobproto.PROTOCOLS
    assert jobproto.parse_handshake(hs.to_wire()) == hs  # what it accepted survives the wire


@given(st.dictionaries(st.sampled_from(["type", "size"]), json_values) | handshake_like)
@FAST
def test_jobproto_data_size_raises_only_protocol_error(msg: dict) -> None:
    try:
        size = jobproto.data_size(msg)
    except jobproto.JobProtocolError:
        return
    assert 0 <= size <= jobproto.MAX_DATA_CHUNK


@given(st.binary(max_size=120), st.integers(0, 6))
@settings(max_examples=150, deadline=None)
def test_jobproto_stream_reader_raises_only_protocol_error_or_incomplete_read(stream: bytes, reads: int) -> None:
    async def go() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(stream)
        reader.feed_eof()
        for _ in range(reads):
            await jobproto.read_message(reader)

    try:
        asyncio.run(go())
    except (jobproto.JobProtocolError, asyncio.IncompleteReadError):
        pass
