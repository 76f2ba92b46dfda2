"""Frames over a local AF_UNIX stream socket (publisher -> receiver on one host; docs/PROTOCOL.md
section 6): a 22-byte header, then the JPEG. Pure: the encoder and an incremental, bounded decoder."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from common.errors import ProtocolError

MAGIC = b"FU"
VERSION = 1
HEADER = struct.Struct("!2sBBHIQI")  # magic, version, flags, port, seq, capture_ns, length
MAX_FRAME_BYTES = 16 * 1024 * 1024


class UnixFrameError(ProtocolError):
    """A local socket's bytes are not a frame header: the stream cannot be followed past it."""


@dataclass(frozen=True, slots=True)
class UnixFrame:
    """One frame off a local socket: port 0 means the socket's own camera port."""

    port: int
    seq: int
    capture_ns: int
    data: bytes


def encode_header(*, port: int, seq: int, capture_ns: int, length: int) -> bytes:
    """The header for a frame of `length` bytes; ValueError when a field does not fit."""
    if not 0 <= port < 65536 or not 0 < length <= MAX_FRAME_BYTES:
        raise ValueError(f"port must be 0..65535 and length 1..{MAX_FRAME_BYTES}, got {port}, {length}")
    return HEADER.pack(MAGIC, VERSION, 0, port, seq & 0xFFFFFFFF, capture_ns & (2**64 - 1), length)


class FrameDecoder:
    """Frames out of one connection's byte stream. Holds at most one header and `max_bytes` of
    payload. A header that is not ours, or announces more than `max_bytes`, ends the stream: `error`
    says why, and nothing after it is read (the connection should be closed)."""

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self._head: tuple[int, int, int, int] | None = None  # port, seq, capture_ns, length of the frame begun
        self.error: UnixFrameError | None = None

    @property
    def pending(self) -> bool:
        """Whether a frame is begun but not finished (lost if the connection closes now)."""
        return bool(self.buf) or self._head is not None

    def feed(self, data: bytes) -> list[UnixFrame]:
        """Every frame `data` completes, up to a broken header if there is one (then `error` is set)."""
        if self.error is not None:
            return []
        self.buf += data
        out: list[UnixFrame] = []
        while True:
            if self._head is None:
                if len(self.buf) < HEADER.size:
                    return out
                try:
                    self._head = self._header(bytes(self.buf[:HEADER.size]))
                except UnixFrameError as e:
                    self.error = e
                    self.buf.clear()
                    return out
                del self.buf[:HEADER.size]
            port, seq, capture_ns, length = self._head
            if len(self.buf) < length:
                return out
            out.append(UnixFrame(port, seq, capture_ns, bytes(self.buf[:length])))
            del self.buf[:length]
            self._head = None

    def _header(self, raw: bytes) -> tuple[int, int, int, int]:
        magic, version, flags, port, seq, capture_ns, length = HEADER.unpack(raw)
        if magic != MAGIC:
            raise UnixFrameError(f"bad magic {magic!r}", "bad_magic")
        if version != VERSION or flags:
            raise UnixFrameError(f"version {version} flags {flags:#x}: this receiver speaks version 1, no flags",
                                 "bad_version")
        if not 0 < length <= self.max_bytes:
            raise UnixFrameError(f"frame length {length} is not 1..{self.max_bytes}", "bad_length")
        return port, seq, capture_ns, length
