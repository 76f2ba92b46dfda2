"""Zones: polygons on a camera's frame that know which tracks are in them, since when, and how many.

Pure. A zone is a polygon in frame fractions (x right, y down); a track is in it when the foot point
of its box (bottom centre, where a person stands) is inside. Decisions:

* **Inertia.** A track enters after `inertia` consecutive observed frames inside, and leaves after
  `inertia` consecutive observed frames outside, so a box that flickers across the edge, or one
  frame of a bad box, neither enters nor leaves twice. Its stay starts at the first of the frames
  that made it enter (the capture time it really stepped in), and ends at the first outside frame.
* **Missing is not outside.** A frame in which a track has no detection (the detector missed it, or
  someone stood in front) says nothing about it. A track not seen for `gone_s` (capture time) has
  gone: it leaves every zone it was in, at its last-seen time. The caller advances time for a
  camera that stopped sending by observing an empty frame at a later capture time.
* **Occupancy** is the number of tracks in the zone now, per label; `peak` the most there were at
  once since start (or since the zone's counts were last reset by a config change).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Point = tuple[float, float]
DEFAULT_INERTIA = 3  # frames
DEFAULT_GONE_S = 2.0  # a track unseen this long has left (beyond the tracker's 1.5 s lost time)
MAX_TRACKS_PER_ZONE = 4096  # tracks remembered per zone; the least recently seen go first beyond
MAX_ZONE_POINTS = 64


def point_in_polygon(point: Point, polygon: Sequence[Point]) -> bool:
    """Even-odd ray casting; a point exactly on an edge may land on either side."""
    px, py = point
    inside = False
    for (x1, y1), (x2, y2) in zip(polygon, [*polygon[1:], polygon[0]]):
        if (y1 > py) != (y2 > py) and px < x1 + (py - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def polygon_area(points: Sequence[Point]) -> float:
    """Signed area (shoelace); zero when the points lie on one line."""
    return sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(points, [*points[1:], points[0]])) / 2


@dataclass(frozen=True)
class Zone:
    """A named polygon on one camera's frame."""

    name: str
    points: tuple[Point, ...]
    labels: tuple[str, ...] = ()  # labels it keeps track of; empty: every label
    inertia: int = DEFAULT_INERTIA

    def __post_init__(self) -> None:
        if not 3 <= len(self.points) <= MAX_ZONE_POINTS:
            raise ValueError(f"zone {self.name!r}: give 3..{MAX_ZONE_POINTS} points [x, y]")
        if not all(0.0 <= v <= 1.0 for p in self.points for v in p):
            raise ValueError(f"zone {self.name!r}: points are fractions of the frame, 0..1")
        if abs(polygon_area(self.points)) < 1e-6:
            raise ValueError(f"zone {self.name!r}: its points lie on one line (no area)")
        if not 1 <= self.inertia <= 100:
            raise ValueError(f"zone {self.name!r}: inertia must be 1..100 frames")

    def contains(self, p: Point) -> bool:
        """Whether the foot point `p` (frame fractions) is in the zone."""
        return point_in_polygon(p, self.points)

    def watches(self, label: str) -> bool:
        """Whether objects of `label` are kept track of in this zone."""
        return not self.labels or label in self.labels


@dataclass(frozen=True)
class ZoneChange:
    """A track entered or left a zone."""

    kind: str  # "enter" or "exit"
    zone: str
    track_id: int
    label: str
    at: float  # capture time: when it stepped in (enter) or out / was last seen (exit)
    since: float  # when its stay began (== at for an enter)
    gone: bool = False  # an exit because the track was not seen for gone_s


@dataclass
class _Member:
    label: str
    inside: bool = False  # entered (after inertia)
    streak: int = 0  # consecutive frames on the other side of `inside`
    streak_at: float = 0.0  # capture time of the first frame of that streak
    since: float = 0.0  # when the stay began (inside only)
    last_seen: float = 0.0


@dataclass
class _ZoneState:
    zone: Zone
    members: OrderedDict[int, _Member] = field(default_factory=OrderedDict)
    peak: Counter[str] = field(default_factory=Counter)


