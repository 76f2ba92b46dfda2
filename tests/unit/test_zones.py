"""Zones and behaviours of tracked objects: inertia, gone tracks, occupancy, and the events of
enter, exit, dwell, occupancy and cross rules with their start, update and end."""

from __future__ import annotations

import itertools

import pytest

from master.alerts.behaviours import Scene
from master.alerts.rules import Places, Rule, RulesError, parse_rules
from master.tracking import TrackedDetection, TrackedFrame
from master.tracking.lines import Line
from master.tracking.zones import Zone, ZoneTracker

PORCH = Zone("porch", ((0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.5, 1.0)))  # the lower right quarter
DOOR = Line("door", (0.25, 0.0), (0.25, 1.0), ("out", "in"))  # drawn downwards: the walker's right is the screen's left
SIZE = (1000, 1000)


def walk(zt: ZoneTracker, track: int, xs: list[float], y: float = 0.8, t0: float = 0.0) -> list[str]:
    return [f"{c.kind}@{c.at:g}" for i, x in enumerate(xs) for c in zt.observe([(track, "person", (x, y))], t0 + i)]


def test_a_track_enters_after_inertia_frames_at_the_time_it_stepped_in_and_leaves_once():
    zt = ZoneTracker([PORCH])
    assert walk(zt, 1, [0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.4, 0.3, 0.2]) == ["enter@2", "exit@6"]
    assert zt.occupancy() == {"porch": {}} and zt.peak() == {"porch": {"person": 1}}


def test_a_box_flickering_across_the_edge_does_not_enter_or_leave_twice():
    zt = ZoneTracker([PORCH])
    xs = [0.4, 0.55, 0.45, 0.55, 0.56, 0.57, 0.45, 0.56, 0.44, 0.56, 0.58, 0.6]
    assert walk(zt, 1, xs) == ["enter@3"]
    assert zt.inside("porch") == {1: ("person", 3.0)}


def test_a_missed_frame_is_not_outside_but_a_track_gone_for_long_leaves_at_its_last_sight():
    zt = ZoneTracker([PORCH], gone_s=2.0)
    walk(zt, 1, [0.6, 0.6, 0.6])
    assert zt.observe([], 3.5) == []  # unseen 1.5 s: still there (hidden, or the detector missed it)
    assert zt.zones_of(1) == ["porch"]
    (gone,) = zt.observe([], 4.5)
    assert (gone.kind, gone.at, gone.since, gone.gone) == ("exit", 2.0, 0.0, True)
    assert zt.occupancy() == {"porch": {}}


def test_labels_a_zone_does_not_watch_are_ignored():
    zt = ZoneTracker([Zone("drive", PORCH.points, labels=("car",), inertia=1)])
    assert zt.observe([(1, "person", (0.8, 0.8))], 0) == []
    assert [c.kind for c in zt.observe([(2, "car", (0.8, 0.8))], 1)] == ["enter"]


@pytest.mark.parametrize("points", [((0, 0), (1, 1), (0.5, 0.5)), ((0, 0), (1, 0))])
def test_a_zone_needs_an_area(points):
    with pytest.raises(ValueError):
        Zone("flat", points)


def test_occupancy_and_peak_count_several_tracks():
    zt = ZoneTracker([Zone("porch", PORCH.points, inertia=1)])
    zt.observe([(1, "person", (0.8, 0.8)), (2, "person", (0.7, 0.7)), (3, "dog", (0.9, 0.9))], 0)
    assert zt.occupancy() == {"porch": {"person": 2, "dog": 1}}
    zt.observe([(1, "person", (0.1, 0.1)), (2, "person", (0.7, 0.7)), (3, "dog", (0.9, 0.9))], 1)
    assert zt.occupancy() == {"porch": {"person": 1, "dog": 1}} and zt.peak()["porch"]["person"] == 2


# ----- rules and events -------------------------------------------------------------------------

def rule(kind: str, **kw) -> Rule:
    defaults = {"name": kind, "label": "person", "kind": kind, "ports": (5000,), "cooldown_s": 0.0, "min_score": 0.5}
    return Rule(**{**defaults, **kw})


