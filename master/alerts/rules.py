"""Alert rules: loading them from TOML, and the pure engine that turns results into events.

A rule fires when one camera port shows a matching detection in `min_frames` consecutive results
and the rule is not cooling down for that port. Pure and thread-safe: no clock reads (`now` is
passed in, seconds since the Unix epoch) and no I/O except `load_rules` reading the file.

Decisions:

* **Zone point.** A detection is inside a zone when the bottom-centre of its box (where a person's
  feet touch the ground) is inside the polygon. Zones are drawn on the floor, and the centre of a
  tall box is often outside a floor zone that the person is standing in.
* **Unknown frame size.** Zones are in 0..1 frame coordinates; without the frame's size a box in
  pixels cannot be placed, so a rule with a zone does not match (the result counts as a miss).
* **Consecutive** means consecutive in the order results *arrive* for a port. Two workers may
  finish frames slightly out of order; that does not break a streak. An event's first/last seq and
  times are the minimum/maximum over the streak, so they stay ordered.
* **Results that say nothing about the scene** (`status` other than "ok": a bad JPEG, a task that
  ran out of attempts; or `kind` "tile" from a file job) neither extend nor reset a streak.
* **Cooldown** is per (rule, port) and measured with `now` (the master's clock) from the moment an
  event fires. A streak keeps counting while cooling down, so continuous presence fires once per
  `cooldown_s`; each event describes the streak since the previous event.

Those are rules of kind "detect" (the default). The behaviours of tracked objects (kinds enter,
exit, dwell, occupancy and cross, on a camera's named zones and lines) are parsed here too and run
by master/alerts/behaviours.py.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
import tomllib
import urllib.parse
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.results import Result, ResultStatus
from common.tasks import Detection, TaskKind
from master.alerts.events import Event, new_event_ids
from master.tracking.zones import point_in_polygon, polygon_area

DEFAULT_MIN_SCORE = 0.5
DEFAULT_MIN_FRAMES = 1
DEFAULT_COOLDOWN_S = 10.0  # for "detect" rules; a behaviour rule's default is 0 (one event per track)
KINDS = ("detect", "enter", "exit", "dwell", "occupancy", "cross")
ZONE_KINDS = ("enter", "exit", "dwell", "occupancy")
ANY_LABEL = "*"
MAX_RULES = 256
MAX_ZONE_POINTS = 64
MAX_TRACKED_STREAKS = 16_384  # (rule, port) states kept; the least recently updated is forgotten beyond

Point = tuple[float, float]


@dataclass(frozen=True)
class Places:
    """A camera's named zones and lines (with their two direction names), for checking rules."""

    zones: frozenset[str] = frozenset()
    lines: Mapping[str, tuple[str, str]] = dataclasses.field(default_factory=dict)


class RulesError(ConfigError):
    """A rules file is unreadable, not TOML, or describes an invalid rule (message names the line)."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        super().__init__(f"{path}:{line}: {reason}" if line else f"{path}: {reason}")


@dataclass(frozen=True)
class Rule:
    """One alert rule. `zone` is a polygon in 0..1 frame coordinates (x right, y down) for a "detect"
    rule; a behaviour rule names the camera zone or line it watches in `place`."""

    name: str
    label: str  # "*": any label
    ports: tuple[int, ...] = ()  # empty: every port
    min_score: float = DEFAULT_MIN_SCORE
    zone: tuple[Point, ...] | None = None
    min_frames: int = DEFAULT_MIN_FRAMES
    cooldown_s: float = DEFAULT_COOLDOWN_S
    log: bool = True
    webhook: str | None = None
    kind: str = "detect"
    place: str = ""  # the zone (enter, exit, dwell, occupancy) or line (cross) watched
    direction: str = ""  # cross: the direction that counts ("": either)
    seconds: float = 0.0  # dwell: how long a track stays in the zone before the event starts
    count: int = 1  # occupancy: how many objects of the label at once
    min_width: float = 0.0  # least box width, a fraction of the frame width
    min_height: float = 0.0  # least box height, a fraction of the frame height
    cameras: tuple[str, ...] = ()  # in a cluster file: the names of the cameras in `ports` (empty: every camera)

    def wants(self, label: str) -> bool:
        """Whether objects of `label` are this rule's."""
        return self.label == ANY_LABEL or label == self.label

    def applies_to(self, port: int) -> bool:
        """Whether this rule watches camera `port`."""
        return not self.ports or port in self.ports

    def matches(self, detection: Detection, frame_size: tuple[int, int] | None) -> bool:
        """Whether one result detection satisfies this rule.

        `frame_size` is (width, height) in pixels; needed only when the rule has a zone.
        """
        if not self.wants(detection.label) or not detection.score >= self.min_score:
            return False
        if (self.min_width or self.min_height) and not big_enough(detection.box, frame_size, self.min_width,
                                                                   self.min_height):
            return False
        if self.zone is None:
            return True
        point = foot_point(detection.box, frame_size)
        return point is not None and point_in_polygon(point, self.zone)

    def matching(self, detections: Iterable[Detection],
                 frame_size: tuple[int, int] | None) -> list[Detection]:
        """The detections of one result that satisfy this rule (e.g. to highlight in a snapshot)."""
        return [d for d in detections if self.matches(d, frame_size)]


