"""Events fired by rules: the Event type, its wire form, a bounded log with cursors, snapshots.

Pure and thread-safe: no clock reads, no sockets. `annotate` is the one function that touches
pixels (OpenCV), to draw an event's boxes on the frame that fired it.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from common.errors import DecodeError
from common.imageinfo import MAX_IMAGE_PIXELS, check_image
from common.tasks import SEQ_WIRE_MASK, Detection

log = logging.getLogger(__name__)

EVENTS_KEPT = 1000  # ring behind get_events
SNAPSHOTS_KEPT = 200  # the newest events keep their JPEG snapshot; older ones lose it
SNAPSHOT_BUDGET_BYTES = 64 * 2**20  # and all kept snapshots together stay under this
MAX_PAGE = 1000
JPEG_QUALITY = 85
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Event:
    """A rule matched on one camera port for enough consecutive results.

    Times are seconds since the Unix epoch: first_at/last_at are capture times (camera clock) of the
    streak's earliest and latest frames, fired_at is the master's clock when the event fired.
    `best` is the highest-scoring matching detection of the streak, found in result `task_id`;
    `trigger_task_id` is the result that completed the streak (the frame whose payload is at hand).
    """

    id: str
    rule: str
    port: int
    first_seq: int
    last_seq: int
    first_at: float
    last_at: float
    fired_at: float
    frames: int  # matching results in the streak
    best: Detection
    task_id: str
    trigger_task_id: str = ""
    snapshot: bytes | None = None  # annotated JPEG, or None
    # behaviours of tracked objects (master/alerts/behaviours.py): an event with a life
    kind: str = "detect"  # the rule's kind: detect, enter, exit, dwell, occupancy, cross
    camera: str = ""  # the camera's name ("" for a port the config file does not name)
    phase: str = "start"  # start, update or end (a "detect" event has one entry: start)
    track_id: int = 0  # the track it follows (0: none, e.g. occupancy)
    place: str = ""  # the zone or line
    direction: str = ""  # cross: which way
    ended_at: float = 0.0  # capture time it ended; 0 while it lasts
    clip: str = ""  # "", "recording", "ready", "failed" or "none" (could not record)


def new_event_ids() -> Callable[[], str]:
    """A source of event ids unique to this life of the master: ev-<random prefix>-<counter in hex>."""
    prefix, counter = secrets.token_hex(3), itertools.count(1)
    lock = threading.Lock()

    def next_id() -> str:
        with lock:
            return f"ev-{prefix}-{next(counter):x}"
    return next_id


def to_wire(event: Event, *, snapshot: bool | None = None) -> dict[str, Any]:
    """The event as an XML-RPC- and JSON-safe dict (no None, ints < 2**31, times as floats).

    Snapshot bytes never ride inside: "snapshot" says whether one can be fetched (by default,
    whether the event carries one).
    """
    return {
        "id": event.id, "rule": event.rule, "port": _int32(event.port),
        "first_seq": event.first_seq & SEQ_WIRE_MASK, "last_seq": event.last_seq & SEQ_WIRE_MASK,
        "first_at": float(event.first_at), "last_at": float(event.last_at), "fired_at": float(event.fired_at),
        "frames": _int32(event.frames),
        "detection": {"label": event.best.label, "score": round(float(event.best.score), 4),
                      "box": [_int32(v) for v in event.best.box]},
        "task_id": event.task_id, "trigger_task_id": event.trigger_task_id,
        "snapshot": event.snapshot is not None if snapshot is None else bool(snapshot),
        "kind": event.kind, "camera": event.camera, "phase": event.phase, "track_id": _int32(event.track_id),
        "place": event.place, "direction": event.direction, "ended_at": float(event.ended_at), "clip": event.clip,
    }


def _int32(v: int) -> int:
    return max(-INT32_MAX - 1, min(INT32_MAX, int(v)))


class EventLog:
    """The newest event entries (one per start, update and end), each with a cursor that only grows;
    the latest state of each event still in the log; snapshots for the newest few only."""

    def __init__(self, *, size: int = EVENTS_KEPT, snapshots: int = SNAPSHOTS_KEPT,
                 snapshot_budget_bytes: int = SNAPSHOT_BUDGET_BYTES) -> None:
        if size < 1 or snapshots < 0 or snapshot_budget_bytes < 0:
            raise ValueError("size must be >= 1; snapshots and snapshot_budget_bytes >= 0")
        self._size, self._max_snapshots, self._budget = size, snapshots, snapshot_budget_bytes
        self._lock = threading.Lock()
        self._items: deque[tuple[int, Event]] = deque()
        self._last = 0
        self._latest: dict[str, tuple[int, Event]] = {}  # id -> (entries in the log, latest state)
        self._snapshots: OrderedDict[str, bytes] = OrderedDict()
        self._snapshot_bytes = 0

    def add(self, event: Event) -> int:
        """Keep an entry for `event` (its snapshot separately, while it is among the newest: a later
        entry's snapshot replaces an earlier one's); return its cursor."""
        with self._lock:
            self._last += 1
            kept = replace(event, snapshot=None)
            self._items.append((self._last, kept))
            n, _ = self._latest.get(event.id, (0, kept))
            self._latest[event.id] = (n + 1, kept)
            if len(self._items) > self._size:
                _, old = self._items.popleft()
                left, latest = self._latest[old.id]
                if left <= 1:
                    del self._latest[old.id]
                    self._forget_snapshot(old.id)
                else:
                    self._latest[old.id] = (left - 1, latest)
            if event.snapshot is not None and len(event.snapshot) <= self._budget and self._max_snapshots:
                self._forget_snapshot(event.id)
                self._snapshots[event.id] = event.snapshot
                self._snapshot_bytes += len(event.snapshot)
                while len(self._snapshots) > self._max_snapshots or self._snapshot_bytes > self._budget:
                    self._forget_snapshot(next(iter(self._snapshots)))
            return self._last

    def get(self, event_id: str) -> Event | None:
        """The latest state of an event still in the log."""
        with self._lock:
            got = self._latest.get(event_id)
            return got[1] if got else None

    def set_clip(self, event_id: str, state: str) -> None:
        """Record how its clip is doing ("recording", "ready", "failed", "none"), without a new entry."""
        with self._lock:
            got = self._latest.get(event_id)
            if got is not None:
                self._latest[event_id] = (got[0], replace(got[1], clip=state))

    def _forget_snapshot(self, event_id: str) -> None:
        data = self._snapshots.pop(event_id, None)
        if data is not None:
            self._snapshot_bytes -= len(data)

    def since(self, cursor: int, limit: int = 100) -> dict[str, Any]:
        """Events after `cursor`, oldest first: {"events", "next", "missed"}, like get_results.

        A cursor from the future (the master restarted) reads from the oldest event kept.
        """
        limit = max(1, min(int(limit), MAX_PAGE))
        with self._lock:
            cursor = 0 if cursor > self._last else max(int(cursor), 0)
            first = self._items[0][0] if self._items else self._last + 1
            start = max(cursor + 1, first)
            page = list(itertools.islice(self._items, start - first, start - first + limit))
            events = [{**to_wire(e, snapshot=e.id in self._snapshots), "cursor": c,
                       "clip": self._latest[e.id][1].clip} for c, e in page]
            nxt = page[-1][0] if page else self._last
            return {"events": events, "next": nxt, "missed": start - cursor - 1}

    def snapshot(self, event_id: str) -> bytes | None:
        """The annotated JPEG of a recent event, or None (unknown, no snapshot, or pushed out)."""
        with self._lock:
            return self._snapshots.get(event_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


# ----- snapshots -------------------------------------------------------------------------------

_GREEN, _RED, _BLACK, _WHITE = (0, 200, 0), (0, 0, 255), (0, 0, 0), (255, 255, 255)


def annotate(jpeg: bytes, detections: Iterable[Detection], highlight: Iterable[Detection] | Detection | None = None,
             *, max_pixels: int = MAX_IMAGE_PIXELS) -> bytes | None:
    """Draw boxes and labels on a JPEG and re-encode it (quality 85); None if it does not decode, or
    claims more than `max_pixels` (checked from its header before decoding).

    Detections in `highlight` (one or several, compared by label and box) are drawn thick in red,
    the others thin in green. The image keeps its size.
    """
    # Imported here: the master never touches pixels otherwise, so its start-up stays free of OpenCV.
    import cv2
    import numpy as np

    try:
        check_image(jpeg, max_pixels)
    except DecodeError as e:
        log.warning("not drawing on a frame: %s", e)
        return None
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    marked = {_key(d) for d in _as_list(highlight)}
    for det in detections:
        _draw(cv2, image, det, _key(det) in marked)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return buf.tobytes() if ok else None


def _draw(cv2: Any, image: Any, det: Detection, strong: bool) -> None:
    color, thickness = (_RED, 3) if strong else (_GREEN, 1)
    x, y, w, h = det.box
    cv2.rectangle(image, (x, y), (x + w, y + h), color, thickness)
    text = f"{det.label} {det.score:.2f}"
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    top = max(y - th - base - 2, 0)
    cv2.rectangle(image, (x, top), (x + tw + 4, top + th + base + 2), color, cv2.FILLED)
    cv2.putText(image, text, (x + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                _WHITE if strong else _BLACK, 1, cv2.LINE_AA)


def _as_list(highlight: Iterable[Detection] | Detection | None) -> list[Detection]:
    if highlight is None:
        return []
    if isinstance(highlight, Detection):
        return [highlight]
    return list(highlight)


def _key(d: Detection) -> tuple[str, tuple[int, ...]]:
    return d.label, tuple(d.box)
