"""Event clips to MP4: a background Component that encodes finished recordings, one at a time.

    submit(ClipJob) --> bounded queue --> clip-encoder thread --> <clip>.mp4.part --> os.replace --> on_done

Decisions:
- Constant frame rate, real time: the output rate is 1 / the median interval between the clip's
  frames, rounded to a whole rate in [1, max_fps]; each output tick shows the latest frame whose
  capture time rounds to that tick or before it, so a gap (frames gated out as still) holds the
  last picture and the clip plays as long as it was captured. Frames denser than the rate are
  skipped without being decoded.
- Every JPEG's size is checked from its header before decoding (common.imageinfo.check_image); a
  frame that fails (garbage, over max_pixels) is skipped and counted, the last good picture held.
  Frames of another size than the clip's first are resized to it (a camera changed resolution).
- Boxes are drawn on the frame they were detected in, before any resize, coloured by track id,
  labelled "label #id" ("label" for a detection no track took).
- A clip is written as `<final>.part`, then renamed into place: a reader never sees half a file.
  Any failure (a full or read-only disk, a codec error, a bug) removes the partial file, is counted
  and logged (rate-limited warnings; tracebacks only for unexpected errors), and on_done gets None:
  nothing escapes the loop, a full disk never takes the master down.
- One clip at a time, at most `max_queue` waiting: `submit` never blocks, it refuses (counted).
  A stop() abandons the clip in hand between two frames and the queued ones, each reported to
  on_done with None, so shutdown does not wait for a minute-long encode.

Thread-safety: submit, counters and stats from any thread; on_done is called on the encoder thread.
"""

from __future__ import annotations

import logging
import os
import statistics
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import av.error
import cv2
import numpy as np

from common.errors import DecodeError
from common.imageinfo import MAX_IMAGE_PIXELS, check_image
from common.runtime import Component
from common.throttle import Throttle
from common.video import H264Writer
from master.media.clips import Boxed, ClipFrame, ClipJob
from master.media.store import MediaDir, part_path, unlink_quietly

log = logging.getLogger(__name__)

MAX_QUEUE = 8  # finished recordings waiting for the encoder
MAX_FPS = 30
IDLE_WAIT_S = 1.0  # longest an idle encoder waits for a job or stop() (which wakes it at once anyway)
WARN_EVERY_S = 60.0  # at most one warning per this long for failed clips
CLIP_CRF = 26  # a little smaller than the writer's default: clips are for looking, not for archiving

OnDone = Callable[[str, Path | None, dict[str, Any]], None]

# distinct BGR colours for track ids; track id 0 (no track) is drawn grey
_PALETTE = ((0, 200, 0), (255, 128, 0), (0, 128, 255), (200, 0, 200), (0, 220, 220), (255, 0, 0),
            (128, 0, 255), (0, 0, 230), (255, 255, 0), (128, 255, 128))
_GREY, _BLACK, _WHITE = (160, 160, 160), (0, 0, 0), (255, 255, 255)


class Stopped(Exception):
    """The encoder was stopped while a clip was in hand."""


class NoFrames(Exception):
    """A recording came with no frames at all (its camera sent none in the event's window)."""


class NoPicture(ValueError):
    """None of a clip's frames could be decoded."""


def clip_rate(times: Sequence[float], max_fps: int = MAX_FPS) -> int:
    """Frames per second of a clip whose frames were captured at `times` (sorted): 1 / the median
    positive interval, rounded, within [1, max_fps]; 1 for a single picture."""
    gaps = [b - a for a, b in zip(times, times[1:]) if b > a]
    if not gaps:
        return 1
    return max(1, min(max_fps, round(1 / statistics.median(gaps))))


