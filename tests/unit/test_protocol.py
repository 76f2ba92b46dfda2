"""The UDP frame protocol and the reassembler: round trips, garbage, hostile senders, bounds."""

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.protocol import HEADER, HEADER_BYTES, MAGIC, DatagramError, decode_datagram, encode_frame, seq_newer
from common.reassembly import FrameAssembler, ReassemblyLimits
from tests.cores import CORES

SRC = ("127.0.0.1", 40000)


def frame_bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def feed(asm: FrameAssembler, datagrams, now=0.0, source=SRC):
    return [f for d in datagrams if (f := asm.add(d, source, now)) is not None]


@given(data=st.binary(min_size=1, max_size=20_000), chunk=st.integers(1, 3000),
       seq=st.integers(0, 2**32 - 1), stream=st.integers(0, 2**32 - 1), cap=st.integers(0, 2**63 - 1))
@settings(max_examples=200, deadline=None)
@pytest.mark.parametrize("make", CORES)
def test_round_trip_any_order(make, data, chunk, seq, stream, cap):
    grams = list(encode_frame(data, stream_id=stream, seq=seq, capture_ns=cap, chunk_bytes=chunk))
    random.Random(len(data)).shuffle(grams)
    asm = make(ReassemblyLimits(max_chunks=30_000))
    frames = feed(asm, grams)
    assert len(frames) == 1
    f = frames[0]
    assert (f.data, f.seq, f.stream_id, f.capture_ns, f.chunks) == (data, seq, stream, cap, len(grams))
    assert asm.buffered_bytes == 0 and asm.frames_in_flight == 0


@given(st.binary(max_size=200))
@settings(max_examples=300)
@pytest.mark.parametrize("make", CORES)
def test_garbage_never_raises(make, garbage):
    asm = make()
    assert asm.add(garbage, SRC, 0.0) is None
    assert asm.malformed() == 1


def test_header_layout_is_34_bytes_big_endian():
    g = next(encode_frame(b"abc", stream_id=7, seq=9, capture_ns=123, chunk_bytes=1400))
    assert HEADER_BYTES == 34 and len(g) == 37
    assert g[:2] == MAGIC and g[2] == 1 and g[3] == 0
    assert struct.unpack("!I", g[4:8])[0] == 7 and struct.unpack("!I", g[8:12])[0] == 9
    assert struct.unpack("!HH", g[12:16]) == (0, 1)
    assert struct.unpack("!Q", g[16:24])[0] == 123
    assert struct.unpack("!IH", g[24:30]) == (3, 3)


@pytest.mark.parametrize("mutate,reason", [
    (lambda g: g[:10], "short"),
    (lambda g: b"XX" + g[2:], "bad_magic"),
    (lambda g: g[:2] + b"\x09" + g[3:], "bad_version"),
    (lambda g: g[:3] + b"\x80" + g[4:], "bad_flags"),
    (lambda g: g + b"extra", "bad_length"),
    (lambda g: g[:-1] + bytes([g[-1] ^ 1]), "bad_checksum"),
])
@pytest.mark.parametrize("make", CORES)
def test_malformed_datagrams_counted_by_reason(make, mutate, reason):
    g = next(encode_frame(frame_bytes(100), stream_id=1, seq=1, capture_ns=1))
    with pytest.raises(DatagramError) as e:
        decode_datagram(mutate(g))
    assert e.value.reason == reason
    asm = make()
    assert asm.add(mutate(g), SRC, 0.0) is None
    assert asm.counters[reason] == 1


def forged(*, index=0, count=1, frame_len=10, payload=b"x" * 10, seq=1, stream=1, capture=5):
    """A datagram with a valid CRC but whatever header fields a hostile sender chooses."""
    import zlib
    head = HEADER.pack(MAGIC, 1, 0, stream, seq, index, count, capture, frame_len, len(payload), 0)
    crc = zlib.crc32(payload, zlib.crc32(head[:30])) & 0xFFFFFFFF
    return head[:30] + crc.to_bytes(4, "big") + payload


@pytest.mark.parametrize("kw,reason", [
    (dict(index=3, count=2), "bad_chunk"),
    (dict(count=0), "bad_chunk"),
    (dict(frame_len=10**9, count=2), "too_large"),
    (dict(count=9000, frame_len=9000 * 10), "bad_chunk"),
    (dict(frame_len=0), "bad_length"),
    (dict(frame_len=5), "bad_length"),  # payload longer than the whole frame
])
@pytest.mark.parametrize("make", CORES)
def test_lying_headers_are_dropped(make, kw, reason):
    asm = make(ReassemblyLimits(max_chunks=8192))
    assert asm.add(forged(**kw), SRC, 0.0) is None
    assert asm.counters[reason] == 1 and asm.buffered_bytes == 0


@pytest.mark.parametrize("make", CORES)
def test_duplicate_and_inconsistent_chunks(make):
    grams = list(encode_frame(frame_bytes(5000), stream_id=1, seq=1, capture_ns=1, chunk_bytes=1000))
    asm = make()
    assert asm.add(grams[0], SRC, 0.0) is None
    assert asm.add(grams[0], SRC, 0.0) is None
    assert asm.counters["duplicate"] == 1
    # same seq, different frame length: a second sender colliding or a liar
    assert asm.add(forged(seq=1, index=1, count=5, frame_len=6000, payload=b"y" * 1000), SRC, 0.0) is None
    assert asm.counters["inconsistent"] == 1
    assert len(feed(asm, grams[1:])) == 1