def big_enough(box: Any, frame_size: tuple[int, int] | None, min_width: float, min_height: float) -> bool:
    """Whether a pixel box is at least min_width x min_height (fractions of the frame); False when the
    frame's size is unknown."""
    if frame_size is None or frame_size[0] <= 0 or frame_size[1] <= 0:
        return False
    return box[2] >= min_width * frame_size[0] and box[3] >= min_height * frame_size[1]


def foot_point(box: Any, frame_size: tuple[int, int] | None) -> Point | None:
    """Bottom-centre of a pixel box [x, y, w, h], normalised by frame_size (width, height)."""
    if frame_size is None or not isinstance(box, (list, tuple)) or len(box) != 4:
        return None
    width, height = frame_size
    if width <= 0 or height <= 0:
        return None
    x, y, w, h = box
    return (x + w / 2) / width, (y + h) / height


# ----- loading ---------------------------------------------------------------------------------

_RULE_HEADER = re.compile(r"^\s*\[\[\s*rule\s*\]\]")
_TABLE_HEADER = re.compile(r"^\s*\[")
_KEYS = ("name", "label", "ports", "cameras", "min_score", "zone", "min_frames", "cooldown_s", "log", "webhook",
         "kind", "line", "direction", "seconds", "count", "min_width", "min_height")


def load_rules(path: str | Path) -> list[Rule]:
    """Read and validate a rules file; RulesError names the file, line and reason."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RulesError(name, 0, f"cannot read rules file: {e}") from e
    return parse_rules(text, name)


def parse_rules(text: str, path: str = "<rules>", *, cameras: Mapping[str, int] | None = None,
                others: Iterable[str] = (), places: Mapping[str, Places] | None = None,
                by_name: bool = False) -> list[Rule]:
    """Validate the text of a rules file (`path` only names it in errors). Inside a cluster config file
    (`cameras` maps camera names to ports, and rules may name them; `places` gives each camera's zones
    and lines, which behaviour rules name; top-level tables in `others` belong to the rest of the
    file) rules are optional. `by_name`: cameras of several masters may share a port number, so a rule
    must name its cameras rather than give ports."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise RulesError(path, int(m.group(1)) if m else 0, f"invalid TOML: {e}") from e
    lines = _Lines(text, path)
    unknown = sorted(set(doc) - {"rule", *others})
    if unknown:
        raise lines.error(lines.top_key(unknown[0]), f"unknown top-level key {unknown[0]!r} (expected [[rule]] tables)")
    tables = doc.get("rule")
    if cameras is not None and tables is None:
        return []
    if not isinstance(tables, list) or not tables:
        raise RulesError(path, lines.top_key("rule") if tables is not None else 0,
                         "no rules: expected one or more [[rule]] tables")
    if len(tables) > MAX_RULES:
        raise RulesError(path, lines.rule_line(MAX_RULES), f"too many rules (max {MAX_RULES})")
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(tables):
        rule = _RuleParser(table, index, lines, cameras or {}, places, by_name).parse()
        if rule.name in seen:
            raise lines.error(lines.key_line(index, "name"), f"duplicate rule name {rule.name!r} "
                              f"(first defined at line {lines.rule_line(seen[rule.name])})")
        seen[rule.name] = index
        rules.append(rule)
    return rules


