"""The UDP frame protocol: one JPEG frame split into datagrams, each with a fixed header.

Every datagram is a 34-byte big-endian header followed by a slice of the frame bytes.
docs/PROTOCOL.md specifies the layout; this module is its reference implementation.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import NamedTuple

from common.errors import DecodeError

MAGIC = b"FH"
VERSION = 1
# magic, version, flags, stream id, frame seq, chunk index, chunk count,
# capture time (ns since the Unix epoch), frame length, payload length, crc32
HEADER = struct.Struct("!2sBBIIHHQIHI")
HEADER_BYTES = HEADER.size  # 34
CRC_OFFSET = HEADER_BYTES - 4

MAX_DATAGRAM_BYTES = 65507  # the largest UDP payload over IPv4
DEFAULT_CHUNK_BYTES = 1400  # payload per datagram: header + payload fit a 1500-byte MTU
LOOPBACK_CHUNK_BYTES = 65000  # loopback has a 64 KiB MTU: one datagram carries a typical frame
MAX_CHUNK_COUNT = 0xFFFF
SEQ_MODULUS = 1 << 32

FLAG_SIGNED = 0x01  # reserved for a truncated-HMAC trailer; version 1 senders leave it clear
KNOWN_FLAGS = 0x00


class ChunkHeader(NamedTuple):
    """The decoded header of one datagram (a NamedTuple: built once per datagram, and cheaply)."""

    flags: int
    stream_id: int
    seq: int
    index: int
    count: int
    capture_ns: int
    frame_len: int
    payload_len: int


class ProtocolError(DecodeError):
    """A datagram that breaks the frame protocol; `reason` is a short counter name."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def _crc(header_without_crc: bytes | memoryview, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(header_without_crc)) & 0xFFFFFFFF


def chunk_count_for(frame_len: int, chunk_bytes: int) -> int:
    """Number of datagrams a frame of `frame_len` bytes needs with `chunk_bytes` per datagram."""
    return max(1, -(-frame_len // chunk_bytes))


def encode_frame(
    data: bytes,
    *,
    stream_id: int,
    seq: int,
    capture_ns: int,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[bytes]:
    """Yield the datagrams that carry `data` (one encoded frame)."""
    if not 1 <= chunk_bytes <= MAX_DATAGRAM_BYTES - HEADER_BYTES:
        raise ValueError(f"chunk_bytes must be 1..{MAX_DATAGRAM_BYTES - HEADER_BYTES}, got {chunk_bytes}")
    count = chunk_count_for(len(data), chunk_bytes)
    if count > MAX_CHUNK_COUNT:
        raise ValueError(f"frame of {len(data)} bytes needs {count} chunks (max {MAX_CHUNK_COUNT})")
    view = memoryview(data)
    stream_id &= 0xFFFFFFFF
    seq %= SEQ_MODULUS
    for index in range(count):
        payload = view[index * chunk_bytes:(index + 1) * chunk_bytes]
        head = HEADER.pack(MAGIC, VERSION, 0, stream_id, seq, index, count,
                           capture_ns, len(data), len(payload), 0)
        crc = _crc(memoryview(head)[:CRC_OFFSET], payload)
        yield head[:CRC_OFFSET] + crc.to_bytes(4, "big") + payload


def decode_datagram(datagram: bytes | memoryview) -> tuple[ChunkHeader, memoryview]:
    """Parse and verify one datagram; raise DecodeError whose `reason` names what is wrong."""
    view = memoryview(datagram)
    if len(view) < HEADER_BYTES:
        raise ProtocolError("short", f"datagram of {len(view)} bytes is shorter than the header")
    try:
        magic, version, flags, stream_id, seq, index, count, capture_ns, frame_len, payload_len, crc = (
            HEADER.unpack_from(view))
    except struct.error as e:  # unreachable after the length check; kept to honour the contract
        raise ProtocolError("short", str(e)) from e
    if magic != MAGIC:
        raise ProtocolError("bad_magic", f"magic {bytes(magic)!r} is not {MAGIC!r}")
    if version != VERSION:
        raise ProtocolError("bad_version", f"version {version} is not supported (expected {VERSION})")
    if flags & ~KNOWN_FLAGS:
        raise ProtocolError("bad_flags", f"unknown flags 0x{flags:02x}")
    payload = view[HEADER_BYTES:]
    if payload_len != len(payload):
        raise ProtocolError("bad_length", f"header says {payload_len} payload bytes, datagram has {len(payload)}")
    if count == 0 or index >= count:
        raise ProtocolError("bad_chunk", f"chunk {index} of {count}")
    if _crc(view[:CRC_OFFSET], payload) != crc:
        raise ProtocolError("bad_checksum", "CRC32 mismatch")
    return ChunkHeader(flags, stream_id, seq, index, count, capture_ns, frame_len, payload_len), payload


def seq_newer(a: int, b: int) -> bool:
    """True when 32-bit sequence number `a` comes after `b` (serial-number arithmetic, RFC 1982)."""
    diff = (a - b) % SEQ_MODULUS
    return 0 < diff < SEQ_MODULUS // 2
