"""Signed datagrams: the MAC trailer, keyed and keyless reassembly, the replay window, key parsing."""

import hashlib
import hmac
import struct
import zlib

import pytest

from common.protocol import (
    FLAG_SIGNED,
    HEADER_BYTES,
    MAC_BYTES,
    DatagramError,
    decode_datagram,
    encode_frame,
    key_from,
    max_chunk_bytes,
    parse_key,
    verify_mac,
    zmq_mac,
)
from common.reassembly import REPLAY_WINDOW_FRAMES, FrameAssembler, ReplayWindow
from tests.cores import CORES

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))
SRC = ("127.0.0.1", 40000)


def grams(data: bytes, seq: int = 1, key: bytes | None = KEY, stream: int = 1, chunk: int = 100) -> list[bytes]:
    return list(encode_frame(data, stream_id=stream, seq=seq, capture_ns=seq, chunk_bytes=chunk, key=key))


def feed(asm: FrameAssembler, datagrams, source=SRC):
    return [f for d in datagrams if (f := asm.add(d, source, 0.0)) is not None]


def test_signed_layout_is_header_payload_and_16_byte_hmac_sha256():
    [g] = grams(b"abc")
    assert g[3] == FLAG_SIGNED and len(g) == HEADER_BYTES + 3 + MAC_BYTES
    assert struct.unpack("!H", g[28:30])[0] == 3  # payload length counts the payload only
    assert g[-MAC_BYTES:] == hmac.new(KEY, g[:-MAC_BYTES], hashlib.sha256).digest()[:16]
    head, payload = decode_datagram(g)
    assert head.flags == FLAG_SIGNED and bytes(payload) == b"abc"
    assert verify_mac(g, KEY) and not verify_mac(g, OTHER)


def test_signed_datagram_too_short_for_its_mac_is_short():
    [g] = grams(b"abc")
    with pytest.raises(DatagramError) as e:
        decode_datagram(g[:HEADER_BYTES + 5])
    assert e.value.reason == "short"


@pytest.mark.parametrize("make", CORES)
def test_keyed_assembler_delivers_signed_and_drops_unsigned_forged_replayed(make):
    data = bytes(range(250))
    asm = make(key=KEY)
    signed = grams(data)
    assert [f.data for f in feed(asm, signed)] == [data]
    feed(asm, signed)  # the same three datagrams again: replays
    feed(asm, grams(data, seq=2, key=None))  # unsigned
    feed(asm, grams(data, seq=3, key=OTHER))  # signed with another key
    flipped = bytearray(grams(data, seq=4)[0])
    flipped[-1] ^= 1  # a MAC that does not match its bytes
    feed(asm, [bytes(flipped)])
    c = asm.counters
    assert (c["dropped_replayed"], c["dropped_unsigned"], c["dropped_forged"]) == (3, 3, 4)
    assert c["frames_complete"] == 1 and asm.malformed() == 0  # refused, not counted as broken


@pytest.mark.parametrize("make", CORES)
def test_payload_altered_with_a_fixed_crc_is_forged_not_accepted(make):
    [g] = grams(b"hello world", chunk=100)
    body = bytearray(g)
    body[HEADER_BYTES] ^= 0xFF  # change the payload and repair the CRC, as an attacker can
    crc = zlib.crc32(bytes(body[HEADER_BYTES:-MAC_BYTES]), zlib.crc32(bytes(body[:30]))) & 0xFFFFFFFF
    body[30:34] = crc.to_bytes(4, "big")
    asm = make(key=KEY)
    assert feed(asm, [bytes(body)]) == [] and asm.counters["dropped_forged"] == 1


