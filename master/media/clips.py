"""Event clips, the pure core: a pre-roll of each camera's recent JPEGs, and a recording per open event.

    frame(camera, seq, captured_at, jpeg, now) --> the camera's ring (pre-roll) --+--> ClipJob (due)
                                               \\-> every open recording of it ---/
    boxes(camera, seq, detections, now)        (tracked detections, later than the frame: drawn on it)
    open(event_id, camera, start_at, now) / close(event_id, end_at, now) / due(now)

Decisions:
- Frames arrive in any order (workers finish out of order); capture time orders them. The ring keeps
  `pre_s + ring_slack_s` behind the newest capture time: an event opens a while after its first
  frame was captured (its streak, detection, reordering), and its pre-roll must still be there.
- A recording's window is [start_at - pre_s, stop], stop = end_at + post_s once closed, and never
  more than `max_s` after the window's start, so a clip never spans more than `max_s`. Frames
  taken before close() that turn out to be past end_at + post_s are let go then: the clip is the
  same whatever the order of arrival. It finishes when a frame of its camera captured at or after
  `stop` arrives, or by the master's clock: `post_s + grace_s` after close, `max_s + grace_s`
  after open (a camera that stopped, an event never closed). A recording over `clip_bytes` stops
  taking frames and is finished at once: nothing it could still take would be kept.
- Every open() that returned True yields exactly one ClipJob from due() (possibly with no frames),
  unless cancel() drops it. forget(camera) drops the ring and finishes that camera's recordings.
- The JPEG bytes are shared between the ring and the recordings, never copied; the byte budgets
  count them once per holder, so they bound memory from above.
- Bounded: `max_cameras` rings (the least recently fed one is dropped beyond), `preroll_bytes` per
  ring, `max_open` recordings of at most `clip_bytes` each.

Pure and thread-safe: no clock reads (times are passed in: capture times on the camera's clock,
`now` on the master's; frame() and boxes() take `now` for symmetry and do not use it today), no
I/O, one lock around each call. A seq already held for a camera is a duplicate (dropped, counted).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol


class Boxed(Protocol):
    """What a drawn detection needs: common.tasks.Detection and tracking's TrackedDetection both fit."""

    label: str
    score: float
    box: tuple[int, int, int, int]  # x, y, width, height in pixels of the frame
    track_id: int


