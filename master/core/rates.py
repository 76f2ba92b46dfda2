"""Frames per second per camera: completions counted in time buckets over a sliding window.

Pure and thread-safe: `now` (seconds since the epoch) is passed in. Memory per camera is one counter
per bucket of the window, whatever the rate, so a camera at 500 fps costs what one at 1 fps does
and the rate is never capped by how many recent results someone reads.
"""

from __future__ import annotations

import math
import threading
from collections import deque

WINDOW_S = 5.0  # the span a rate is measured over
BUCKET_S = 0.25  # counting granularity: the window's start moves in steps this long
MAX_KEYS = 4096  # cameras tracked at once; the master caps ports lower than this anyway


class RateMeter:
    """Events per key per second over the last `window_s` seconds."""

    def __init__(self, window_s: float = WINDOW_S, bucket_s: float = BUCKET_S, max_keys: int = MAX_KEYS) -> None:
        if not 0 < bucket_s <= window_s:
            raise ValueError("need 0 < bucket_s <= window_s")
        self.window_s, self.bucket_s, self.max_keys = window_s, bucket_s, max_keys
        self._buckets_kept = max(1, round(window_s / bucket_s))
        self._counts: dict[int, deque[list[int]]] = {}  # key -> [bucket index, count], oldest first
        self._lock = threading.Lock()

    def _bucket(self, now: float) -> int:
        return math.floor(now / self.bucket_s)

    def observe(self, key: int, now: float, n: int = 1) -> None:
        """Count `n` events of `key` at time `now` (events older than the window are forgotten)."""
        b = self._bucket(now)
        with self._lock:
            counts = self._counts.get(key)
            if counts is None:
                if len(self._counts) >= self.max_keys:
                    return
                counts = self._counts[key] = deque()
            if counts and counts[-1][0] >= b:  # same bucket (or a clock that stepped back): add to the newest
                counts[-1][1] += n
            else:
                counts.append([b, n])
            self._trim(counts, b)

    def _trim(self, counts: deque[list[int]], current: int) -> None:
        while counts and counts[0][0] <= current - self._buckets_kept:
            counts.popleft()

    def rate(self, key: int, now: float) -> float:
        """Events per second of `key` over the window ending at `now` (0.0 for a key never seen)."""
        b = self._bucket(now)
        with self._lock:
            counts = self._counts.get(key)
            if counts is not None:
                self._trim(counts, b)
            total = sum(c for _, c in counts) if counts else 0
        # the window is the kept full buckets plus the part of the current one that has passed
        span = (self._buckets_kept - 1) * self.bucket_s + (now - b * self.bucket_s)
        return total / span if span > 0 else 0.0

    def rates(self, now: float) -> dict[int, float]:
        """The rate of every key seen, rounded to 0.01 per second."""
        with self._lock:
            keys = list(self._counts)
        return {k: round(self.rate(k, now), 2) for k in keys}
