"""One camera's tracks: ByteTrack-style association in two stages, states, births and removals.

A frame's detections are split by score. Stage 1 matches the confident ones (score >= high_score)
to every live track of the same label (tentative, confirmed or lost) by IoU with the track's box
predicted to the frame's capture time, with an optimal assignment (master/tracking/assign.py).
Stage 2 matches the uncertain ones (low_score <= score < high_score) only to confirmed or lost
tracks stage 1 left unmatched: a detector's dip in confidence keeps an object's track, but never
starts one. Confident detections still unmatched start tentative tracks.

    tentative --confirm_hits consecutive hits--> confirmed --missed--> lost --matched--> confirmed
        | missed once                                                    | max_lost_s or max_lost_frames
        v                                                                v
     removed                                                          removed

Labels never mix: a person's detection is never matched to a car's track.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from common.tasks import Detection
from master.tracking.assign import iou_matrix, match
from master.tracking.motion import BoxFilter

NO_TRACK = 0  # the track_id of a detection no track took (an uncertain one that matched nothing)


@dataclass(frozen=True)
class TrackerConfig:
    """Thresholds, lifetimes and bounds of the tracker. Times are seconds, on the camera's clock
    (captured_at) for track lifetimes and on the master's clock (`now`) for the reorder wait."""

    high_score: float = 0.5  # a detection at or above this is confident: matched first, may start a track
    low_score: float = 0.1  # between this and high_score: only keeps an existing track alive; below: ignored
    match_iou: float = 0.3  # least IoU of a confident detection with a track's predicted box
    low_match_iou: float = 0.5  # least IoU for an uncertain detection (stricter: it is more often a false one)
    confirm_hits: int = 3  # consecutive hits that confirm a tentative track
    max_lost_s: float = 1.5  # a lost track unseen this long (capture time) is removed
    max_lost_frames: int = 45  # ... or unseen for this many frame numbers
    alpha: float = 0.6  # filter gain on position and size
    beta: float = 0.2  # filter gain on their rates
    reorder_wait_s: float = 1.0  # longest a result waits for an earlier frame (master clock)
    max_window_frames: int = 64  # results held per camera for reordering; the oldest gap is given up beyond
    restart_gap: int = 1000  # a frame number this far behind the expected one means the camera started again
    max_tracks: int = 256  # live tracks per camera; the oldest lost ones are removed first beyond
    max_cameras: int = 1024  # cameras with state; the least recently fed is forgotten beyond

    def __post_init__(self) -> None:
        if not 0 <= self.low_score <= self.high_score:
            raise ValueError("need 0 <= low_score <= high_score")
        for name in ("match_iou", "low_match_iou", "alpha", "beta"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1]")
        for name in ("max_lost_s", "reorder_wait_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("confirm_hits", "max_lost_frames", "max_window_frames", "restart_gap", "max_tracks",
                     "max_cameras"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


class TrackState(StrEnum):
    """Where a track is in its life (removed tracks are gone)."""

    TENTATIVE = "tentative"
    CONFIRMED = "confirmed"
    LOST = "lost"


@dataclass(frozen=True)
class TrackedDetection:
    """A detection with the track it belongs to; `confirmed` is False for a tentative track's (and NO_TRACK)."""

    label: str
    score: float
    box: tuple[int, int, int, int]
    track_id: int
    confirmed: bool

    def to_wire(self) -> dict[str, Any]:
        """The detection's wire dict with its track."""
        return {"label": self.label, "score": round(float(self.score), 4), "box": list(self.box),
                "track_id": self.track_id, "confirmed": self.confirmed}


@dataclass(frozen=True)
class TrackInfo:
    """A live track as `tracks()` lists it; box is the last estimate, or the prediction for a lost track."""

    track_id: int
    label: str
    box: tuple[int, int, int, int]
    first_seen: float  # capture time of its first detection
    last_seen: float  # capture time of its last detection
    state: TrackState
    hits: int  # detections matched to it
    velocity: tuple[float, float]  # of the box centre, pixels per second


class _Track:
    __slots__ = ("id", "label", "filter", "state", "first_seen", "last_seen", "last_seq", "hits")

    def __init__(self, track_id: int, det: Detection, seq: int, t: float, config: TrackerConfig) -> None:
        self.id, self.label = track_id, det.label
        self.filter = BoxFilter(det.box, t, alpha=config.alpha, beta=config.beta)
        self.state = TrackState.CONFIRMED if config.confirm_hits == 1 else TrackState.TENTATIVE
        self.first_seen = self.last_seen = t
        self.last_seq, self.hits = seq, 1

    def hit(self, det: Detection, seq: int, t: float, confirm_hits: int) -> None:
        self.filter.update(det.box, t)
        self.last_seen, self.last_seq = max(self.last_seen, t), seq
        self.hits += 1
        if self.state is TrackState.LOST or self.hits >= confirm_hits:
            self.state = TrackState.CONFIRMED


class CameraTracker:
    """The tracks of one camera, fed one frame at a time in frame order."""

    def __init__(self, config: TrackerConfig, new_id: Callable[[], int]) -> None:
        self.config = config
        self._new_id = new_id
        self._tracks: dict[int, _Track] = {}  # by id: oldest first
        self.t = 0.0  # capture time of the last frame stepped
        self.evicted = 0  # tracks removed early to stay within max_tracks

    def step(self, seq: int, t: float, detections: Sequence[Detection]) -> tuple[TrackedDetection, ...]:
        """Track one frame; one TrackedDetection per detection, in the same order."""
        cfg = self.config
        self.t = max(self.t, t)
        owner: dict[int, _Track] = {}  # detection index -> its track
        high = [i for i, d in enumerate(detections) if d.score >= cfg.high_score]
        low = [i for i, d in enumerate(detections) if cfg.low_score <= d.score < cfg.high_score]
        live = list(self._tracks.values())
        self._associate(detections, high, live, t, cfg.match_iou, owner)
        taken = {tr.id for tr in owner.values()}
        left = [tr for tr in live if tr.id not in taken and tr.state is not TrackState.TENTATIVE]
        self._associate(detections, low, left, t, cfg.low_match_iou, owner)
        for i, tr in owner.items():
            tr.hit(detections[i], seq, t, cfg.confirm_hits)
        self._miss(seq, t, {tr.id for tr in owner.values()})
        for i in high:
            if i not in owner and (tr := self._birth(detections[i], seq, t)) is not None:
                owner[i] = tr
        return tuple(_tracked(d, owner.get(i)) for i, d in enumerate(detections))

    def tracks(self) -> list[TrackInfo]:
        """The live tracks, oldest first."""
        return [_info(tr, self.t) for tr in self._tracks.values()]

    def _associate(self, dets: Sequence[Detection], idx: list[int], tracks: list[_Track], t: float,
                   min_iou: float, owner: dict[int, _Track]) -> None:
        """Match detections `idx` to `tracks` label by label; record the pairs in `owner`."""
        for label in {dets[i].label for i in idx}:
            rows = [i for i in idx if dets[i].label == label]
            cols = [tr for tr in tracks if tr.label == label]
            if not cols:
                continue
            iou = iou_matrix([dets[i].box for i in rows], [tr.filter.box(t) for tr in cols])
            for r, c in match(iou, min_iou):
                owner[rows[r]] = cols[c]

    def _miss(self, seq: int, t: float, matched: set[int]) -> None:
        """Tracks not matched in this frame: tentative ones go, confirmed ones are lost, old lost ones go."""
        cfg = self.config
        for tr in list(self._tracks.values()):
            if tr.id in matched:
                continue
            if tr.state is TrackState.TENTATIVE:
                del self._tracks[tr.id]
                continue
            tr.state = TrackState.LOST
            if t - tr.last_seen > cfg.max_lost_s or seq - tr.last_seq > cfg.max_lost_frames:
                del self._tracks[tr.id]

    def _birth(self, det: Detection, seq: int, t: float) -> _Track | None:
        """A new tentative track, making room by removing the oldest lost, then oldest tentative, track."""
        if len(self._tracks) >= self.config.max_tracks:
            victim = (min((tr for tr in self._tracks.values() if tr.state is TrackState.LOST),
                          key=lambda tr: tr.last_seen, default=None)
                      or next((tr for tr in self._tracks.values() if tr.state is TrackState.TENTATIVE), None))
            if victim is None:
                return None
            del self._tracks[victim.id]
            self.evicted += 1
        tr = _Track(self._new_id(), det, seq, t, self.config)
        self._tracks[tr.id] = tr
        return tr


def _tracked(det: Detection, tr: _Track | None) -> TrackedDetection:
    if tr is None:
        return TrackedDetection(det.label, det.score, det.box, NO_TRACK, False)
    return TrackedDetection(det.label, det.score, det.box, tr.id, tr.state is TrackState.CONFIRMED)


def _info(tr: _Track, t: float) -> TrackInfo:
    at = t if tr.state is TrackState.LOST else tr.filter.t
    box = tuple(round(v) for v in tr.filter.box(at))
    vx, vy = tr.filter.rate[:2]
    return TrackInfo(tr.id, tr.label, box, tr.first_seen, tr.last_seen, tr.state, tr.hits, (vx, vy))
