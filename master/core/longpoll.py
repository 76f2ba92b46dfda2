"""Long polls: requests that wait for news (a task to lease, a finished tile to take) and are woken
by it, as many at a time as the news can serve.

One channel per kind of news. `signal(n)` wakes at most n waiters (n tasks queued: n requests can
each get one), `signal()` all of them (a stop, a requeue after a death). Waking every waiting
worker for each queued batch made 64 idle workers race for one frame, 63 of them for nothing.
A signal that comes while a request is between its fetch and its wait is never missed: the
generation it read has moved on, so it fetches again instead of waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WakeChannel:
    """Waiters for one kind of news; thread-safe."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    def signal(self, n: int | None = None) -> None:
        """News for `n` waiters (None: for all of them)."""
        with self._cond:
            self._generation += 1
            if n is None:
                self._cond.notify_all()
            elif n > 0:
                self._cond.notify(n)

    def poll(self, fetch: Callable[[], list[T]], deadline: float, stop: threading.Event) -> list[T]:
        """Call `fetch` until it returns something, `deadline` (monotonic) passes or `stop` is set,
        sleeping until signalled in between."""
        while True:
            with self._cond:
                generation = self._generation
            got = fetch()
            left = deadline - time.monotonic()
            if got or left <= 0 or stop.is_set():
                return got
            with self._cond:
                if generation == self._generation:
                    self._cond.wait(left)