class Cam:
    """Feeds a Scene frames of people at foot points, 10 frames a second."""

    def __init__(self, *rules: Rule, lines=(DOOR,), zones=(PORCH,)) -> None:
        ids = itertools.count(1)
        self.scene = Scene(5000, "front", lines, zones, rules, lambda: f"ev-{next(ids)}")
        self.seq, self.actions = 0, []

    def frame(self, *people: tuple[int, float, float], score: float = 0.9, height: int = 200) -> list:
        dets = tuple(TrackedDetection("person", score, (int(x * 1000) - 25, int(y * 1000) - height, 50, height), tid,
                                      True) for tid, x, y in people)
        step = self.scene.observe(TrackedFrame("5000", self.seq, self.seq / 10, dets), SIZE, now=self.seq / 10)
        self.seq += 1
        self.actions += step.actions
        return [(a.phase, a.event.kind, a.event.track_id) for a in step.actions]

    def stay(self, n: int, *people, **kw) -> None:
        for _ in range(n):
            self.frame(*people, **kw)

    def log(self) -> list[tuple[str, str, int]]:
        return [(a.phase, a.event.kind, a.event.track_id) for a in self.actions]


def test_enter_starts_when_the_track_enters_and_ends_when_it_leaves():
    cam = Cam(rule("enter", place="porch"))
    cam.stay(3, (7, 0.3, 0.8))
    cam.stay(10, (7, 0.7, 0.8))
    cam.stay(5, (7, 0.3, 0.8))
    assert cam.log() == [("start", "enter", 7), ("end", "enter", 7)]
    start, end = cam.actions
    assert start.event.first_at == pytest.approx(0.3) and end.event.ended_at == pytest.approx(1.3)
    assert start.event.camera == "front" and start.event.place == "porch" and start.highlight is not None
    assert end.event.id == start.event.id


def test_dwell_fires_once_per_stay_after_its_seconds_and_ends_when_the_track_leaves():
    cam = Cam(rule("dwell", place="porch", seconds=2.0))
    cam.stay(15, (7, 0.7, 0.8))  # 1.5 s in the zone
    assert cam.log() == []
    cam.stay(60, (7, 0.7, 0.8))  # 6 s more: one event, however long the stay
    assert cam.log() == [("start", "dwell", 7)]
    cam.stay(5, (7, 0.2, 0.8))
    assert cam.log() == [("start", "dwell", 7), ("end", "dwell", 7)]
    cam.stay(30, (7, 0.7, 0.8))  # a new stay: a new event
    assert cam.log()[-1] == ("start", "dwell", 7)


def test_a_dwelling_track_that_vanishes_ends_its_event_by_the_gone_rule_and_by_tick():
    cam = Cam(rule("dwell", place="porch", seconds=1.0))
    cam.stay(20, (7, 0.7, 0.8))
    assert cam.log() == [("start", "dwell", 7)]
    assert cam.scene.tick(now=cam.seq / 10 + 0.5).actions == []  # not quiet long enough
    ended = cam.scene.tick(now=cam.seq / 10 + 3.0).actions
    assert [(a.phase, a.event.track_id) for a in ended] == [("end", 7)]


def test_exit_and_cross_are_moments_with_a_direction():
    cam = Cam(rule("exit", place="porch"), rule("cross", place="door", direction="out"))
    cam.stay(5, (1, 0.7, 0.8))
    cam.stay(5, (1, 0.4, 0.8))
    cam.stay(5, (1, 0.1, 0.8))  # crosses the door to the screen's left: "out"
    assert cam.log() == [("start", "exit", 1), ("end", "exit", 1), ("start", "cross", 1), ("end", "cross", 1)]
    assert cam.actions[2].event.direction == "out"
    cam.stay(5, (1, 0.4, 0.8))  # back "in": not this rule's direction
    assert len(cam.log()) == 4
    assert cam.scene.counts()["lines"] == {"door": {"in": {"person": 1}, "out": {"person": 1}}}


def test_occupancy_starts_at_count_and_ends_below_it():
    cam = Cam(rule("occupancy", place="porch", count=2))
    cam.stay(5, (1, 0.7, 0.8))
    cam.stay(5, (1, 0.7, 0.8), (2, 0.8, 0.9))
    assert cam.log() == [("start", "occupancy", 0)]
    assert cam.actions[0].event.frames == 2
    cam.stay(5, (1, 0.7, 0.8), (2, 0.2, 0.9))
    assert cam.log() == [("start", "occupancy", 0), ("end", "occupancy", 0)]
    counts = cam.scene.counts()["zones"]["porch"]
    assert counts == {"now": {"person": 1}, "peak": {"person": 2}, "entered": {"person": 2}}


