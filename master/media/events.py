"""Event media for the master: each behaviour event's clip and best snapshot, in the media directory.

    frame(camera, seq, captured_at, jpeg, detections, now)   tracked frames of cameras with a scene
    open(event, now) -> clip state   close(event, now)       an event starts / ends
    poll(now)                         finished recordings to the encoder; retention sweeps

The master calls these under its scene lock, in frame order; nothing here blocks it: encoding is
one background thread (ClipEncoder) with a bounded queue, and every disk error is counted and
logged, never raised (a full disk costs clips, never results). When a clip is written (or fails)
`on_clip(event_id, state)` is called from the encoder thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common.imageinfo import MAX_IMAGE_PIXELS
from common.runtime import Component
from master.alerts.events import Event
from master.media.clips import ClipConfig, ClipRecorder
from master.media.store import MediaDir

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 30.0  # retention pass over the media directory (master's clock)
STOP_BUDGET_S = 3.0  # a stopping master encodes its last clips for at most this long


class EventMedia(Component):
    """The clip recorder, its encoder and the media directory, started and stopped as one part."""

    thread_name = "event-media"

    def __init__(self, root: str | Path, on_clip: Callable[[str, str], None], *, clip: ClipConfig | None = None,
                 max_bytes: int = 2 * 2**30, max_age_s: float = 7 * 86400.0,
                 max_pixels: int = MAX_IMAGE_PIXELS) -> None:
        from master.media.encoder import ClipEncoder  # OpenCV and PyAV only when clips are on

        super().__init__()
        self.media = MediaDir(root, max_bytes=max_bytes, max_age_s=max_age_s)
        self.recorder = ClipRecorder(clip or ClipConfig())
        self._on_clip = on_clip
        self.encoder = ClipEncoder(self.media, self._done, max_pixels=max_pixels)
        self._swept_at = -float("inf")

    # ----- lifecycle: the encoder's thread is ours ---------------------------------------------

    def start(self) -> None:
        super().start()
        self.encoder.start()

    def stop(self) -> None:
        """Recordings still open are cut where they are and encoded, with what is queued, for up to
        STOP_BUDGET_S (a master must stop within seconds); clips not done by then are abandoned."""
        super().stop()
        for job in self.recorder.finish_all():
            if not self.encoder.submit(job):
                self._on_clip(job.event_id, "failed")
        self.encoder.finish(STOP_BUDGET_S)

    def join(self, timeout: float | None = None) -> bool:
        ended = self.encoder.join(timeout)
        return super().join(timeout) and ended

    def loops(self) -> list:
        return []  # no thread of its own: the master's threads call in, the encoder has its own

    # ----- the master's calls ------------------------------------------------------------------

    def frame(self, camera: str, seq: int, captured_at: float, jpeg: bytes, detections: Sequence[Any],
              now: float) -> None:
        """A tracked frame of a camera with a scene: into its pre-roll and open recordings, with its boxes."""
        self.recorder.frame(camera, seq, captured_at, jpeg, now)
        if detections:
            self.recorder.boxes(camera, seq, detections, now)

    def open(self, event: Event, now: float) -> str:
        """An event started: record its clip. The clip's state: "recording", or "none" (too many at once)."""
        if self.recorder.open(event.id, event.camera, event.first_at, now):
            return "recording"
        log.warning("event %s: no clip (%d clips are being recorded already)", event.id,
                    self.recorder.config.max_open)
        return "none"

    def end(self, event: Event, now: float) -> None:
        """An event ended: its clip finishes after the post-roll. Its best snapshot goes to the media dir."""
        self.recorder.close(event.id, event.ended_at or event.last_at, now)

    def keep_snapshot(self, event: Event, jpeg: bytes) -> None:
        """Write an event's snapshot next to its clip (retention applies to both)."""
        self.media.write_snapshot(event.camera, event.id, jpeg)

    def poll(self, now: float) -> None:
        """Finished recordings to the encoder (a full queue loses the clip, counted); a retention sweep
        every SWEEP_EVERY_S."""
        for job in self.recorder.due(now):
            if not self.encoder.submit(job):
                log.warning("event %s: clip dropped: the encoder is behind (%d clips queued)", job.event_id,
                            self.encoder.max_queue)
                self._on_clip(job.event_id, "failed")
        if now - self._swept_at >= SWEEP_EVERY_S:
            self._swept_at = now
            try:
                removed = self.media.sweep(time.time())
            except OSError as e:  # a sweep that fails must not stop the monitor
                log.warning("media directory %s: retention sweep failed: %s", self.media.root, e)
                removed = []
            if removed:
                log.info("media directory %s: removed %d old file(s) to stay within its limits",
                         self.media.root, len(removed))

    def clip_path(self, event_id: str) -> Path | None:
        """The finished clip of an event, if it is on disk."""
        return self.media.find(event_id)

    def stats(self) -> dict[str, Any]:
        return {"dir": str(self.media.root), "recorder": self.recorder.stats(), "encoder": self.encoder.stats(),
                "store": self.media.stats()}

    def _done(self, event_id: str, path: Path | None, info: dict[str, Any]) -> None:
        if path is not None:
            log.info("event %s: clip written: %s (%.1f s, %d frames, %.0f KB in %.1f s)", event_id, path,
                     info.get("seconds", 0.0), info.get("frames", 0), info.get("bytes", 0) / 1024,
                     info.get("encode_s", 0.0))
        self._on_clip(event_id, "ready" if path is not None else "failed")
