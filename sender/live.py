"""A live source that survives its camera: a camera, stream or pipe that is down at start, or drops out
later, is retried forever with capped, jittered backoff; each change between online and offline is
logged once and counted. Frames are read on the source's own thread and the newest one waits for the
publisher, so a publisher slower than its camera never falls behind it."""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import numpy as np

from common.errors import SourceError
from common.runtime import Component

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0
RETRY_JITTER = 0.5  # the top half of each wait is drawn at random
WAIT_SLICE_S = 0.1  # how often a waiting read looks at its stop event


class Stream(Protocol):
    """One connection to a camera, a network stream or a pipe, opened by a connect function."""

    fps: float  # the rate the stream says it has; 0 when it does not say

    def read(self) -> np.ndarray | None:
        """The next BGR frame; None when none came within a short wait. SourceError when the stream
        failed or ended."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Backoff:
    """How long to wait after failed attempts: doubling from `first_s`, capped at `max_s`, the top
    `jitter` fraction drawn at random so that publishers of one restarted server do not retry in step."""

    first_s: float = RETRY_FIRST_S
    max_s: float = RETRY_MAX_S
    jitter: float = RETRY_JITTER

    def delay(self, failures: int, rand: float) -> float:
        """Seconds to wait after `failures` (>= 1) failures in a row; `rand` is uniform in [0, 1)."""
        base = min(self.max_s, self.first_s * 2.0 ** min(max(failures, 1) - 1, 32))
        return base * (1.0 - self.jitter * rand)


class State(StrEnum):
    STARTING = "starting"  # no frame yet, no failure yet
    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True)
class Change:
    """A change of state: worth one log line. `outage_s` is how long the source was offline before it
    came back (0 otherwise)."""

    old: State
    new: State
    outage_s: float = 0.0


class Liveness:
    """Online/offline bookkeeping of one live source. Pure: the caller passes `now` (monotonic seconds)."""

    def __init__(self, now: float) -> None:
        self.state = State.STARTING
        self.since = now
        self.failures = 0  # in a row: drives the backoff
        self.reconnects = 0  # times it came back online after being offline
        self.outages = 0  # times it went offline
        self._offline_s = 0.0  # in outages that have ended

    def frame(self, now: float) -> Change | None:
        """A frame arrived."""
        self.failures = 0
        if self.state is State.ONLINE:
            return None
        old, outage = self.state, 0.0
        if old is State.OFFLINE:
            outage = now - self.since
            self._offline_s += outage
            self.reconnects += 1
        self.state, self.since = State.ONLINE, now
        return Change(old, State.ONLINE, outage)

    def failed(self, now: float) -> Change | None:
        """An attempt to connect failed, or the stream failed or ended."""
        self.failures += 1
        if self.state is State.OFFLINE:
            return None
        old = self.state
        self.state, self.since = State.OFFLINE, now
        self.outages += 1
        return Change(old, State.OFFLINE)

    def offline_s(self, now: float) -> float:
        """Seconds offline in all, the outage going on included."""
        return self._offline_s + (now - self.since if self.state is State.OFFLINE else 0.0)

    def report(self, now: float) -> dict[str, float]:
        return {"reconnects": self.reconnects, "outages": self.outages, "offline_s": round(self.offline_s(now), 1)}


class LiveSource(Component):
    """Connects (`connect()` returns a Stream or raises SourceError), reads until the stream fails,
    waits as `backoff` says, and again, until stopped; never ends by itself. `read(stop)` hands the
    publisher the newest frame it has not had yet."""

    thread_name = "source"
    live = True

    def __init__(self, name: str, connect: Callable[[], Stream], *, backoff: Backoff | None = None,
                 counters: Counter[str] | None = None,
                 scrub: Callable[[str], str] = lambda text: text,
                 rand: Callable[[], float] = random.random, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.name = name  # as it may be logged: no password
        self.backoff = backoff or Backoff()
        self.counters: Counter[str] = counters if counters is not None else Counter()  # the streams' own counts
        self._connect, self._scrub, self._rand, self._clock = connect, scrub, rand, clock
        self._stream_fps = 0.0
        self._cond = threading.Condition()
        self.liveness = Liveness(clock())
        self._frame: np.ndarray | None = None
        self._unforeseen: set[str] = set()
        self._delivered = self._taken = 0

    @property
    def fps(self) -> float:
        """The rate the stream says it has, once connected; 0 when unknown (a publisher without --fps
        sends each frame as it comes)."""
        return self._stream_fps

    def run(self) -> None:
        log.info("source %s: connecting", self.name)
        while not self._stop.is_set():
            try:
                self._connect_and_read()
            except SourceError as e:
                self._failed(e)
            except Exception as e:  # a library's failure nobody foresaw: a camera is still no reason to exit
                kind = type(e).__name__
                log.log(logging.DEBUG if kind in self._unforeseen else logging.ERROR,
                        "source %s: unexpected error, retrying:\n%s", self.name,
                        self._scrub("".join(traceback.format_exception(e))))  # masked: it may quote the URL
                self._unforeseen.add(kind)  # its traceback once; then a line per change, as for any failure
                self._failed(SourceError(kind))

    def _connect_and_read(self) -> None:
        """One connection: read until stopped, or until the stream fails (SourceError)."""
        stream = self._connect()
        try:
            self._stream_fps = stream.fps
            while not self._stop.is_set():
                frame = stream.read()
                if frame is not None:
                    self._deliver(frame)
        finally:
            stream.close()

    def _deliver(self, frame: np.ndarray) -> None:
        with self._cond:
            change = self.liveness.frame(self._clock())
            reconnects = self.liveness.reconnects
            if self._delivered > self._taken:
                self.counters["source_skipped"] += 1  # the publisher did not want it in time: a newer one wins
            self._frame = frame
            self._delivered += 1
            self._cond.notify_all()
        if change is None:
            return
        h, w = frame.shape[:2]
        if change.old is State.OFFLINE:
            log.info("source %s: online again after %.1f s offline (%dx%d; reconnect %d)", self.name,
                     change.outage_s, w, h, reconnects)
        else:
            log.info("source %s: online (%dx%d%s)", self.name, w, h, f", {self.fps:.1f} fps" if self.fps else "")

    def _failed(self, e: SourceError) -> None:
        reason = self._scrub(str(e))
        with self._cond:
            change = self.liveness.failed(self._clock())
            failures = self.liveness.failures
        wait = self.backoff.delay(failures, self._rand())
        if change is None:
            log.debug("source %s: attempt %d failed: %s; next in %.1f s", self.name, failures, reason, wait)
        elif change.old is State.ONLINE:
            log.warning("source %s: dropped out: %s; reconnecting, at most %g s apart", self.name, reason,
                        self.backoff.max_s)
        else:
            log.warning("source %s: offline: %s; retrying, at most %g s apart", self.name, reason,
                        self.backoff.max_s)
        self._stop.wait(wait)

    def read(self, stop: threading.Event) -> np.ndarray | None:
        """The newest frame not yet handed out, waiting for one; None once `stop` (or this source) is stopped."""
        with self._cond:
            while self._delivered == self._taken:
                if stop.is_set() or self._stop.is_set():
                    return None
                self._cond.wait(WAIT_SLICE_S)
            self._taken = self._delivered
            return self._frame

    def stats(self) -> dict[str, float]:
        """What the publisher reports: reconnects, outages, offline_s, and the streams' own counters."""
        with self._cond:
            report = self.liveness.report(self._clock())
        return {**report, **{k: int(v) for k, v in dict(self.counters).items()}}

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
