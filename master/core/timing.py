"""Where each frame's time went, and per-camera, per-stage latency histograms. Pure.

A frame is stamped on several hosts, whose clocks differ. Durations measured between two stamps of
the same host are exact whatever the offsets ("one-host"); spans between hosts include the clock
offset and are labelled "cross-host". The worker's share is measured twice without crossing clocks:
its own work time (worker clock) and the lease round trip the master saw (master clock), whose
difference is the transport and dispatch overhead.

    captured (publisher) -> received (receiver) -> forwarded (receiver) -> queued (master)
      -> leased (master) -> work start .. work end (worker) -> stored (master)
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Mapping
from typing import Any

NS = 1_000_000_000

# stage -> (what it measures, which clocks)
STAGES: dict[str, tuple[str, str]] = {
    "network_in": ("capture on the camera host to reassembled at the receiver", "cross-host"),
    "receiver": ("reassembled to forwarded: buffering and motion gating at the receiver", "one-host"),
    "to_master": ("forwarded by the receiver to queued at the master", "cross-host"),
    "queue": ("queued to leased by a worker, at the master", "one-host"),
    "work": ("decode and pipeline on the worker", "one-host"),
    "dispatch": ("lease round trip the master saw minus the worker's work: transport and dispatch", "one-host"),
    "end_to_end": ("capture to result stored at the master", "cross-host"),
}
# upper bounds in seconds, Prometheus style (+Inf is implicit)
BUCKETS_S: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MAX_PORTS = 1024


def _ns(value: Any) -> int:
    """A nanosecond time from metadata; 0 (unknown) for anything that is not one (1e400, NaN, text)."""
    try:
        ns = int(value)
    except (TypeError, ValueError, OverflowError):
        return 0
    return ns if 0 <= ns < 2**63 else 0


def frame_stages(*, captured_ns: int, received_ns: int, meta: Mapping[str, Any], queued_ns: int,
                 leased_at: float, started_ns: int, finished_ns: int, stored_at: float) -> dict[str, float]:
    """Each stage's duration in ms for one frame; a stage whose stamps are missing is left out."""
    out: dict[str, float] = {}
    forwarded_ns = _ns(meta.get("forwarded_ns"))
    leased_ns, stored_ns = int(leased_at * NS), int(stored_at * NS)

    def put(name: str, start: int, end: int) -> None:
        if start > 0 and end > 0:
            out[name] = round((end - start) / 1e6, 3)

    put("network_in", captured_ns, received_ns)
    put("receiver", received_ns, forwarded_ns)
    put("to_master", forwarded_ns, queued_ns)
    put("queue", queued_ns, leased_ns)
    put("work", started_ns, finished_ns)
    if leased_ns and stored_ns and started_ns and finished_ns:
        out["dispatch"] = round(max(0.0, (stored_ns - leased_ns) - (finished_ns - started_ns)) / 1e6, 3)
    put("end_to_end", captured_ns, stored_ns)
    return out


class LatencyHistograms:
    """Histograms of stage durations per camera port; thread-safe, bounded in ports."""

    def __init__(self, max_ports: int = MAX_PORTS) -> None:
        self.max_ports = max_ports
        self._lock = threading.Lock()
        # (port, stage) -> [bucket counts..., +Inf count], sum in seconds
        self._counts: dict[tuple[int, str], list[int]] = {}
        self._sums: dict[tuple[int, str], float] = {}
        self._ports: set[int] = set()

    def observe(self, port: int, stages_ms: Mapping[str, float]) -> None:
        with self._lock:
            if port not in self._ports:
                if len(self._ports) >= self.max_ports:
                    return
                self._ports.add(port)
            for stage, ms in stages_ms.items():
                if stage not in STAGES:
                    continue
                s = ms / 1000.0
                key = (port, stage)
                counts = self._counts.setdefault(key, [0] * (len(BUCKETS_S) + 1))
                counts[bisect.bisect_left(BUCKETS_S, s)] += 1
                self._sums[key] = self._sums.get(key, 0.0) + s

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        """{port: {stage: {"buckets": cumulative counts per BUCKETS_S bound, "count", "sum_s"}}}."""
        with self._lock:
            out: dict[str, dict[str, dict[str, Any]]] = {}
            for (port, stage), counts in self._counts.items():
                cumulative, total = [], 0
                for c in counts[:-1]:
                    total += c
                    cumulative.append(total)
                out.setdefault(str(port), {})[stage] = {"buckets": cumulative, "count": total + counts[-1],
                                                        "sum_s": round(self._sums[(port, stage)], 6)}
            return out

    @staticmethod
    def quantile(h: Mapping[str, Any], q: float) -> float | None:
        """An upper bound (s) for the q-quantile of one snapshot histogram (None when empty)."""
        if not h["count"]:
            return None
        rank = q * h["count"]
        for bound, c in zip(BUCKETS_S, h["buckets"]):
            if c >= rank:
                return bound
        return float("inf")