class _Lines:
    """Maps rule index and key to a line of the file, by scanning for `[[rule]]` headers."""

    def __init__(self, text: str, path: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.headers = [i for i, line in enumerate(self.lines) if _RULE_HEADER.match(line)]

    def error(self, line: int, reason: str) -> RulesError:
        return RulesError(self.path, line, reason)

    def rule_line(self, index: int) -> int:
        """1-based line of the index-th `[[rule]]` header (or of `rule = [...]` in the inline form)."""
        return self.headers[index] + 1 if index < len(self.headers) else self.top_key("rule")

    def key_line(self, index: int, key: str) -> int:
        """1-based line where `key` is set inside the index-th rule, else the rule's header line."""
        if index >= len(self.headers):
            return self.rule_line(index)
        start = self.headers[index] + 1
        for i in range(start, len(self.lines)):
            if _TABLE_HEADER.match(self.lines[i]):
                break
            if _assigns(self.lines[i], key):
                return i + 1
        return start

    def top_key(self, key: str) -> int:
        """1-based line of a top-level key or table named `key` (0 if not found)."""
        for i, line in enumerate(self.lines):
            if _assigns(line, key) or re.match(rf"^\s*\[+\s*{re.escape(key)}\s*[\].]", line):
                return i + 1
        return 0


def _assigns(line: str, key: str) -> bool:
    return re.match(rf"""^\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*[=.]""", line) is not None


class _RuleParser:
    """Validates one `[[rule]]` table into a Rule."""

    def __init__(self, table: Any, index: int, lines: _Lines, cameras: Mapping[str, int],
                 places: Mapping[str, Places] | None, by_name: bool = False) -> None:
        self.table, self.index, self.lines, self.cameras, self.places = table, index, lines, cameras, places
        self.by_name = by_name
        self.label = f"rule #{index + 1}"

    def fail(self, key: str | None, reason: str) -> RulesError:
        line = self.lines.key_line(self.index, key) if key else self.lines.rule_line(self.index)
        return self.lines.error(line, f"{self.label}: {reason}")

    def parse(self) -> Rule:
        if not isinstance(self.table, dict):
            raise self.fail(None, "must be a table")
        name = self._text("name", required=True)
        self.label = f"rule {name!r}"
        unknown = sorted(set(self.table) - set(_KEYS))
        if unknown:
            raise self.fail(unknown[0], f"unknown key {unknown[0]!r} (known: {', '.join(_KEYS)})")
        kind = self.table.get("kind", "detect")
        if kind not in KINDS:
            raise self.fail("kind", f"kind must be one of {', '.join(KINDS)}, got {kind!r:.80}")
        ports, watched = self._ports()
        rule = Rule(name=name, label=self._text("label", required=True), ports=ports, cameras=watched,
                    min_score=self._number("min_score", DEFAULT_MIN_SCORE, 0.0, 1.0),
                    min_frames=self._min_frames(),
                    cooldown_s=self._number("cooldown_s", DEFAULT_COOLDOWN_S if kind == "detect" else 0.0,
                                            0.0, 86_400.0),
                    log=self._bool("log", True), webhook=self._webhook(), kind=kind,
                    min_width=self._number("min_width", 0.0, 0.0, 1.0),
                    min_height=self._number("min_height", 0.0, 0.0, 1.0))
        if kind == "detect":
            self._only(kind, "line", "direction", "seconds", "count")
            return dataclasses.replace(rule, zone=self._zone())
        return self._behaviour(rule)

    def _only(self, kind: str, *keys: str) -> None:
        for key in keys:
            if key in self.table:
                raise self.fail(key, f"{key!r} does not apply to a rule of kind {kind!r}")

    def _behaviour(self, rule: Rule) -> Rule:
        """A rule on tracked objects: the zone or line it names must exist on each camera it watches."""
        kind = rule.kind
        if "min_frames" in self.table:
            raise self.fail("min_frames", f"min_frames is for kind \"detect\"; a {kind} rule follows tracks, "
                                          "which are confirmed after 3 frames")
        if self.places is None:
            raise self.fail("kind", f"a {kind} rule watches a camera's zones and lines, which live in the cluster "
                                    "config file (framehive.toml): put the rule there")
        if kind == "cross":
            self._only(kind, "zone", "seconds", "count")
            place, what = self._text("line", required=True), "line"
        else:
            self._only(kind, "line", "direction")
            if not isinstance(self.table.get("zone"), str):
                raise self.fail("zone" if "zone" in self.table else None,
                                f"a {kind} rule names one of its cameras' zones: zone = \"NAME\"")
            place, what = self._text("zone", required=True), "zone"
        if kind != "dwell":
            self._only(kind, "seconds")
        if kind != "occupancy":
            self._only(kind, "count")
        seconds = self._number("seconds", 0.0, 0.0, 86_400.0) if kind == "dwell" else 0.0
        if kind == "dwell" and not seconds > 0:
            raise self.fail("seconds" if "seconds" in self.table else None,
                            "a dwell rule needs seconds = N (> 0): how long an object stays before it counts")
        count = self._count() if kind == "occupancy" else 1
        watched = list(rule.cameras) if rule.ports else list(self.cameras)
        having = [n for n in watched if self._has(n, what, place)]
        if rule.ports and len(having) < len(watched):
            missing = next(n for n in watched if n not in having)
            raise self.fail(what, f"camera {missing!r} has no {what} named {place!r}")
        if not having:
            raise self.fail(what, f"no camera has a {what} named {place!r}")
        direction = ""
        if kind == "cross" and "direction" in self.table:
            direction = self._text("direction")
            allowed = {d for n in having for d in self.places[n].lines[place]}
            if direction not in allowed:
                raise self.fail("direction", f"line {place!r} has directions {', '.join(sorted(allowed))}, "
                                             f"not {direction!r}")
        ports = rule.ports or tuple(sorted(self.cameras[n] for n in having))
        return dataclasses.replace(rule, place=place, direction=direction, seconds=seconds, count=count, ports=ports,
                                   cameras=rule.cameras or tuple(sorted(having)))

    def _has(self, camera: str, what: str, place: str) -> bool:
        p = self.places.get(camera) if self.places else None
        return p is not None and place in (p.zones if what == "zone" else p.lines)

    def _count(self) -> int:
        v = self.table.get("count", 1)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1000:
            raise self.fail("count", f"count must be an integer 1..1000, got {v!r:.80}")
        return v

    def _text(self, key: str, *, required: bool = False) -> str:
        v = self.table.get(key)
        if v is None and required:
            raise self.fail(None, f"missing required key {key!r}")
        if not isinstance(v, str) or not v.strip() or len(v) > 64:
            raise self.fail(key, f"{key} must be a non-empty string of at most 64 characters, got {v!r:.80}")
        return v

    def _number(self, key: str, default: float, lo: float, hi: float) -> float:
        v = self.table.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and lo <= v <= hi):
            raise self.fail(key, f"{key} must be a number in {lo:g}..{hi:g}, got {v!r:.80}")
        return float(v)

    def _bool(self, key: str, default: bool) -> bool:
        v = self.table.get(key, default)
        if not isinstance(v, bool):
            raise self.fail(key, f"{key} must be true or false, got {v!r:.80}")
        return v

    def _min_frames(self) -> int:
        v = self.table.get("min_frames", DEFAULT_MIN_FRAMES)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 10_000:
            raise self.fail("min_frames", f"min_frames must be an integer >= 1 (at most 10000), got {v!r:.80}")
        return v

    def _ports(self) -> tuple[tuple[int, ...], tuple[str, ...]]:
        """The ports a rule watches (empty: every camera), and the names of the file's cameras among them."""
        v = self.table.get("ports", [])
        if not isinstance(v, list) or not all(isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535
                                              for p in v):
            raise self.fail("ports", f"ports must be a list of port numbers 1..65535, got {v!r:.80}")
        if v and self.by_name:
            raise self.fail("ports", "this file has several masters, whose cameras may share port numbers: "
                                     "name the cameras the rule watches (cameras = [\"NAME\", ...]), not ports")
        names = self.table.get("cameras", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise self.fail("cameras", f"cameras must be a list of camera names, got {names!r:.80}")
        unknown = [n for n in names if n not in self.cameras]
        if unknown:
            raise self.fail("cameras", f"no camera named {unknown[0]!r} in this file"
                            + (f" (cameras: {', '.join(sorted(self.cameras))})" if self.cameras else ""))
        watched = set(names) | {n for n, p in self.cameras.items() if p in v}
        return tuple(sorted(set(v) | {self.cameras[n] for n in names})), tuple(sorted(watched))

    def _zone(self) -> tuple[Point, ...] | None:
        v = self.table.get("zone")
        if v is None:
            return None
        if not isinstance(v, list) or not 3 <= len(v) <= MAX_ZONE_POINTS:
            raise self.fail("zone", f"zone must be a list of 3..{MAX_ZONE_POINTS} [x, y] points, got {v!r:.80}")
        points = []
        for p in v:
            if (not isinstance(p, list) or len(p) != 2
                    or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and 0.0 <= c <= 1.0
                               for c in p)):
                raise self.fail("zone", f"zone points must be [x, y] with 0 <= x, y <= 1 (fractions of the "
                                        f"frame), got {p!r:.80}")
            points.append((float(p[0]), float(p[1])))
        if abs(polygon_area(points)) < 1e-9:
            raise self.fail("zone", "zone has zero area (its points lie on one line)")
        return tuple(points)

    def _webhook(self) -> str | None:
        v = self.table.get("webhook")
        if v is None:
            return None
        url = urllib.parse.urlsplit(v) if isinstance(v, str) else None
        if url is None or url.scheme not in ("http", "https") or not url.hostname:
            raise self.fail("webhook", f"webhook must be an http:// or https:// URL with a host, got {v!r:.120}")
        return v


