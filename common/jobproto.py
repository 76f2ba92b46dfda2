"""File-job wire format (docs/PROTOCOL.md section 4): length-prefixed JSON control messages + raw data.

Every message is a 4-byte big-endian length N and N bytes of UTF-8 JSON, an object with a string
"type". A `data` message is followed by `size` raw bytes that the length does not count.
This module is pure framing and validation; the only socket code is the small blocking helpers the
client uses (`send_message`, `recv_message`, `recv_exact`) and the asyncio readers the server uses.

End of stream: the async readers let `asyncio.IncompleteReadError` propagate unchanged (a peer that
hangs up is not a protocol violation; the server cancels the job), the blocking ones raise
`ConnectionError`. Malformed bytes raise `JobProtocolError`, whose `code` is the `error.code` to send.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
from dataclasses import dataclass

from common.errors import PipelineSpecError, ProtocolError
from common.pipeline import STAGES, StageSpec, parse_pipeline
from common.tiling import parse_grid

VERSION = 1
MAX_CONTROL_BYTES = 64 * 1024
MAX_DATA_CHUNK = 4 * 1024 * 1024
DEFAULT_PORT = 9090
TILE_PORT = 0  # the port a file job's tile tasks carry: cameras are 1..65535, so no camera has it
MAX_NAME_CHARS = 255

ERROR_CODES = frozenset({
    "bad_handshake", "bad_tiles", "unknown_filter", "bad_codec", "too_large",
    "checksum", "not_video", "path_refused", "internal", "unauthorized", "busy", "idle",
})
PROTOCOLS = ("stream", "file")
CODECS = ("h264",)
TILE_FORMATS = ("raw", "png")  # how tiles travel to the workers and back (docs/PROTOCOL.md section 5)
# Filters that look at intensity only (they convert BGR to gray first and return gray replicated
# into BGR); tests/unit/test_filters.py checks that each gives the same on gray as on colour.
GRAY_FIRST_STAGES = frozenset({"canny", "sobel", "threshold"})

_LEN = struct.Struct("!I")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class JobProtocolError(ProtocolError):
    """A file-job message is malformed or refused; `code` (its `reason`) is one of ERROR_CODES."""

    def __init__(self, message: str, code: str = "bad_handshake") -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message, code)

    @property
    def code(self) -> str:
        return self.reason


def encode(msg: dict) -> bytes:
    """Length prefix + compact UTF-8 JSON; ValueError without a string "type" or over MAX_CONTROL_BYTES."""
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ValueError("a message must be a dict with a string 'type'")
    body = json.dumps(msg, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    if len(body) > MAX_CONTROL_BYTES:
        raise ValueError(f"control message of {len(body)} bytes exceeds {MAX_CONTROL_BYTES}")
    return _LEN.pack(len(body)) + body


def data_header(size: int) -> bytes:
    """The `data` message that announces `size` raw bytes following it."""
    return encode({"type": "data", "size": size})


def error_message(code: str, message: str) -> dict:
    """An `error` message; `code` must be one of ERROR_CODES."""
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}")
    return {"type": "error", "code": code, "message": message}


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def decode_body(body: bytes) -> dict:
    """Decode one control message body: a JSON object with a string "type", else JobProtocolError."""
    try:
        msg = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as e:
        raise JobProtocolError(f"control message is not UTF-8 JSON: {e}") from e
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise JobProtocolError("control message must be a JSON object with a string 'type'")
    return msg


def _body_length(prefix: bytes) -> int:
    (n,) = _LEN.unpack(prefix)
    if n > MAX_CONTROL_BYTES:
        raise JobProtocolError(f"control message of {n} bytes exceeds {MAX_CONTROL_BYTES}", "too_large")
    return n


def data_size(msg: dict) -> int:
    """The byte count a `data` message announces (0..MAX_DATA_CHUNK), else JobProtocolError."""
    size = msg.get("size")
    if msg.get("type") != "data" or not _is_int(size) or size < 0:
        raise JobProtocolError(f"expected a data message with an integer size, got {msg!r:.200}")
    if size > MAX_DATA_CHUNK:
        raise JobProtocolError(f"data chunk of {size} bytes exceeds {MAX_DATA_CHUNK}", "too_large")
    return size


async def read_message(reader: asyncio.StreamReader) -> dict:
    """Read one control message; EOF raises asyncio.IncompleteReadError unchanged."""
    n = _body_length(await reader.readexactly(_LEN.size))
    return decode_body(await reader.readexactly(n))


async def read_data(reader: asyncio.StreamReader, size: int) -> bytes:
    """Read the `size` raw bytes after a data message; EOF raises asyncio.IncompleteReadError."""
    if not _is_int(size) or not 0 <= size <= MAX_DATA_CHUNK:
        raise JobProtocolError(f"data chunk of {size} bytes is outside 0..{MAX_DATA_CHUNK}", "too_large")
    return await reader.readexactly(size)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly n bytes from a blocking socket; ConnectionError if the peer closes first."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError(f"connection closed after {got} of {n} bytes")
        got += k
    return bytes(buf)


def recv_message(sock: socket.socket) -> dict:
    """Read one control message from a blocking socket."""
    n = _body_length(recv_exact(sock, _LEN.size))
    return decode_body(recv_exact(sock, n))


def send_message(sock: socket.socket, msg: dict) -> None:
    """Send one control message on a blocking socket."""
    sock.sendall(encode(msg))


def send_data(sock: socket.socket, chunk: bytes) -> None:
    """Send a data message and its raw bytes (at most MAX_DATA_CHUNK)."""
    if len(chunk) > MAX_DATA_CHUNK:
        raise ValueError(f"data chunk of {len(chunk)} bytes exceeds {MAX_DATA_CHUNK}")
    sock.sendall(data_header(len(chunk)))
    sock.sendall(chunk)


@dataclass(frozen=True)
class Handshake:
    """A validated handshake; size/sha256 are set for "stream", path for "file"."""

    version: int
    protocol: str
    tiles: tuple[int, int]  # (cols, rows)
    filters: str  # normalized pipeline text
    stages: tuple[StageSpec, ...]
    codec: str
    name: str
    preview: bool
    size: int | None = None
    sha256: str | None = None
    path: str | None = None
    tile_format: str = "raw"

    def to_wire(self) -> dict:
        """The handshake message for this request (tiles as "COLSxROWS")."""
        msg = {"type": "handshake", "version": self.version, "protocol": self.protocol,
               "tiles": f"{self.tiles[0]}x{self.tiles[1]}", "filters": self.filters,
               "codec": self.codec, "name": self.name, "preview": self.preview, "tile_format": self.tile_format}
        if self.protocol == "stream":
            msg.update(size=self.size, sha256=self.sha256)
        else:
            msg["path"] = self.path
        return msg


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_tiles(value: object) -> tuple[int, int]:
    """(cols, rows) from "3x3" or [3, 3]; JobProtocolError code "bad_tiles"."""
    if isinstance(value, list | tuple) and len(value) == 2 and all(_is_int(v) for v in value):
        value = f"{value[0]}x{value[1]}"
    if not isinstance(value, str):
        raise JobProtocolError(f"tiles must be 'COLSxROWS' or [cols, rows], got {value!r:.100}", "bad_tiles")
    try:
        return parse_grid(value)
    except ValueError as e:
        raise JobProtocolError(str(e), "bad_tiles") from e


def _parse_filters(value: object) -> tuple[str, tuple[StageSpec, ...]]:
    try:
        stages = parse_pipeline(value)  # type: ignore[arg-type]  # it refuses non-strings itself
    except PipelineSpecError as e:
        raise JobProtocolError(str(e), "unknown_filter") from e
    return ",".join(str(s) for s in stages), stages


def _parse_common(msg: dict) -> dict:
    if msg.get("type") != "handshake":
        raise JobProtocolError(f"expected a handshake, got a {msg.get('type')!r} message")
    version = msg.get("version")
    if version != VERSION or not _is_int(version):
        raise JobProtocolError(f"unsupported protocol version {version!r} (this server speaks {VERSION})")
    protocol = msg.get("protocol")
    if protocol not in PROTOCOLS:
        raise JobProtocolError(f"protocol must be 'stream' or 'file', got {protocol!r:.100}")
    name = msg.get("name", "upload")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
        raise JobProtocolError(f"name must be a string of 1..{MAX_NAME_CHARS} characters")
    preview = msg.get("preview", False)
    if not isinstance(preview, bool):
        raise JobProtocolError(f"preview must be true or false, got {preview!r:.100}")
    tile_format = msg.get("tile_format", "raw")
    if tile_format not in TILE_FORMATS:
        raise JobProtocolError(f"tile_format must be one of {', '.join(TILE_FORMATS)}, got {tile_format!r:.100}")
    return {"version": version, "protocol": protocol, "name": name, "preview": preview, "tile_format": tile_format}


def _parse_source(protocol: str, msg: dict) -> dict:
    if protocol == "file":
        path = msg.get("path")
        if not isinstance(path, str) or not path or "\0" in path:
            raise JobProtocolError("a file job needs a non-empty 'path'")
        return {"path": path}
    size, digest = msg.get("size"), msg.get("sha256")
    if not _is_int(size) or size <= 0:
        raise JobProtocolError(f"a stream job needs an integer 'size' > 0, got {size!r:.100}")
    if not isinstance(digest, str) or not _SHA256_RE.fullmatch(digest.lower()):
        raise JobProtocolError("a stream job needs 'sha256' as 64 hex digits")
    return {"size": size, "sha256": digest.lower()}


def parse_handshake(msg: dict) -> Handshake:
    """Validate a handshake message; JobProtocolError with code bad_handshake/bad_tiles/unknown_filter/bad_codec."""
    fields = _parse_common(msg)
    tiles = parse_tiles(msg.get("tiles"))
    filters, stages = _parse_filters(msg.get("filters"))
    codec = msg.get("codec", "h264")
    if codec not in CODECS:
        raise JobProtocolError(f"codec must be one of {', '.join(CODECS)}, got {codec!r:.100}", "bad_codec")
    return Handshake(tiles=tiles, filters=filters, stages=stages, codec=codec,
                     **fields, **_parse_source(fields["protocol"], msg))


def gray_tiles(stages: tuple[StageSpec, ...], tile_format: str) -> bool:
    """True if a job's tiles can travel as one gray channel: raw tiles, only filters, and the first
    one looks at intensity only, so a third of the bytes give the same pixels."""
    return (tile_format == "raw" and bool(stages) and stages[0].name in GRAY_FIRST_STAGES
            and all(STAGES[s.name].kind == "filter" for s in stages))