@dataclass(frozen=True)
class ClipConfig:
    """Lengths (seconds of capture time, `grace_s` of the master's clock) and bounds of event clips."""

    pre_s: float = 5.0  # before the event's start
    post_s: float = 5.0  # after its end
    max_s: float = 60.0  # a clip's longest span, counted from the start of its pre-roll
    ring_slack_s: float = 3.0  # the ring keeps pre_s + this: events open a while after their start
    preroll_bytes: int = 24 * 2**20  # per camera ring
    clip_bytes: int = 96 * 2**20  # per open recording
    max_open: int = 16  # recordings at once, over all cameras
    max_cameras: int = 256  # cameras with a ring
    grace_s: float = 10.0  # wall time waited past post_s for frames that never come
    draw: bool = True  # keep detections to draw boxes and track ids on the clip

    def __post_init__(self) -> None:
        for name in ("pre_s", "post_s", "ring_slack_s"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be >= 0 and finite")
        if not self.pre_s < self.max_s < math.inf:
            raise ValueError("max_s must be finite and longer than pre_s")
        if not 0 < self.grace_s < math.inf:
            raise ValueError("grace_s must be > 0 and finite")
        for name in ("preroll_bytes", "clip_bytes", "max_open", "max_cameras"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


class ClipFrame(NamedTuple):
    """One frame of a clip; detections () when none came (or drawing is off)."""

    captured_at: float
    seq: int
    jpeg: bytes
    detections: tuple[Boxed, ...]


@dataclass(frozen=True)
class ClipJob:
    """A finished recording, for the encoder: frames sorted by capture time, then seq.

    `end_at` is None when the event had not ended (never closed, or the recording hit a cap first);
    `reason` says what finished it: "post_roll", "max_s", "bytes", "grace" (wall clock after
    close), "timeout" (wall clock, never closed) or "forgotten".
    """

    event_id: str
    camera: str
    start_at: float
    end_at: float | None
    frames: tuple[ClipFrame, ...]
    reason: str

    @property
    def span_s(self) -> float:
        """Capture time from the first frame to the last (0 for fewer than two)."""
        return self.frames[-1].captured_at - self.frames[0].captured_at if self.frames else 0.0


class _Frame:
    """A held frame; one object shared by the ring and the recordings, so late boxes reach all of them."""

    __slots__ = ("captured_at", "seq", "jpeg", "detections")

    def __init__(self, captured_at: float, seq: int, jpeg: bytes) -> None:
        self.captured_at, self.seq, self.jpeg = captured_at, seq, jpeg
        self.detections: tuple[Boxed, ...] = ()

    def key(self) -> tuple[float, int]:
        return self.captured_at, self.seq


class _Ring:
    """One camera's recent frames, sorted by (captured_at, seq)."""

    __slots__ = ("frames", "by_seq", "bytes", "newest")

    def __init__(self) -> None:
        self.frames: list[_Frame] = []
        self.by_seq: dict[int, _Frame] = {}
        self.bytes = 0
        self.newest = -math.inf  # the latest capture time seen, kept or not

    def insert(self, f: _Frame) -> None:
        bisect.insort(self.frames, f, key=_Frame.key)
        self.by_seq[f.seq] = f
        self.bytes += len(f.jpeg)

    def trim(self, keep_s: float, max_bytes: int) -> None:
        horizon = self.newest - keep_s
        drop = 0
        while drop < len(self.frames) and (self.frames[drop].captured_at < horizon or self.bytes > max_bytes):
            f = self.frames[drop]
            self.bytes -= len(f.jpeg)
            del self.by_seq[f.seq]
            drop += 1
        del self.frames[:drop]


class _Recording:
    __slots__ = ("event_id", "camera", "start_at", "end_at", "post_s", "from_at", "cap_at", "frames", "bytes",
                 "deadline", "reason")

    def __init__(self, event_id: str, camera: str, start_at: float, now: float, config: ClipConfig) -> None:
        self.event_id, self.camera, self.start_at = event_id, camera, start_at
        self.end_at: float | None = None
        self.post_s = config.post_s
        self.from_at = start_at - config.pre_s
        self.cap_at = self.from_at + config.max_s
        self.frames: dict[int, _Frame] = {}
        self.bytes = 0
        self.deadline = now + config.max_s + config.grace_s  # master's clock
        self.reason = ""  # set once finished

    @property
    def stop_at(self) -> float:
        """The capture time that ends the window."""
        return self.cap_at if self.end_at is None else min(self.cap_at, self.end_at + self.post_s)

    def reached(self, newest: float) -> None:
        """A frame captured at `newest` has come: the window is over once it is at or past its stop."""
        if not self.reason and newest >= self.stop_at:
            self.reason = "post_roll" if self.stop_at < self.cap_at else "max_s"

    def job(self) -> ClipJob:
        frames = sorted(self.frames.values(), key=_Frame.key)
        return ClipJob(self.event_id, self.camera, self.start_at, self.end_at,
                       tuple(ClipFrame(f.captured_at, f.seq, f.jpeg, f.detections) for f in frames), self.reason)


class ClipRecorder:
    """Per-camera pre-roll rings and the open recordings of events; finished recordings come out of due()."""

    def __init__(self, config: ClipConfig | None = None) -> None:
        self.config = config or ClipConfig()
        self.counters: Counter[str] = Counter()
        self._rings: OrderedDict[str, _Ring] = OrderedDict()  # least recently fed first
        self._open: dict[str, _Recording] = {}  # event id -> recording, in opening order
        self._lock = threading.Lock()

    def frame(self, camera: str, seq: int, captured_at: float, jpeg: bytes, now: float) -> None:
        """A frame's JPEG (any order): kept in the camera's pre-roll and every recording whose window covers it."""
        with self._lock:
            ring = self._ring(camera)
            if seq in ring.by_seq or any(seq in r.frames for r in self._recordings(camera)):
                self.counters["frames_duplicate"] += 1
                return
            f = _Frame(captured_at, seq, jpeg)
            taken = sum(self._offer(r, f) for r in self._recordings(camera))
            ring.newest = max(ring.newest, captured_at)
            if captured_at >= ring.newest - self.config.pre_s - self.config.ring_slack_s:
                ring.insert(f)
                ring.trim(self.config.pre_s + self.config.ring_slack_s, self.config.preroll_bytes)
            elif not taken:
                self.counters["frames_too_old"] += 1
            for r in self._recordings(camera):
                r.reached(captured_at)

    def boxes(self, camera: str, seq: int, detections: Sequence[Boxed], now: float) -> bool:
        """The tracked detections of frame `seq`, kept with it when it is still held; whether it was."""
        with self._lock:
            if not self.config.draw:
                return False
            ring = self._rings.get(camera)
            f = ring.by_seq.get(seq) if ring else None
            for r in self._recordings(camera):
                f = f or r.frames.get(seq)
            if f is None:
                self.counters["boxes_unmatched"] += 1
                return False
            f.detections = tuple(detections)
            self.counters["boxes_attached"] += 1
            return True

    def open(self, event_id: str, camera: str, start_at: float, now: float) -> bool:
        """Start recording an event that began at capture time `start_at`, with the pre-roll the ring
        holds; False when `max_open` recordings are open already (the event gets no clip). Opening
        an event that is open already changes nothing and returns True."""
        with self._lock:
            if event_id in self._open:
                return True
            if len(self._open) >= self.config.max_open:
                self.counters["clips_refused_busy"] += 1
                return False
            r = self._open[event_id] = _Recording(event_id, camera, start_at, now, self.config)
            ring = self._rings.get(camera)
            if ring is not None:
                start = bisect.bisect_left(ring.frames, r.from_at, key=lambda f: f.captured_at)
                for f in ring.frames[start:]:
                    self._offer(r, f)
                r.reached(ring.newest)
            self.counters["clips_started"] += 1
            return True

    def close(self, event_id: str, end_at: float, now: float) -> bool:
        """The event ended at capture time `end_at`: record `post_s` more; False if it is not open."""
        with self._lock:
            r = self._open.get(event_id)
            if r is None:
                return False
            if r.end_at is None:
                r.end_at = end_at
                for f in [f for f in r.frames.values() if f.captured_at > end_at + r.post_s]:
                    del r.frames[f.seq]  # taken before the end was known: past the post-roll
                    r.bytes -= len(f.jpeg)
                r.deadline = min(r.deadline, now + self.config.post_s + self.config.grace_s)
                ring = self._rings.get(r.camera)
                if ring is not None:
                    r.reached(ring.newest)
            return True

    def due(self, now: float) -> list[ClipJob]:
        """The finished recordings (by their frames or by the clock), removed from the recorder."""
        with self._lock:
            out = []
            for event_id, r in list(self._open.items()):
                if not r.reason and now >= r.deadline:
                    r.reason = "timeout" if r.end_at is None else "grace"
                if r.reason:
                    del self._open[event_id]
                    out.append(r.job())
                    self.counters["clips_finished"] += 1
                    self.counters[f"clips_finished_{r.reason}"] += 1
                    if not r.frames:
                        self.counters["clips_empty"] += 1
            return out

    def finish_all(self) -> list[ClipJob]:
        """Every open recording, cut where it is (the master is stopping), removed from the recorder."""
        with self._lock:
            for r in self._open.values():
                r.reason = r.reason or "stopped"
        return self.due(float("-inf"))

    def cancel(self, event_id: str) -> bool:
        """Drop an open recording (no clip); False if it is not open."""
        with self._lock:
            if self._open.pop(event_id, None) is None:
                return False
            self.counters["clips_cancelled"] += 1
            return True

    def forget(self, camera: str) -> None:
        """Drop a camera's pre-roll; its open recordings finish with what they have (next due())."""
        with self._lock:
            self._rings.pop(camera, None)
            for r in self._recordings(camera):
                r.reason = r.reason or "forgotten"

    def is_open(self, event_id: str) -> bool:
        """Whether `event_id` is recording (opened, not yet returned by due() or cancelled)."""
        with self._lock:
            return event_id in self._open

    def stats(self) -> dict[str, Any]:
        """Rings, recordings and counters, JSON-safe, for the master's stats page."""
        with self._lock:
            recordings = [{"event_id": r.event_id, "camera": r.camera, "frames": len(r.frames), "bytes": r.bytes,
                           "closed": r.end_at is not None, "finished": bool(r.reason)} for r in self._open.values()]
            return {"cameras": len(self._rings),
                    "preroll_frames": sum(len(g.frames) for g in self._rings.values()),
                    "preroll_bytes": sum(g.bytes for g in self._rings.values()),
                    "open": len(self._open), "open_bytes": sum(r.bytes for r in self._open.values()),
                    "recordings": recordings, "counters": dict(self.counters)}

    def _ring(self, camera: str) -> _Ring:
        ring = self._rings.get(camera)
        if ring is None:
            while len(self._rings) >= self.config.max_cameras:
                _, old = self._rings.popitem(last=False)
                self.counters["cameras_dropped"] += 1
                self.counters["frames_dropped_camera"] += len(old.frames)
            ring = self._rings[camera] = _Ring()
        self._rings.move_to_end(camera)
        return ring

    def _recordings(self, camera: str) -> list[_Recording]:
        return [r for r in self._open.values() if r.camera == camera]

    def _offer(self, r: _Recording, f: _Frame) -> bool:
        """Add `f` to `r` if its window covers it and it fits; whether it was taken."""
        if f.captured_at < r.from_at or (r.end_at is not None and f.captured_at > r.end_at + r.post_s):
            return False  # outside the event's window: not wanted
        if f.captured_at > r.cap_at or r.reason == "bytes":
            self.counters["frames_dropped_cap"] += 1
            return False
        if r.bytes + len(f.jpeg) > self.config.clip_bytes:
            self.counters["frames_dropped_cap"] += 1
            r.reason = "bytes"
            return False
        r.frames[f.seq] = f
        r.bytes += len(f.jpeg)
        return True