# ----- the engine ------------------------------------------------------------------------------

@dataclass
class _Streak:
    """Matches of one rule on one port since its last miss (or last event)."""

    count: int = 0
    first_seq: int = 0
    last_seq: int = 0
    first_at: float = 0.0
    last_at: float = 0.0
    best: Detection | None = None
    best_task_id: str = ""
    cooling_until: float = -math.inf

    def extend(self, result: Result, best: Detection) -> None:
        seq, at = result.seq, float(result.captured_at)
        if self.count == 0:
            self.first_seq = self.last_seq = seq
            self.first_at = self.last_at = at
            self.best = None
        self.count += 1
        self.first_seq, self.last_seq = min(self.first_seq, seq), max(self.last_seq, seq)
        self.first_at, self.last_at = min(self.first_at, at), max(self.last_at, at)
        if self.best is None or best.score > self.best.score:
            self.best, self.best_task_id = best, result.task_id


class RuleEngine:
    """Turns results into events, one streak and one cooldown per (rule, port)."""

    def __init__(self, rules: Sequence[Rule], *, id_factory: Callable[[], str] | None = None,
                 max_tracked: int = MAX_TRACKED_STREAKS) -> None:
        self.rules = tuple(rules)
        self._new_id = id_factory or new_event_ids()
        self._max_tracked = max_tracked
        self._lock = threading.Lock()
        self._streaks: OrderedDict[tuple[int, int], _Streak] = OrderedDict()
        self.counters: dict[str, Counter[str]] = {r.name: Counter() for r in self.rules}

    def observe(self, result: Result, now: float,
                frame_size: tuple[int, int] | None = None) -> list[Event]:
        """Feed one stored result; return the events it fires (usually none).

        `frame_size` is the result frame's (width, height) in pixels, or None when unknown.
        """
        if result.status is not ResultStatus.OK or result.kind is not TaskKind.FRAME:
            return []
        port = result.port
        detections = result.detections
        events = []
        with self._lock:
            for index, rule in enumerate(self.rules):
                if rule.applies_to(port):
                    event = self._step(index, rule, port, result, detections, frame_size, now)
                    if event is not None:
                        events.append(event)
        return events

    def _step(self, index: int, rule: Rule, port: int, result: Result,
              detections: Iterable[Detection], frame_size: tuple[int, int] | None,
              now: float) -> Event | None:
        matched = rule.matching(detections, frame_size)
        streak = self._streak(index, port, create=bool(matched))
        if streak is None:
            return None
        if not matched:
            streak.count = 0
            return None
        self.counters[rule.name]["matches"] += 1
        streak.extend(result, max(matched, key=lambda d: d.score))
        if streak.count < rule.min_frames:
            return None
        if now < streak.cooling_until:
            self.counters[rule.name]["suppressed_cooldown"] += 1
            return None
        streak.cooling_until = now + rule.cooldown_s
        self.counters[rule.name]["events"] += 1
        event = self._event(rule, port, streak, result, now)
        streak.count = 0
        return event

    def _streak(self, index: int, port: int, *, create: bool) -> _Streak | None:
        key = (index, port)
        streak = self._streaks.get(key)
        if streak is None and create:
            streak = self._streaks[key] = _Streak()
            while len(self._streaks) > self._max_tracked:
                self._streaks.popitem(last=False)
        if streak is not None:
            self._streaks.move_to_end(key)
        return streak

    def _event(self, rule: Rule, port: int, s: _Streak, result: Result, now: float) -> Event:
        return Event(id=self._new_id(), rule=rule.name, port=port, first_seq=s.first_seq, last_seq=s.last_seq,
                     first_at=s.first_at, last_at=s.last_at, fired_at=now, frames=s.count,
                     best=s.best or Detection(rule.label, 0.0, (0, 0, 0, 0)),
                     task_id=s.best_task_id, trigger_task_id=result.task_id)

    def rule(self, name: str) -> Rule | None:
        """The rule called `name` (e.g. to find an event's webhook)."""
        return next((r for r in self.rules if r.name == name), None)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per rule: matches, events, suppressed_cooldown."""
        with self._lock:
            return {name: {k: c.get(k, 0) for k in ("matches", "events", "suppressed_cooldown")}
                    for name, c in self.counters.items()}
