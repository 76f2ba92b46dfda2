"""The binary batch body: JSON metadata followed by raw blobs, never base64, never pickle.

Layout: b"FHB1" + 4-byte big-endian metadata length + UTF-8 JSON object + the blobs back to
back. The JSON object carries `"sizes": [n0, n1, ...]`, one byte count per blob, in order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from common.errors import DecodeError

MAGIC = b"FHB1"
MAX_META_BYTES = 4 * 1024 * 1024
CONTENT_TYPE = "application/x-framehive-batch"


def pack(meta: dict[str, Any], blobs: Sequence[bytes | memoryview] = ()) -> bytes:
    """Encode `meta` and `blobs` as one body."""
    head = json.dumps({**meta, "sizes": [len(b) for b in blobs]}, separators=(",", ":")).encode()
    return b"".join([MAGIC, len(head).to_bytes(4, "big"), head, *blobs])


def unpack(body: bytes | memoryview) -> tuple[dict[str, Any], list[memoryview]]:
    """Decode a body made by `pack`; raise DecodeError saying what is wrong."""
    view = memoryview(body)
    if len(view) < 8 or view[:4] != MAGIC:
        raise DecodeError("not a framehive batch (bad magic)")
    n = int.from_bytes(view[4:8], "big")
    if n > MAX_META_BYTES or 8 + n > len(view):
        raise DecodeError(f"batch metadata length {n} is out of range")
    try:
        meta = json.loads(bytes(view[8:8 + n]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DecodeError(f"batch metadata is not JSON: {e}") from e
    except RecursionError:
        raise DecodeError("batch metadata is nested too deeply") from None
    sizes = meta.get("sizes") if isinstance(meta, dict) else None
    if not isinstance(sizes, list) or not all(isinstance(s, int) and s >= 0 for s in sizes):
        raise DecodeError("batch metadata has no valid 'sizes' list")
    rest = view[8 + n:]
    if sum(sizes) != len(rest):
        raise DecodeError(f"batch blobs hold {len(rest)} bytes, 'sizes' adds up to {sum(sizes)}")
    blobs, at = [], 0
    for size in sizes:
        blobs.append(rest[at:at + size])
        at += size
    return meta, blobs
