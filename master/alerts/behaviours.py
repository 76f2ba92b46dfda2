"""Behaviours of tracked objects: a camera's zones, lines, counts and the events of its behaviour rules.

Pure: no clock reads (capture times come with each frame, `now` is the master's clock, passed in),
no I/O. One `Scene` per camera, fed its tracked frames in frame order (master/tracking/hub.py).

    TrackedFrame + frame size --> LineCounter (crossings) --> ZoneTracker (enters, exits)
                              --> rules of kinds enter, exit, dwell, occupancy, cross --> Actions

Decisions:

* **Only confirmed tracks** take part: a tentative track (seen in fewer than 3 frames) is often a
  false detection, and counting it would inflate every number. (Lines follow tentative tracks too,
  but count what they crossed only once they are confirmed: master/tracking/lines.py.)
* **Events have a life.** `enter`: starts when a track enters the zone, ends when it leaves.
  `dwell`: starts when a track has been in the zone for `seconds`, ends when it leaves; one event per
  stay, however long. `occupancy`: starts when at least `count` objects of the label are in the zone,
  ends when fewer are. `exit` and `cross` are moments: their start and end come together. An event
  that lasts gets an `update` entry when a clearly better picture of its object comes (a box 25%
  bigger at a score at least as good, e.g. a person walking towards the camera), at most every
  UPDATE_EVERY_S.
* **Filters** (label or "*", min_score on the best score the track has had, min_width/min_height on
  its box) decide whether a track's behaviour raises an event; counts and occupancy read-outs cover
  every confirmed track of the labels the line or zone watches.
* **Cooldown** is per (rule, camera), on the master's clock, from an event's start; a behaviour
  rule's default is 0: every track that qualifies raises its own event. A dwell that falls in a
  cooldown is not raised later in the same stay.
* **Counts per hour** are bucketed by the capture time's UTC hour, the newest HOURS_KEPT hours kept.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from common.tasks import Detection
from master.alerts.events import Event
from master.alerts.rules import ZONE_KINDS, Rule, big_enough
from master.tracking import TrackedDetection, TrackedFrame
from master.tracking.lines import Crossing, Line, LineCounter, foot_point
from master.tracking.zones import Zone, ZoneChange, ZoneTracker

UPDATE_EVERY_S = 2.0  # least time between two updates of one event (master's clock)
BETTER_AREA = 1.25  # a box this much bigger (at a score as good) is a better picture
HOURS_KEPT = 168  # per-hour counts kept: a week
MAX_TRACKS_REMEMBERED = 4096  # tracks whose best score and last box are kept, per camera
MAX_LIVE_EVENTS = 1024  # events that last, per camera; the oldest is ended beyond
QUIET_S = 1.0  # a camera without frames this long (master's clock) has its time advanced by `tick`


@dataclass(frozen=True)
class Action:
    """One event entry to log: its phase, the event in its state after it, and the detection of the
    frame at hand to highlight in a snapshot (None: keep the previous snapshot)."""

    phase: str  # "start", "update" or "end"
    event: Event
    highlight: Detection | None = None


@dataclass
class SceneStep:
    """What one frame (or a tick) did."""

    crossings: list[Crossing] = dataclasses.field(default_factory=list)
    changes: list[ZoneChange] = dataclasses.field(default_factory=list)
    actions: list[Action] = dataclasses.field(default_factory=list)


@dataclass
class _Live:
    event: Event
    quality: float  # of its best picture so far
    updated: float  # master's clock at its start or last update


def _quality(d: TrackedDetection | Detection) -> tuple[float, float]:
    return float(d.box[2] * d.box[3]), float(d.score)


def _hour(at: float) -> int:
    return int(at // 3600) * 3600


class Scene:
    """One camera's lines, zones, counts and behaviour rules. Not thread-safe: the master calls it
    under its own lock."""

    def __init__(self, port: int, camera: str, lines: Iterable[Line], zones: Iterable[Zone],
                 rules: Iterable[Rule], new_id: Callable[[], str]) -> None:
        self.port, self.camera = port, camera
        self.lines = LineCounter(lines)
        self.zones = ZoneTracker(zones)
        self.rules = tuple(r for r in rules if r.kind != "detect" and r.applies_to(port))
        self._new_id = new_id
        self.hourly: Counter[tuple[str, str, str, int]] = Counter()  # (line, direction, label, hour) -> n
        self.entries: Counter[tuple[str, str]] = Counter()  # (zone, label) -> enters since start
        self.rule_counts: dict[str, Counter[str]] = {r.name: Counter() for r in self.rules}
        self._live: OrderedDict[tuple[str, int], _Live] = OrderedDict()  # (rule, track or 0) -> event
        self._dwelled: set[tuple[str, int]] = set()  # (rule, track) whose dwell this stay is decided
        self._cooling: dict[str, float] = {}  # rule -> master's clock until which it may not start
        self._tracks: OrderedDict[int, tuple[TrackedDetection, float]] = OrderedDict()  # last box, best score
        self._size: tuple[int, int] | None = None
        self._t = -math.inf  # capture time of the latest frame
        self._seen_wall = -math.inf  # master's clock when it came

    # ----- feeding ------------------------------------------------------------------------------

    def observe(self, frame: TrackedFrame, size: tuple[int, int] | None, now: float) -> SceneStep:
        """One tracked frame (in frame order) of `size` (width, height; None: unknown, nothing placed)."""
        step = SceneStep()
        if size is None or size[0] <= 0 or size[1] <= 0:
            return step
        self._size, at = size, frame.captured_at
        self._t, self._seen_wall = max(self._t, at), now
        here = {d.track_id: d for d in frame.detections if d.confirmed}
        for tid, d in here.items():
            best = max(d.score, self._tracks.pop(tid, (d, 0.0))[1])
            self._tracks[tid] = (d, best)
        while len(self._tracks) > MAX_TRACKS_REMEMBERED:
            self._tracks.popitem(last=False)
        feet = [(tid, d.label, foot_point(d.box, *size)) for tid, d in here.items()]
        tracked = [(d.track_id, d.label, foot_point(d.box, *size), d.confirmed) for d in frame.detections
                   if d.track_id]
        step.crossings = self.lines.observe(tracked, at)
        for c in step.crossings:
            self.hourly[c.line, c.direction, c.label, _hour(c.at)] += 1
        self._prune_hours(at)
        step.changes = self.zones.observe(feet, at)
        self._behave(step, here, at, now)
        return step

    def tick(self, now: float) -> SceneStep:
        """Advance a camera that has gone quiet: tracks not seen for long leave their zones, and the
        events that hang on them end (called by the master's monitor)."""
        step = SceneStep()
        if self._size is None or now - self._seen_wall < QUIET_S:
            return step
        at = self._t + (now - self._seen_wall)
        step.changes = self.zones.observe([], at)
        self._behave(step, {}, at, now)
        return step

    # ----- rules --------------------------------------------------------------------------------

    def _behave(self, step: SceneStep, here: Mapping[int, TrackedDetection], at: float, now: float) -> None:
        for change in step.changes:
            if change.kind == "enter":
                self.entries[change.zone, change.label] += 1
        for rule in self.rules:
            if rule.kind == "cross":
                for c in step.crossings:
                    if c.line == rule.place and (not rule.direction or c.direction == rule.direction):
                        self._moment(step, rule, c.track_id, here, at, now, direction=c.direction)
            elif rule.kind == "occupancy":
                self._occupancy(step, rule, here, at, now)
            else:
                for change in step.changes:
                    if change.zone == rule.place:
                        self._zone_change(step, rule, change, here, at, now)
                if rule.kind == "dwell":
                    self._dwell(step, rule, here, at, now)
            self._update(step, rule, here, now)

    def _zone_change(self, step: SceneStep, rule: Rule, change: ZoneChange, here: Mapping[int, TrackedDetection],
                     at: float, now: float) -> None:
        key = (rule.name, change.track_id)
        if change.kind == "exit":
            self._dwelled.discard(key)
            if rule.kind == "exit":
                self._moment(step, rule, change.track_id, here, change.at, now)
            else:
                self._end(step, key, change.at)
        elif rule.kind == "enter":
            self._start(step, rule, change.track_id, here, change.at, now)

    def _dwell(self, step: SceneStep, rule: Rule, here: Mapping[int, TrackedDetection], at: float,
               now: float) -> None:
        for tid, (_label, since) in self.zones.inside(rule.place).items():
            key = (rule.name, tid)
            if key in self._dwelled or at - since < rule.seconds:
                continue
            if self._qualifies(rule, tid):
                self._dwelled.add(key)
                self._start(step, rule, tid, here, at, now)

    def _occupancy(self, step: SceneStep, rule: Rule, here: Mapping[int, TrackedDetection], at: float,
                   now: float) -> None:
        inside = [tid for tid in self.zones.inside(rule.place) if self._qualifies(rule, tid)]
        key = (rule.name, 0)
        if len(inside) >= rule.count and key not in self._live:
            best = max((here[t] for t in inside if t in here), key=_quality, default=None)
            self._start(step, rule, 0, {0: best} if best else {}, at, now, objects=len(inside))
        elif len(inside) < rule.count and key in self._live:
            self._end(step, key, at)

    def _qualifies(self, rule: Rule, tid: int) -> bool:
        got = self._tracks.get(tid)
        if got is None:
            return False
        det, best = got
        if not rule.wants(det.label) or best < rule.min_score:
            return False
        return not (rule.min_width or rule.min_height) or big_enough(det.box, self._size, rule.min_width,
                                                                     rule.min_height)

    def _start(self, step: SceneStep, rule: Rule, tid: int, here: Mapping[int, TrackedDetection], at: float,
               now: float, *, objects: int = 1, direction: str = "") -> Event | None:
        if tid and not self._qualifies(rule, tid):
            return None
        if now < self._cooling.get(rule.name, -math.inf):
            self.rule_counts[rule.name]["suppressed_cooldown"] += 1
            return None
        if rule.cooldown_s:
            self._cooling[rule.name] = now + rule.cooldown_s
        det = here.get(tid) or (self._tracks[tid][0] if tid in self._tracks else None)
        best = Detection(det.label, det.score, det.box, det.track_id) if det else Detection(rule.label, 0.0,
                                                                                           (0, 0, 0, 0))
        event = Event(id=self._new_id(), rule=rule.name, port=self.port, first_seq=0, last_seq=0, first_at=at,
                      last_at=at, fired_at=now, frames=objects, best=best, task_id="", kind=rule.kind,
                      camera=self.camera, track_id=tid, place=rule.place, direction=direction)
        self.rule_counts[rule.name]["events"] += 1
        step.actions.append(Action("start", event, best if tid in here else None))
        if rule.kind in ("exit", "cross"):
            return event
        self._live[rule.name, tid] = _Live(event, _quality(best)[0], now)
        while len(self._live) > MAX_LIVE_EVENTS:
            oldest = next(iter(self._live))
            self._end(step, oldest, at)
        return event

    def _moment(self, step: SceneStep, rule: Rule, tid: int, here: Mapping[int, TrackedDetection], at: float,
                now: float, *, direction: str = "") -> None:
        event = self._start(step, rule, tid, here, at, now, direction=direction)
        if event is not None:
            step.actions.append(Action("end", dataclasses.replace(event, phase="end", ended_at=at)))

    def _update(self, step: SceneStep, rule: Rule, here: Mapping[int, TrackedDetection], now: float) -> None:
        for (name, tid), live in list(self._live.items()):
            if name != rule.name:
                continue
            det = here.get(tid) if tid else max((here[t] for t in self.zones.inside(rule.place) if t in here),
                                                key=_quality, default=None)
            if det is None:
                continue
            live.event = dataclasses.replace(live.event, last_at=max(live.event.last_at, self._t))
            area, score = _quality(det)
            if area < live.quality * BETTER_AREA or score < live.event.best.score or \
                    now - live.updated < UPDATE_EVERY_S:
                continue
            best = Detection(det.label, det.score, det.box, det.track_id)
            live.event, live.quality, live.updated = dataclasses.replace(live.event, best=best, phase="update"), \
                area, now
            step.actions.append(Action("update", live.event, best))

    def _end(self, step: SceneStep, key: tuple[str, int], at: float) -> None:
        live = self._live.pop(key, None)
        if live is not None:
            ended = dataclasses.replace(live.event, phase="end", ended_at=max(at, live.event.first_at),
                                        last_at=max(at, live.event.last_at))
            step.actions.append(Action("end", ended))

    def end_all(self, now: float) -> list[Action]:
        """End every lasting event (the camera left the config, or its zones changed)."""
        step = SceneStep()
        for key in list(self._live):
            self._end(step, key, max(self._t, 0.0))
        return step.actions

    # ----- read-outs ----------------------------------------------------------------------------

    def _prune_hours(self, at: float) -> None:
        oldest = _hour(at) - (HOURS_KEPT - 1) * 3600
        if self.hourly and min(k[3] for k in self.hourly) < oldest:
            for k in [k for k in self.hourly if k[3] < oldest]:
                del self.hourly[k]

    def counts(self) -> dict[str, Any]:
        """Lines: totals and per hour, per direction and label; zones: objects now, peak, entries."""
        lines: dict[str, dict[str, dict[str, int]]] = {ln.name: {} for ln in self.lines.lines}
        for (line, direction, label), n in sorted(self.lines.totals.items()):
            lines[line].setdefault(direction, {})[label] = n
        hourly = [{"hour": datetime.fromtimestamp(h, UTC).strftime("%Y-%m-%dT%H:00:00Z"), "line": line,
                   "direction": direction, "label": label, "count": n}
                  for (line, direction, label, h), n in sorted(self.hourly.items(), key=lambda kv: (kv[0][3], kv[0]))]
        now, peak = self.zones.occupancy(), self.zones.peak()
        zones = {z.name: {"now": now.get(z.name, {}), "peak": peak.get(z.name, {}),
                          "entered": {label: n for (zone, label), n in sorted(self.entries.items()) if zone == z.name}}
                 for z in self.zones.zones}
        return {"port": self.port, "lines": lines, "hourly": hourly, "zones": zones}

    @property
    def size(self) -> tuple[int, int] | None:
        """The size (width, height) of the latest frame placed."""
        return self._size

    def zones_of(self, track_id: int) -> list[str]:
        """The zones a track is in now."""
        return self.zones.zones_of(track_id)

    # ----- keeping state ------------------------------------------------------------------------

    def carry_over(self, old: Scene) -> list[Action]:
        """After a reload: keep the counts of unchanged lines, the state of unchanged zones, and the
        lasting events of unchanged rules; the other lasting events of `old` end (their actions)."""
        same_lines = set(self.lines.lines) & set(old.lines.lines)
        names = {ln.name for ln in same_lines}
        if same_lines:
            self.lines.totals.update({k: n for k, n in old.lines.totals.items() if k[0] in names})
            self.lines.adopt(old.lines, names)
            self.hourly.update({k: n for k, n in old.hourly.items() if k[0] in names})
        self.zones.carry_over(old.zones)
        kept = {z.name for z in self.zones.zones if z in old.zones.zones}
        self.entries.update({k: n for k, n in old.entries.items() if k[0] in kept})
        self._tracks, self._size, self._t, self._seen_wall = old._tracks, old._size, old._t, old._seen_wall
        same = {r.name for r in self.rules if r in old.rules and (r.kind == "cross" or r.place in kept)}
        step = SceneStep()
        for key, live in list(old._live.items()):
            if key[0] in same:
                self._live[key] = live
            else:
                old._end(step, key, max(old._t, 0.0))
        self._dwelled = {k for k in old._dwelled if k[0] in same}
        self._cooling = {k: v for k, v in old._cooling.items() if k in same}
        for name in same:
            self.rule_counts[name].update(old.rule_counts.get(name, {}))
        return step.actions

    def save(self) -> dict[str, Any]:
        """The counts, JSON-ready, with each line's and zone's geometry so a restore keeps only what
        still means the same."""
        return {"lines": [{"name": ln.name, "a": list(ln.a), "b": list(ln.b), "directions": list(ln.directions),
                           "labels": list(ln.labels)} for ln in self.lines.lines],
                "totals": [[*k, n] for k, n in self.lines.totals.items()],
                "hourly": [[*k, n] for k, n in self.hourly.items()],
                "zones": [{"name": z.name, "points": [list(p) for p in z.points]} for z in self.zones.zones],
                "entries": [[*k, n] for k, n in self.entries.items()],
                "peak": {z: dict(p) for z, p in self.zones.peak().items()}}

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Counts from `save()` of an earlier life, for the lines and zones that have not changed."""
        try:
            lines = {ln["name"] for ln in saved.get("lines", ()) if any(
                ln["name"] == cur.name and tuple(ln["a"]) == cur.a and tuple(ln["b"]) == cur.b
                and tuple(ln["directions"]) == cur.directions for cur in self.lines.lines)}
            zones = {z["name"] for z in saved.get("zones", ()) if any(
                z["name"] == cur.name and tuple(tuple(p) for p in z["points"]) == cur.points
                for cur in self.zones.zones)}
            for line, direction, label, n in saved.get("totals", ()):
                if line in lines:
                    self.lines.totals[line, direction, label] += int(n)
            for line, direction, label, hour, n in saved.get("hourly", ()):
                if line in lines:
                    self.hourly[line, direction, label, int(hour)] += int(n)
            for zone, label, n in saved.get("entries", ()):
                if zone in zones:
                    self.entries[zone, label] += int(n)
            for zone, peak in saved.get("peak", {}).items():
                if zone in zones:
                    self.zones.restore_peak(zone, {str(k): int(v) for k, v in peak.items()})
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"saved counts of camera {self.camera!r} are not in the expected form: {e}") from e


def scene_rules(rules: Sequence[Rule]) -> tuple[Rule, ...]:
    """The behaviour rules among `rules` (the rest are "detect" rules for the RuleEngine)."""
    return tuple(r for r in rules if r.kind != "detect")


__all__ = ["ZONE_KINDS", "Action", "Scene", "SceneStep", "scene_rules"]
