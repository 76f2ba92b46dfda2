"""Putting one camera's results back in frame order, waiting a bounded time for the late ones.

Workers finish frames out of order. The window holds each result until every earlier frame has
come (a result or an explicit skip) and then releases it, in frame order. A frame that never comes
(gated out without a skip, dropped as stale, failed) is given up as a gap as soon as any held
result has waited `wait_s`, or when more than `max_frames` are held; the tracker predicts across
it. A result older than the frames already released comes too late and is dropped. The first
frame of a camera waits `wait_s` (or for a full window) too, since an earlier one may still come.
A frame number far behind the expected one (`restart_gap`) means the camera's numbering started
again: what is held is released, and the window follows the new numbering.
"""

from __future__ import annotations

from collections import Counter
from typing import Generic, TypeVar

T = TypeVar("T")


class ReorderWindow(Generic[T]):
    """One camera's results between completion and tracking; times are the master's clock (seconds)."""

    def __init__(self, *, wait_s: float, max_frames: int, restart_gap: int, counters: Counter[str]) -> None:
        self.wait_s, self.max_frames, self.restart_gap = wait_s, max_frames, restart_gap
        self.counters = counters
        self.next_seq: int | None = None  # the frame released next; None before the first release
        self._held: dict[int, tuple[float, T]] = {}  # seq -> (arrived at, item)

    def __len__(self) -> int:
        return len(self._held)

    def put(self, seq: int, item: T, now: float) -> list[tuple[int, T]]:
        """Hold `item` as frame `seq`; the items now due, in frame order."""
        out: list[tuple[int, T]] = []
        if self.next_seq is not None and seq < self.next_seq:
            if self.next_seq - seq <= self.restart_gap:
                self.counters["late"] += 1
                return []
            self.counters["restarts"] += 1
            out, self.next_seq = self.drain(), seq
        if seq in self._held:
            self.counters["duplicates"] += 1
            return out
        self._held[seq] = (now, item)
        return out + self.due(now)

    def due(self, now: float) -> list[tuple[int, T]]:
        """Release what is in order, giving up gaps a held item has waited `wait_s` for."""
        out: list[tuple[int, T]] = []
        while self._held:
            if self.next_seq in self._held:
                out.append((self.next_seq, self._held.pop(self.next_seq)[1]))
                self.next_seq += 1
                continue
            full = len(self._held) > self.max_frames
            if not full and min(a for a, _ in self._held.values()) + self.wait_s > now:
                break
            self._skip_to(min(self._held), full)
        return out

    def drain(self) -> list[tuple[int, T]]:
        """Everything held, in frame order, gaps given up."""
        out = []
        while self._held:
            self._skip_to(min(self._held), False)
            out.append((self.next_seq, self._held.pop(self.next_seq)[1]))
            self.next_seq += 1
        return out

    def _skip_to(self, seq: int, forced: bool) -> None:
        if self.next_seq is not None:
            self.counters["gap_frames"] += seq - self.next_seq
        if forced:
            self.counters["window_full"] += 1
        self.next_seq = seq