def draw_boxes(image: np.ndarray, detections: Sequence[Boxed]) -> None:
    """Draw each detection's box and "label #track_id" on `image` (BGR, in place), coloured by track;
    lines and text grow with frames wider than 960 pixels, so they stay readable in a browser."""
    grow = max(1.0, image.shape[1] / 960)
    scale, line = 0.5 * grow, round(2 * grow)
    for det in detections:
        color = _PALETTE[det.track_id % len(_PALETTE)] if det.track_id else _GREY
        x, y, w, h = (int(v) for v in det.box)
        cv2.rectangle(image, (x, y), (x + w, y + h), color, line)
        text = f"{det.label} #{det.track_id}" if det.track_id else det.label
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, line // 2)
        top = max(y - th - base - 2, 0)
        cv2.rectangle(image, (x, top), (x + tw + 4, top + th + base + 2), color, cv2.FILLED)
        ink = _BLACK if sum(color) > 380 else _WHITE  # readable on light and dark colours alike
        cv2.putText(image, text, (x + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, line // 2,
                    cv2.LINE_AA)


class _Pictures:
    """Decodes a clip's frames on demand, boxes drawn, at the size of the first good one."""

    def __init__(self, max_pixels: int) -> None:
        self.max_pixels = max_pixels
        self.size: tuple[int, int] | None = None  # width, height
        self.bad = 0
        self.shown = 0

    def picture(self, frame: ClipFrame) -> np.ndarray | None:
        """The frame ready to encode, or None (counted) when it does not decode."""
        try:
            check_image(frame.jpeg, self.max_pixels)
        except DecodeError as e:
            log.debug("clip frame %d skipped: %s", frame.seq, e)
            self.bad += 1
            return None
        image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            self.bad += 1
            return None
        draw_boxes(image, frame.detections)
        h, w = image.shape[:2]
        if self.size is None:
            self.size = w, h
        elif self.size != (w, h):
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self.shown += 1
        return image


def write_clip(frames: Sequence[ClipFrame], path: Path, *, max_pixels: int = MAX_IMAGE_PIXELS,
               max_fps: int = MAX_FPS, crf: int = CLIP_CRF,
               stopped: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Encode `frames` (sorted by capture time) to an MP4 at `path`, in real time at a constant rate;
    what was written: frames (pictures shown), bad_frames, fps, ticks (frames in the file), seconds.
    NoPicture when no frame decodes, Stopped when `stopped()` turns true."""
    pictures = _Pictures(max_pixels)
    first, picture = 0, None
    while picture is None and first < len(frames):
        picture = pictures.picture(frames[first])
        first += 1
    if picture is None or pictures.size is None:
        raise NoPicture(f"none of the {len(frames)} frames decodes")
    frames = frames[first - 1:]
    t0 = frames[0].captured_at
    fps = clip_rate([f.captured_at for f in frames], max_fps)
    ticks = round((frames[-1].captured_at - t0) * fps) + 1
    width, height = pictures.size
    with H264Writer(path, width=width, height=height, fps=fps, crf=crf) as writer:
        shown = 0  # index in `frames` of the picture on screen
        for tick in range(ticks):
            if stopped():
                raise Stopped("the encoder was stopped")
            latest = shown
            while latest + 1 < len(frames) and round((frames[latest + 1].captured_at - t0) * fps) <= tick:
                latest += 1
            for candidate in range(latest, shown, -1):  # the newest that decodes; bad ones hold the last
                fresh = pictures.picture(frames[candidate])
                if fresh is not None:
                    picture = fresh
                    break
            shown = latest
            writer.write(picture)
    return {"frames": pictures.shown, "bad_frames": pictures.bad, "fps": fps, "ticks": ticks,
            "seconds": ticks / fps}


class ClipEncoder(Component):
    """Encodes submitted ClipJobs into `media`'s clip paths, one at a time, and reports each to `on_done`."""

    thread_name = "clip-encoder"

    def __init__(self, media: MediaDir, on_done: OnDone, *, max_queue: int = MAX_QUEUE,
                 max_pixels: int = MAX_IMAGE_PIXELS, max_fps: int = MAX_FPS, crf: int = CLIP_CRF,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if max_queue < 1 or max_fps < 1:
            raise ValueError("max_queue and max_fps must be >= 1")
        self.media, self.on_done = media, on_done
        self.max_pixels, self.max_fps, self.crf = max_pixels, max_fps, crf
        self.max_queue = max_queue
        self.counters: Counter[str] = Counter()
        self._queue: deque[ClipJob] = deque()
        self._lock = threading.Lock()  # the queue, the counters and the warning limiter
        self._changed = threading.Condition(self._lock)  # a job queued, or stop()
        self._warnings = Throttle(WARN_EVERY_S, clock)
        self._drain_until: float | None = None  # finish(): after stop, queued clips are encoded until then

    def submit(self, job: ClipJob) -> bool:
        """Queue a finished recording; False (counted) when the queue is full or the encoder stopped."""
        with self._changed:
            if self._stop.is_set() or len(self._queue) >= self.max_queue:
                self.counters["clips_refused_stopped" if self._stop.is_set() else "clips_refused_full"] += 1
                return False
            self._queue.append(job)
            self.counters["clips_queued"] += 1
            self._changed.notify()
            return True

    def finish(self, budget_s: float) -> None:
        """Stop, but encode the clips queued (finished recordings of a stopping master) for up to
        `budget_s` first; what is left then is abandoned, as after stop()."""
        with self._changed:
            self._drain_until = time.monotonic() + budget_s
        self.stop()

    def _out_of_time(self) -> bool:
        """Whether a clip being encoded must give up: stopped, and past finish()'s budget if any."""
        return self._stop.is_set() and (self._drain_until is None or time.monotonic() >= self._drain_until)

    def run(self) -> None:
        while True:
            with self._changed:
                if not self._queue and not self._stop.is_set():  # stop() notifies under this lock after setting
                    self._changed.wait(IDLE_WAIT_S)
                if self._stop.is_set() and (not self._queue or self._out_of_time()):
                    break
                job = self._queue.popleft() if self._queue else None
            if job is not None:
                self.encode(job)
        self._abandon_queued()

    def _wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def encode(self, job: ClipJob) -> None:
        """Encode one job and report it; never raises (failures go to the counters, the log and on_done)."""
        info: dict[str, Any] = {"frames": 0, "seconds": 0.0, "bytes": 0, "error": ""}
        path: Path | None = None
        started = time.perf_counter()
        try:
            if not job.frames:
                raise NoFrames("the recording has no frames")
            path = self._write(job, info)
        except NoFrames as e:
            info["error"] = str(e)
            self._count("clips_empty")
        except Stopped as e:
            info["error"] = str(e)
            self._count("clips_abandoned")
        except (OSError, av.error.FFmpegError, ValueError, DecodeError) as e:
            info["error"] = f"{type(e).__name__}: {e}"
            self._failed(job, info["error"], "clips_failed")
        except Exception as e:  # noqa: BLE001 - one clip's bug must not stop the clips after it
            info["error"] = f"{type(e).__name__}: {e}"
            log.exception("clip of event %s (camera %s) failed", job.event_id, job.camera)
            self._count("clips_failed")
        info["encode_s"] = round(time.perf_counter() - started, 3)
        self._report(job.event_id, path, info)

    def stats(self) -> dict[str, Any]:
        """Queue length and counters, JSON-safe."""
        with self._lock:
            return {"queued": len(self._queue), "max_queue": self.max_queue, "counters": dict(self.counters)}

    def _write(self, job: ClipJob, info: dict[str, Any]) -> Path:
        final = self.media.clip_path(job.camera, job.event_id)
        part = part_path(final)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            info.update(write_clip(job.frames, part, max_pixels=self.max_pixels, max_fps=self.max_fps,
                                   crf=self.crf, stopped=self._out_of_time))
            info["bytes"] = part.stat().st_size
            os.replace(part, final)
        finally:
            unlink_quietly(part)  # gone already after the rename; the half file after a failure
        self.media.add(final)
        with self._lock:
            self.counters["clips_written"] += 1
            self.counters["frames_bad"] += info["bad_frames"]
        return final

    def _report(self, event_id: str, path: Path | None, info: dict[str, Any]) -> None:
        try:
            self.on_done(event_id, path, info)
        except Exception:  # noqa: BLE001 - the caller's callback must not stop the encoder
            log.exception("on_done for the clip of event %s failed", event_id)
            self._count("on_done_failed")

    def _abandon_queued(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    return
                job = self._queue.popleft()
                self.counters["clips_abandoned"] += 1
            self._report(job.event_id, None, {"frames": 0, "seconds": 0.0, "bytes": 0,
                                              "error": "the encoder was stopped"})

    def _failed(self, job: ClipJob, error: str, counter: str) -> None:
        self._count(counter)
        unwarned = self._warnings.ready()
        if unwarned is None:
            return
        more = f" ({unwarned} more failed since the last warning)" if unwarned else ""
        log.warning("no clip for event %s (camera %s): %s%s", job.event_id, job.camera, error, more)

    def _count(self, counter: str) -> None:
        with self._lock:
            self.counters[counter] += 1