class ZoneTracker:
    """The zones of one camera and who is in them; `observe` once per frame, in frame order."""

    def __init__(self, zones: Iterable[Zone], *, gone_s: float = DEFAULT_GONE_S) -> None:
        self.zones = tuple(zones)
        self.gone_s = gone_s
        self._state = {z.name: _ZoneState(z) for z in self.zones}
        self.t = float("-inf")  # capture time of the latest frame observed

    def observe(self, tracks: Iterable[tuple[int, str, Point]], at: float) -> list[ZoneChange]:
        """(track id, label, foot point) of a frame's confirmed tracks -> the enters and exits it makes."""
        self.t = max(self.t, at)
        seen = list(tracks)
        out: list[ZoneChange] = []
        for st in self._state.values():
            for track_id, label, foot in seen:
                if st.zone.watches(label):
                    change = self._step(st, track_id, label, st.zone.contains(foot), at)
                    if change is not None:
                        out.append(change)
            out += self._expire(st, at)
            occupancy = self._occupancy(st)
            for label, n in occupancy.items():
                st.peak[label] = max(st.peak[label], n)
        return out

    def _step(self, st: _ZoneState, track_id: int, label: str, inside: bool, at: float) -> ZoneChange | None:
        m = st.members.pop(track_id, None)
        if m is None:
            if not inside:
                return None  # outside and never in: nothing to remember
            m = _Member(label)
        st.members[track_id] = m  # most recently seen last
        while len(st.members) > MAX_TRACKS_PER_ZONE:
            st.members.popitem(last=False)
        m.last_seen = max(m.last_seen, at)
        if inside == m.inside:
            m.streak = 0
            return None
        if m.streak == 0:
            m.streak_at = at
        m.streak += 1
        if m.streak < st.zone.inertia:
            return None
        m.inside, m.streak = inside, 0
        if inside:
            m.since = m.streak_at
            return ZoneChange("enter", st.zone.name, track_id, label, m.since, m.since)
        change = ZoneChange("exit", st.zone.name, track_id, label, m.streak_at, m.since)
        del st.members[track_id]
        return change

    def _expire(self, st: _ZoneState, at: float) -> list[ZoneChange]:
        out = []
        for track_id, m in list(st.members.items()):
            if at - m.last_seen <= self.gone_s:
                break  # members are in order of last sight: the rest were seen later
            del st.members[track_id]
            if m.inside:
                out.append(ZoneChange("exit", st.zone.name, track_id, m.label, m.last_seen, m.since, gone=True))
        return out

    @staticmethod
    def _occupancy(st: _ZoneState) -> Counter[str]:
        return Counter(m.label for m in st.members.values() if m.inside)

    def occupancy(self) -> dict[str, dict[str, int]]:
        """Zone -> label -> tracks in it now (labels with none are left out)."""
        return {name: dict(self._occupancy(st)) for name, st in self._state.items()}

    def peak(self) -> dict[str, dict[str, int]]:
        """Zone -> label -> the most tracks that were in it at once."""
        return {name: dict(st.peak) for name, st in self._state.items()}

    def inside(self, zone: str) -> dict[int, tuple[str, float]]:
        """Tracks in `zone` now: id -> (label, since)."""
        st = self._state.get(zone)
        return {} if st is None else {tid: (m.label, m.since) for tid, m in st.members.items() if m.inside}

    def zones_of(self, track_id: int) -> list[str]:
        """The zones track `track_id` is in now."""
        return [name for name, st in self._state.items() if (m := st.members.get(track_id)) and m.inside]

    def restore_peak(self, zone: str, peak: dict[str, int]) -> None:
        """A peak saved by an earlier life of the master (the higher of it and today's is kept)."""
        st = self._state.get(zone)
        if st is not None:
            for label, n in peak.items():
                st.peak[label] = max(st.peak[label], n)

    def carry_over(self, old: ZoneTracker) -> None:
        """Keep the state of the zones that are unchanged in `old` (a config reload)."""
        for name, st in self._state.items():
            prev = old._state.get(name)
            if prev is not None and prev.zone == st.zone:
                self._state[name] = prev
        self.t = old.t
