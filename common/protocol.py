"""The UDP frame protocol: one JPEG frame split into datagrams, each with a fixed header.

Every datagram is a 34-byte big-endian header followed by a slice of the frame bytes and, when the
sender has a shared key (flag FLAG_SIGNED), a 16-byte truncated HMAC-SHA256 of header and payload.
docs/PROTOCOL.md specifies the layout; this module is its reference implementation.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import struct
import zlib
from collections.abc import Iterator
from typing import NamedTuple

from common.errors import ProtocolError

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

FLAG_SIGNED = 0x01  # a MAC_BYTES trailer follows the payload: HMAC-SHA256(key, header + payload)[:16]
KNOWN_FLAGS = FLAG_SIGNED
MAC_BYTES = 16
MIN_KEY_BYTES = 16
KEY_ENV = "FRAMEHIVE_DATAGRAM_KEY"


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


class DatagramError(ProtocolError):
    """A datagram that breaks the frame protocol; `reason` is a short counter name."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}", reason)


def _crc(header_without_crc: bytes | memoryview, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(header_without_crc)) & 0xFFFFFFFF


def chunk_count_for(frame_len: int, chunk_bytes: int) -> int:
    """Number of datagrams a frame of `frame_len` bytes needs with `chunk_bytes` per datagram."""
    return max(1, -(-frame_len // chunk_bytes))


def max_chunk_bytes(signed: bool) -> int:
    """The largest payload per datagram: a datagram must fit one UDP packet."""
    return MAX_DATAGRAM_BYTES - HEADER_BYTES - (MAC_BYTES if signed else 0)


def datagram_mac(key: bytes, signed_part: bytes | memoryview) -> bytes:
    """The trailer of a signed datagram: HMAC-SHA256 over header and payload, truncated to 16 bytes."""
    return hmac.digest(key, signed_part, "sha256")[:MAC_BYTES]  # the name takes OpenSSL's one-shot path


def verify_mac(datagram: bytes | memoryview, key: bytes) -> bool:
    """True when a signed datagram's trailer is the MAC of everything before it (constant-time compare)."""
    view = memoryview(datagram)
    if len(view) < HEADER_BYTES + MAC_BYTES:
        return False
    return hmac.compare_digest(datagram_mac(key, view[:-MAC_BYTES]), view[-MAC_BYTES:])


def parse_key(text: str, origin: str) -> bytes:
    """A shared key written as hex (at least 32 digits; whitespace ignored); ValueError naming `origin`."""
    digits = "".join(text.split())
    try:
        key = binascii.unhexlify(digits)
    except (binascii.Error, ValueError):
        raise ValueError(f"{origin}: the key must be written as hex digits, e.g. the output of "
                         "`python -c 'import secrets; print(secrets.token_hex(32))'`") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"{origin}: the key is {len(key)} bytes; use at least {MIN_KEY_BYTES} "
                         f"({2 * MIN_KEY_BYTES} hex digits), 32 recommended")
    return key


def key_from(file_text: str | None, file_name: str, env_text: str | None) -> bytes | None:
    """The shared key from a key file's text, else from the environment variable, else None (no key)."""
    if file_text is not None:
        return parse_key(file_text, file_name)
    if env_text:
        return parse_key(env_text, KEY_ENV)
    return None


def encode_frame(
    data: bytes,
    *,
    stream_id: int,
    seq: int,
    capture_ns: int,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    key: bytes | None = None,
) -> Iterator[bytes]:
    """Yield the datagrams that carry `data` (one encoded frame); signed when a `key` is given."""
    if not 1 <= chunk_bytes <= max_chunk_bytes(key is not None):
        raise ValueError(f"chunk_bytes must be 1..{max_chunk_bytes(key is not None)}, got {chunk_bytes}")
    count = chunk_count_for(len(data), chunk_bytes)
    if count > MAX_CHUNK_COUNT:
        raise ValueError(f"frame of {len(data)} bytes needs {count} chunks (max {MAX_CHUNK_COUNT})")
    view = memoryview(data)
    stream_id &= 0xFFFFFFFF
    seq %= SEQ_MODULUS
    flags = FLAG_SIGNED if key is not None else 0
    for index in range(count):
        payload = view[index * chunk_bytes:(index + 1) * chunk_bytes]
        head = HEADER.pack(MAGIC, VERSION, flags, stream_id, seq, index, count,
                           capture_ns, len(data), len(payload), 0)
        crc = _crc(memoryview(head)[:CRC_OFFSET], payload)
        datagram = head[:CRC_OFFSET] + crc.to_bytes(4, "big") + payload
        yield datagram if key is None else datagram + datagram_mac(key, datagram)


def decode_datagram(datagram: bytes | memoryview) -> tuple[ChunkHeader, memoryview]:
    """Parse and check one datagram; raise DatagramError whose `reason` names what is wrong.

    A signed datagram's trailer is located and skipped here, not verified: that needs the key
    (`verify_mac`). The payload returned never includes the trailer.
    """
    view = memoryview(datagram)
    if len(view) < HEADER_BYTES:
        raise DatagramError("short", f"datagram of {len(view)} bytes is shorter than the header")
    try:
        magic, version, flags, stream_id, seq, index, count, capture_ns, frame_len, payload_len, crc = (
            HEADER.unpack_from(view))
    except struct.error as e:  # unreachable after the length check; kept to honour the contract
        raise DatagramError("short", str(e)) from e
    if magic != MAGIC:
        raise DatagramError("bad_magic", f"magic {bytes(magic)!r} is not {MAGIC!r}")
    if version != VERSION:
        raise DatagramError("bad_version", f"version {version} is not supported (expected {VERSION})")
    if flags & ~KNOWN_FLAGS:
        raise DatagramError("bad_flags", f"unknown flags 0x{flags:02x}")
    if flags & FLAG_SIGNED and len(view) < HEADER_BYTES + MAC_BYTES:
        raise DatagramError("short", f"signed datagram of {len(view)} bytes has no room for its {MAC_BYTES}-byte MAC")
    payload = view[HEADER_BYTES:len(view) - MAC_BYTES] if flags & FLAG_SIGNED else view[HEADER_BYTES:]
    if payload_len != len(payload):
        raise DatagramError("bad_length", f"header says {payload_len} payload bytes, datagram has {len(payload)}")
    if count == 0 or index >= count:
        raise DatagramError("bad_chunk", f"chunk {index} of {count}")
    if _crc(view[:CRC_OFFSET], payload) != crc:
        raise DatagramError("bad_checksum", "CRC32 mismatch")
    return ChunkHeader(flags, stream_id, seq, index, count, capture_ns, frame_len, payload_len), payload


def seq_newer(a: int, b: int) -> bool:
    """True when 32-bit sequence number `a` comes after `b` (serial-number arithmetic, RFC 1982)."""
    diff = (a - b) % SEQ_MODULUS
    return 0 < diff < SEQ_MODULUS // 2


# ----- imagezmq metadata MAC (docs/PROTOCOL.md section 2) ------------------------------------------------

ZMQ_MAC_DOMAIN = b"FHZ1\0"


def zmq_mac(key: bytes, *, sid: str, n: int, ts: int, msg: str, dtype: str, shape: list[int],
            body: bytes | memoryview) -> str:
    """The hex MAC an imagezmq request carries in its metadata's `auth.mac` (32 hex digits).

    HMAC-SHA256 over "FHZ1\\0", then sid, n, ts, dtype and the shape joined by commas, each followed
    by a NUL byte, then the UTF-8 msg preceded by its length (4 bytes, big-endian), then the image
    bytes; truncated to 16 bytes.
    """
    fields = "".join(f"{v}\0" for v in (sid, n, ts, dtype, ",".join(str(d) for d in shape))).encode()
    text = msg.encode()
    mac = hmac.new(key, ZMQ_MAC_DOMAIN + fields + len(text).to_bytes(4, "big") + text, hashlib.sha256)
    mac.update(body)
    return mac.hexdigest()[:2 * MAC_BYTES]