@pytest.mark.parametrize("make", CORES)
def test_replay_window_refuses_frames_older_than_the_window(make):
    asm = make(key=KEY)
    old = grams(b"x" * 10, seq=100)
    assert len(feed(asm, grams(b"y" * 10, seq=100 + REPLAY_WINDOW_FRAMES))) == 1
    assert feed(asm, old) == [] and asm.counters["dropped_replayed"] == 1
    # within the window and never seen: still taken (a late frame is the reassembler's business)
    w = ReplayWindow()
    assert w.accept(1000, 0) and w.accept(1000 - REPLAY_WINDOW_FRAMES + 1, 3)
    assert not w.accept(1000 - REPLAY_WINDOW_FRAMES, 0) and not w.accept(1000, 0)


def test_replay_window_follows_wrap_around_and_stays_small():
    w = ReplayWindow()
    for seq in range(2**32 - 100, 2**32 + 100):
        assert w.accept(seq % 2**32, 0) and w.accept(seq % 2**32, 7)
    assert w.newest == 99 and len(w.seen) == REPLAY_WINDOW_FRAMES
    assert not w.accept(2**32 - 1, 0)  # before the wrap, already accepted
    assert not w.accept(2**31 + 99, 0)  # half the sequence space away: older, far outside the window


@pytest.mark.parametrize("make", CORES)
def test_replay_window_is_per_stream_id_so_a_spoofed_source_address_does_not_help(make):
    asm = make(key=KEY)
    g = grams(b"z" * 10, seq=5)
    assert len(feed(asm, g)) == 1
    assert feed(asm, g, source=("10.9.9.9", 40001)) == []  # the MAC does not cover the address; the id it does
    assert asm.counters["dropped_replayed"] == 1
    assert len(feed(asm, grams(b"z" * 10, seq=5, stream=2))) == 1  # another stream has its own window


@pytest.mark.parametrize("make", CORES)
def test_keyless_assembler_accepts_signed_datagrams_and_counts_them(make):
    data = bytes(range(250))
    asm = make()
    assert [f.data for f in feed(asm, grams(data, key=OTHER))] == [data]  # trailer skipped, not verified
    assert asm.counters["signed_unverified"] == 3
    assert [f.data for f in feed(asm, grams(data, seq=2, key=None))] == [data]
    assert not any(asm.counters[r] for r in ("dropped_unsigned", "dropped_forged", "dropped_replayed"))


def test_chunk_size_limit_leaves_room_for_the_mac():
    assert max_chunk_bytes(True) == max_chunk_bytes(False) - MAC_BYTES == 65507 - 34 - 16
    assert len(grams(b"a" * max_chunk_bytes(True), chunk=max_chunk_bytes(True))[0]) == 65507
    with pytest.raises(ValueError):
        grams(b"a", chunk=max_chunk_bytes(True) + 1)


def test_keys_are_hex_of_at_least_16_bytes_and_the_file_wins():
    assert parse_key(" " + KEY.hex() + "\n", "k") == KEY
    with pytest.raises(ValueError, match="hex digits"):
        parse_key("not hex at all", "key.txt")
    with pytest.raises(ValueError, match="at least 16"):
        parse_key("abcd", "FRAMEHIVE_DATAGRAM_KEY")
    assert key_from(KEY.hex(), "f", OTHER.hex()) == KEY
    assert key_from(None, "", OTHER.hex()) == OTHER
    assert key_from(None, "", None) is None and key_from(None, "", "") is None


def test_zmq_mac_covers_every_field_and_the_body():
    base = dict(sid="00ff00ff", n=1, ts=10, msg="m", dtype="", shape=[], body=b"jpeg")
    mac = zmq_mac(KEY, **base)
    assert len(mac) == 32 and mac == zmq_mac(KEY, **base)
    variants = [dict(sid="00ff00fe"), dict(n=2), dict(ts=11), dict(msg="n"), dict(dtype="uint8"),
                dict(shape=[1]), dict(body=b"jpeh")]
    assert all(zmq_mac(KEY, **{**base, **v}) != mac for v in variants)
    assert zmq_mac(OTHER, **base) != mac