@pytest.mark.parametrize("make", CORES)
def test_overlapping_chunks_that_overflow_the_frame_are_rejected(make):
    asm = make()
    assert asm.add(forged(index=0, count=3, frame_len=20, payload=b"a" * 15), SRC, 0.0) is None
    assert asm.add(forged(index=1, count=3, frame_len=20, payload=b"b" * 15), SRC, 0.0) is None
    assert asm.counters["inconsistent"] == 1


@pytest.mark.parametrize("make", CORES)
def test_short_last_chunks_that_do_not_add_up_are_corrupt(make):
    asm = make()
    feed(asm, [forged(index=0, count=2, frame_len=20, payload=b"a" * 5),
               forged(index=1, count=2, frame_len=20, payload=b"b" * 5)])
    assert asm.counters["corrupt"] == 1 and asm.counters["frames_complete"] == 0


@pytest.mark.parametrize("make", CORES)
def test_incomplete_frames_expire_and_free_memory(make):
    grams = list(encode_frame(frame_bytes(5000), stream_id=1, seq=1, capture_ns=1, chunk_bytes=1000))
    asm = make(ReassemblyLimits(frame_timeout_s=0.5))
    feed(asm, grams[:3], now=10.0)
    assert asm.buffered_bytes == 3000
    assert asm.expire(10.4) == 0
    assert asm.expire(10.6) == 1
    assert asm.buffered_bytes == 0 and asm.counters["frames_incomplete"] == 1


@pytest.mark.parametrize("make", CORES)
def test_newest_frame_wins_and_late_chunks_are_dropped(make):
    asm = make()
    old = list(encode_frame(frame_bytes(3000, 1), stream_id=1, seq=10, capture_ns=1, chunk_bytes=1000))
    new = list(encode_frame(frame_bytes(3000, 2), stream_id=1, seq=11, capture_ns=2, chunk_bytes=1000))
    feed(asm, old[:2])
    assert [f.seq for f in feed(asm, new)] == [11]
    assert asm.counters["frames_incomplete"] == 1  # seq 10 can never be delivered now
    assert asm.add(old[2], SRC, 0.0) is None and asm.counters["late"] == 1


@pytest.mark.parametrize("make", CORES)
def test_sender_restart_is_followed(make):
    asm = make()
    feed(asm, encode_frame(b"a" * 10, stream_id=1, seq=100_000, capture_ns=1))
    assert len(feed(asm, encode_frame(b"b" * 10, stream_id=1, seq=0, capture_ns=2))) == 1


@pytest.mark.parametrize("make", CORES)
def test_sequence_wraps(make):
    assert seq_newer(0, 2**32 - 1) and not seq_newer(2**32 - 1, 0)
    asm = make()
    feed(asm, encode_frame(b"a" * 10, stream_id=1, seq=2**32 - 1, capture_ns=1))
    assert len(feed(asm, encode_frame(b"b" * 10, stream_id=1, seq=0, capture_ns=2))) == 1


@pytest.mark.parametrize("make", CORES)
def test_two_senders_on_one_port_do_not_mix(make):
    asm = make()
    a = list(encode_frame(frame_bytes(4000, 1), stream_id=1, seq=5, capture_ns=1, chunk_bytes=1000))
    b = list(encode_frame(frame_bytes(4000, 2), stream_id=1, seq=5, capture_ns=1, chunk_bytes=1000))
    out = []
    for ga, gb in zip(a, b):
        out += feed(asm, [ga], source=("10.0.0.1", 1)) + feed(asm, [gb], source=("10.0.0.2", 1))
    assert sorted(f.data for f in out) == sorted([frame_bytes(4000, 1), frame_bytes(4000, 2)])


@pytest.mark.parametrize("make", CORES)
def test_flood_of_new_frame_ids_stays_bounded(make):
    lim = ReassemblyLimits(max_frames_in_flight=4, max_streams=8, max_buffered_bytes=200_000)
    asm = make(lim)
    rng = random.Random(3)
    for i in range(20_000):
        g = forged(seq=rng.randrange(2**32), stream=rng.randrange(50), index=0, count=4, frame_len=4000,
                   payload=b"z" * 1000)
        asm.add(g, (f"10.0.0.{i % 20}", 1), float(i) * 1e-4)
        assert asm.frames_in_flight <= 4 * 8 and asm.buffered_bytes <= 200_000
    real = list(encode_frame(frame_bytes(3000), stream_id=99, seq=1, capture_ns=1, chunk_bytes=1000))
    assert len(feed(asm, real, now=2.0)) == 1


def test_every_wire_protocol_error_is_one_family_under_the_root_error():
    from common.errors import DecodeError, FramehiveError
    from common.errors import ProtocolError as Base
    from common.jobproto import JobProtocolError
    from receiver.zmqhub import Refused

    errors = [DatagramError("bad_magic", "x"), JobProtocolError("x", "busy"), Refused("dropped_forged", "x")]
    assert all(isinstance(e, Base) and isinstance(e, DecodeError) and isinstance(e, FramehiveError) for e in errors)
    assert [e.reason for e in errors] == ["bad_magic", "busy", "dropped_forged"]