def test_filters_and_cooldown():
    small = Cam(rule("enter", place="porch", min_height=0.3))  # boxes are 0.2 of the frame high
    small.stay(10, (1, 0.7, 0.8))
    assert small.log() == []
    unsure = Cam(rule("enter", place="porch", min_score=0.8))
    unsure.stay(10, (1, 0.7, 0.8), score=0.6)
    assert unsure.log() == []
    cooling = Cam(rule("enter", place="porch", cooldown_s=60.0))
    cooling.stay(5, (1, 0.7, 0.8), (2, 0.2, 0.8))
    cooling.stay(5, (1, 0.7, 0.8), (2, 0.8, 0.8))  # the second enters within the cooldown
    assert cooling.log() == [("start", "enter", 1)]
    assert cooling.scene.rule_counts["enter"]["suppressed_cooldown"] == 1


def test_a_lasting_event_updates_when_its_object_comes_closer_at_most_every_two_seconds():
    cam = Cam(rule("dwell", place="porch", seconds=0.5))
    cam.stay(10, (1, 0.7, 0.8), height=100)
    for h in range(100, 400, 10):  # walks towards the camera for 3 s
        cam.frame((1, 0.7, 0.8), height=h)
    phases = [a.phase for a in cam.actions]
    assert phases[0] == "start" and 1 <= phases.count("update") <= 2
    updates = [a for a in cam.actions if a.phase == "update"]
    assert updates[-1].event.best.box[3] > cam.actions[0].event.best.box[3] * 1.25
    assert all(a.highlight is not None for a in updates)


def test_counts_per_hour_and_restore_only_for_unchanged_lines():
    cam = Cam()
    cam.stay(5, (1, 0.1, 0.8))
    cam.stay(5, (1, 0.4, 0.8))
    saved = cam.scene.save()
    assert cam.scene.counts()["hourly"] == [{"hour": "1970-01-01T00:00:00Z", "line": "door", "direction": "in",
                                             "label": "person", "count": 1}]
    same = Scene(5000, "front", [DOOR], [PORCH], [], str)
    same.restore(saved)
    assert same.counts()["lines"] == {"door": {"in": {"person": 1}}}
    moved = Scene(5000, "front", [Line("door", (0.3, 0.0), (0.3, 1.0), ("out", "in"))], [PORCH], [], str)
    moved.restore(saved)
    assert moved.counts()["lines"] == {"door": {}}
    with pytest.raises(ValueError, match="front"):
        same.restore({"totals": [["door", "x"]], "lines": [{"name": "door"}]})


# ----- parsing behaviour rules ------------------------------------------------------------------

CAMS = {"front": 5000, "back": 5001}
PLACES = {"front": Places(frozenset({"porch"}), {"door": ("in", "out")}), "back": Places()}


def parse(body: str):
    return parse_rules(body, "f.toml", cameras=CAMS, places=PLACES)


def test_behaviour_rules_parse_and_watch_the_cameras_that_have_their_place():
    (r,) = parse('[[rule]]\nname = "loiter"\nlabel = "person"\nkind = "dwell"\nzone = "porch"\nseconds = 30\n')
    assert (r.kind, r.place, r.seconds, r.ports, r.cooldown_s) == ("dwell", "porch", 30.0, (5000,), 0.0)
    (c,) = parse('[[rule]]\nname = "in"\nlabel = "*"\nkind = "cross"\nline = "door"\ndirection = "in"\n')
    assert (c.place, c.direction, c.wants("car")) == ("door", "in", True)


@pytest.mark.parametrize(("body", "line", "words"), [
    ('kind = "dwell"\nzone = "porch"\n', 1, "needs seconds"),
    ('kind = "enter"\nzone = "garden"\n', 5, "no camera has a zone named 'garden'"),
    ('kind = "enter"\nzone = "porch"\ncameras = ["back"]\n', 5, "camera 'back' has no zone named 'porch'"),
    ('kind = "cross"\nline = "door"\ndirection = "sideways"\n', 6, "has directions in, out"),
    ('kind = "cross"\nline = "door"\nseconds = 3\n', 6, "'seconds' does not apply"),
    ('kind = "enter"\nzone = "porch"\nmin_frames = 3\n', 6, "min_frames is for kind"),
    ('kind = "wander"\n', 4, "kind must be one of"),
    ('kind = "occupancy"\nzone = "porch"\ncount = 0\n', 6, "count must be"),
])
def test_bad_behaviour_rules_name_their_line(body, line, words):
    with pytest.raises(RulesError) as e:
        parse('[[rule]]\nname = "r"\nlabel = "person"\n' + body)
    assert e.value.line == line and words in str(e.value), str(e.value)


def test_behaviour_rules_need_the_cluster_file():
    with pytest.raises(RulesError, match="cluster config file"):
        parse_rules('[[rule]]\nname = "r"\nlabel = "person"\nkind = "enter"\nzone = "porch"\n', "rules.toml")
