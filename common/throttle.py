"""A warning that repeats is logged at most once per interval, saying how many it stood for."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Throttle:
    """`ready()` is the number of occurrences since the last one let through (0 or more) when one may be
    logged now, else None (and the occurrence is counted for the next). Thread-safe."""

    def __init__(self, every_s: float, clock: Callable[[], float]) -> None:
        self.every_s, self._clock = every_s, clock
        self._at = -float("inf")
        self._held = 0
        self._lock = threading.Lock()

    def ready(self) -> int | None:
        now = self._clock()
        with self._lock:
            if now - self._at < self.every_s:
                self._held += 1
                return None
            self._at, held, self._held = now, self._held, 0
            return held
