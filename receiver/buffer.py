"""The hand-off between ingest threads and the forwarder: per-port, bounded, newest frame wins."""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReadyFrame:
    """A whole encoded frame waiting to be queued on the master."""

    port: int
    seq: int
    capture_ns: int
    received_ns: int
    data: bytes
    pipeline: str
    meta: dict


class FrameBuffer:
    """At most `per_port` frames per camera; a new frame pushes out that camera's oldest."""

    def __init__(self, per_port: int = 4) -> None:
        if per_port < 1:
            raise ValueError("per_port must be >= 1")
        self.per_port = per_port
        self.dropped: Counter[int] = Counter()
        self._frames: dict[int, deque[ReadyFrame]] = {}
        self._cond = threading.Condition()
        self._count = 0

    def put(self, frame: ReadyFrame) -> None:
        """Add a frame; if the camera's backlog is full the oldest is dropped and counted."""
        with self._cond:
            q = self._frames.setdefault(frame.port, deque())
            if len(q) >= self.per_port:
                q.popleft()
                self.dropped[frame.port] += 1
                self._count -= 1
            q.append(frame)
            self._count += 1
            self._cond.notify()

    def take(self, max_n: int, timeout: float) -> list[ReadyFrame]:
        """Up to `max_n` frames, oldest first and round-robin across ports; waits up to `timeout`."""
        with self._cond:
            if not self._count:
                self._cond.wait(timeout)
            out: list[ReadyFrame] = []
            while self._count and len(out) < max_n:
                for q in self._frames.values():
                    if q and len(out) < max_n:
                        out.append(q.popleft())
                        self._count -= 1
            return out

    def __len__(self) -> int:
        with self._cond:
            return self._count

    def wake(self) -> None:
        """Wake a waiting `take` (used at shutdown)."""
        with self._cond:
            self._cond.notify_all()
