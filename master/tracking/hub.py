"""The tracker of every camera: results in, in any order; tracked frames out, in frame order.

    offer(camera, seq, captured_at, detections, now) --> ReorderWindow --> CameraTracker --> TrackedFrame
    skip(camera, seq, now)  (a frame that will never have a result: the gap closes at once)
    poll(now)               (frames whose wait ran out with no new offer for their camera)

Track ids come from one counter for the whole hub: unique across cameras, increasing per camera,
never reused, even for a camera that was forgotten and came back. Nothing is persisted: after a
restart tracks start again, and ids continue from `id_floor`, which the caller takes from a value
of `next_id` it saved (a journal can save a high-water mark ahead of use, e.g. next_id + 10_000,
and pass that back: ids are then skipped, never repeated). Thread-safe: one lock around each call.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from common.tasks import Detection
from master.tracking.reorder import ReorderWindow
from master.tracking.tracker import CameraTracker, TrackedDetection, TrackerConfig, TrackInfo

_SKIPPED = None  # a window item for a frame that has no detections to track


@dataclass(frozen=True)
class TrackedFrame:
    """One camera frame after tracking: its detections in their original order, each with a track."""

    camera: str
    seq: int
    captured_at: float
    detections: tuple[TrackedDetection, ...]


class _Camera:
    __slots__ = ("window", "tracker")

    def __init__(self, config: TrackerConfig, counters: Counter[str], new_id: Callable[[], int]) -> None:
        self.window: ReorderWindow[tuple[float, tuple[Detection, ...]] | None] = ReorderWindow(
            wait_s=config.reorder_wait_s, max_frames=config.max_window_frames, restart_gap=config.restart_gap,
            counters=counters)
        self.tracker = CameraTracker(config, new_id)


class TrackerHub:
    """Per-camera reorder windows and trackers, bounded in cameras, frames held and tracks."""

    def __init__(self, config: TrackerConfig | None = None, *, id_floor: int = 0) -> None:
        self.config = config or TrackerConfig()
        self.counters: Counter[str] = Counter()
        self._next_id = max(id_floor, 0) + 1
        self._cameras: OrderedDict[str, _Camera] = OrderedDict()  # least recently fed first
        self._lock = threading.Lock()

    @property
    def next_id(self) -> int:
        """The id the next new track gets; pass at least `next_id - 1` as id_floor after a restart."""
        return self._next_id

    def offer(self, camera: str, seq: int, captured_at: float, detections: Sequence[Detection],
              now: float) -> list[TrackedFrame]:
        """A frame's result (any order); the frames of this camera now due, tracked, in frame order."""
        with self._lock:
            cam = self._camera(camera)
            due = cam.window.put(seq, (captured_at, tuple(detections)), now)
            return self._track(camera, cam, due)

    def skip(self, camera: str, seq: int, now: float) -> list[TrackedFrame]:
        """Frame `seq` will have no result (gated, dropped, failed): no need to wait for it."""
        with self._lock:
            cam = self._camera(camera)
            return self._track(camera, cam, cam.window.put(seq, _SKIPPED, now))

    def poll(self, now: float) -> list[TrackedFrame]:
        """Frames of any camera whose wait for earlier frames has run out."""
        with self._lock:
            return [f for name, cam in list(self._cameras.items())
                    for f in self._track(name, cam, cam.window.due(now))]

    def flush(self, camera: str) -> list[TrackedFrame]:
        """Everything `camera` holds, tracked now, gaps given up (e.g. before it is removed)."""
        with self._lock:
            cam = self._cameras.get(camera)
            return self._track(camera, cam, cam.window.drain()) if cam else []

    def forget(self, camera: str) -> None:
        """Drop a camera's tracks and held frames (its ids are never reused)."""
        with self._lock:
            self._cameras.pop(camera, None)

    def tracks(self, camera: str) -> list[TrackInfo]:
        """The camera's live tracks, oldest first."""
        with self._lock:
            cam = self._cameras.get(camera)
            return cam.tracker.tracks() if cam else []

    def cameras(self) -> list[str]:
        """Cameras with state, least recently fed first."""
        with self._lock:
            return list(self._cameras)

    def held(self, camera: str) -> int:
        """Results `camera` holds waiting for earlier frames."""
        with self._lock:
            cam = self._cameras.get(camera)
            return len(cam.window) if cam else 0

    def _camera(self, name: str) -> _Camera:
        cam = self._cameras.get(name)
        if cam is None:
            while len(self._cameras) >= self.config.max_cameras:
                _, old = self._cameras.popitem(last=False)
                self.counters["cameras_forgotten"] += 1
                self.counters["frames_forgotten"] += len(old.window)
            cam = self._cameras[name] = _Camera(self.config, self.counters, self._take_id)
        self._cameras.move_to_end(name)
        return cam

    def _track(self, name: str, cam: _Camera, due: list) -> list[TrackedFrame]:
        out = []
        for seq, item in due:
            if item is _SKIPPED:
                continue
            captured_at, dets = item
            out.append(TrackedFrame(name, seq, captured_at, cam.tracker.step(seq, captured_at, dets)))
        self.counters["frames_tracked"] += len(out)
        return out

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1
