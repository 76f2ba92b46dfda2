"""Rules files (line numbers in every refusal), the rule engine with an injected clock, the event log."""

import itertools
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from common.errors import ConfigError
from common.results import Result, ResultStatus
from common.tasks import Detection, TaskKind
from master.alerts.events import Event, EventLog, annotate, to_wire
from master.alerts.rules import Rule, RuleEngine, RulesError, load_rules, parse_rules, point_in_polygon

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rules.toml"
T0 = 1_700_000_000.0
SIZE = (640, 480)  # width, height


# ----- loading ---------------------------------------------------------------------------------

def test_example_file_loads():
    door, bed = load_rules(EXAMPLE)
    assert door == Rule(name="person-at-door", label="person", ports=(5000,), min_score=0.5, min_frames=3,
                        cooldown_s=10.0, webhook="http://127.0.0.1:9999/hook")
    assert bed.zone == ((0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (0.0, 1.0)) and bed.webhook is None
    assert bed.min_score == 0.6 and bed.cooldown_s == 30.0 and bed.log is True


def test_defaults():
    [r] = parse_rules('[[rule]]\nname = "a"\nlabel = "person"\n')
    assert (r.ports, r.min_score, r.zone, r.min_frames, r.cooldown_s, r.log, r.webhook) == \
        ((), 0.5, None, 1, 10.0, True, None)


GOOD = '[[rule]]\nname = "ok"\nlabel = "person"\n\n'  # lines 1-4

BAD = [
    # (text, line, words in the reason)
    (GOOD + '[[rule]]\nname = "door"\nlabel = "person"\nmin_frames = 0\n', 8,
     "rule 'door': min_frames must be an integer >= 1 (at most 10000), got 0"),
    (GOOD + '[[rule]]\nname = "door"\nlabel = "person"\ncolour = "red"\n', 8, "rule 'door': unknown key 'colour'"),
    (GOOD + '[[rule]]\nname = "door"\nlabel = 3\n', 7, "label must be a non-empty string"),
    (GOOD + '[[rule]]\nname = "door"\nlabel = "p"\nports = [5000, "x"]\n', 8, "ports must be a list"),
    (GOOD + '[[rule]]\nname = "door"\nlabel = "p"\nports = 5000\n', 8, "ports must be a list"),
    (GOOD + '[[rule]]\nname = "door"\nlabel = "p"\nmin_score = "high"\n', 8, "min_score must be a number in 0..1"),
    (GOOD + '[[rule]]\nname = "door"\nlabel = "p"\nmin_score = 1.5\n', 8, "min_score must be a number in 0..1"),
    (GOOD + '[[rule]]\nname = "door"\nlabel = "p"\ncooldown_s = -1\n', 8, "cooldown_s must be a number"),
    (GOOD + '[[rule]]\nname = "door"\nlabel = "p"\nlog = "yes"\n', 8, "log must be true or false"),
    (GOOD + '[[rule]]\nname = "door"\nlabel = "p"\nmin_frames = 2.5\n', 8, "min_frames must be an integer"),
    (GOOD + '[[rule]]\nname = "door"\nlabel = "p"\nzone = [[0, 0], [1, 1]]\n', 8, "zone must be a list of 3"),
    (GOOD + '[[rule]]\nname = "door"\nlabel = "p"\n\nzone = [\n  [0, 0],\n  [1.5, 0],\n  [0, 1],\n]\n', 9,
     "zone points must be [x, y] with 0 <= x, y <= 1"),
    (GOOD + '[[rule]]\nname = "door"\nlabel = "p"\nzone = [[0, 0], [0.5, 0.5], [1, 1]]\n', 8, "zero area"),
    (GOOD + '[[rule]]\nname = "door"\nlabel = "p"\nwebhook = "ftp://host/x"\n', 8, "http:// or https://"),
    (GOOD + '[[rule]]\nname = "door"\nlabel = "p"\nwebhook = "http:///nohost"\n', 8, "http:// or https://"),
    (GOOD + '[[rule]]\nname = "ok"\nlabel = "face"\n', 6, "duplicate rule name 'ok' (first defined at line 1)"),
    (GOOD + '[[rule]]\nlabel = "face"\n', 5, "rule #2: missing required key 'name'"),
    (GOOD + '[[rule]]\nname = ""\nlabel = "face"\n', 6, "rule #2: name must be a non-empty string"),
    ('# nothing here\n', 0, "no rules"),
    ('title = "x"\n' + GOOD, 1, "unknown top-level key 'title'"),
    ('[rule]\nname = "a"\nlabel = "b"\n', 1, "no rules"),
    ('# inline form\nrule = [{name = "a", label = "b", min_frames = 0}]\n', 2, "rule 'a': min_frames"),
]


@pytest.mark.parametrize(("text", "line", "reason"), BAD)
def test_bad_rules_name_line_and_reason(text, line, reason):
    with pytest.raises(RulesError) as info:
        parse_rules(text, "rules.toml")
    err = info.value
    assert isinstance(err, ConfigError)
    assert err.line == line, str(err)
    assert reason in err.reason
    assert str(err).startswith(f"rules.toml:{line}: " if line else "rules.toml: ")


def test_message_format_matches_the_spec(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(GOOD + '[[rule]]\nname = "person-at-door"\nlabel = "person"\n\n\n\n\n\n\nmin_frames = 0\n')
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert str(info.value) == (f"{path}:14: rule 'person-at-door': min_frames must be an integer >= 1 "
                               "(at most 10000), got 0")


def test_toml_syntax_error_carries_tomllibs_line():
    with pytest.raises(RulesError) as info:
        parse_rules(GOOD + '[[rule]]\nname = "x"\nlabel = person\n', "rules.toml")
    assert info.value.line == 7
    assert "invalid TOML" in str(info.value) and str(info.value).startswith("rules.toml:7: ")


def test_unreadable_file(tmp_path):
    with pytest.raises(RulesError, match="cannot read rules file"):
        load_rules(tmp_path / "missing.toml")


# ----- matching --------------------------------------------------------------------------------

def det(label="person", score=0.9, box=(100, 100, 50, 100)):
    return Detection(label, score, tuple(box))


def result(seq, *dets, port=5000, status="ok", kind="frame", task=None):
    at = T0 + seq / 10
    return Result(cursor=seq, task_id=task or f"t-{port}-{seq}", port=port, seq=seq, kind=TaskKind(kind),
                  pipeline="person", status=ResultStatus(status), error="", worker="w", attempts=1,
                  detections=tuple(dets), timings_ms={}, captured_at=at, received_at=at, queued_at=at,
                  completed_at=at + 0.05, latency_ms=50.0, stages_ms={})


def engine(*rules):
    counter = itertools.count(1)
    return RuleEngine(rules, id_factory=lambda: f"ev{next(counter)}")


def test_point_in_polygon():
    square = ((0.2, 0.2), (0.8, 0.2), (0.8, 0.8), (0.2, 0.8))
    assert point_in_polygon((0.5, 0.5), square)
    assert not point_in_polygon((0.1, 0.5), square) and not point_in_polygon((0.5, 0.9), square)
    concave = ((0, 0), (1, 0), (1, 1), (0.5, 0.3), (0, 1))
    assert point_in_polygon((0.5, 0.1), concave) and not point_in_polygon((0.5, 0.6), concave)


def test_label_and_min_score():
    r = Rule(name="r", label="person", min_score=0.6)
    assert r.matches(det(score=0.6), None) and r.matches(det(score=0.95), None)
    assert not r.matches(det(score=0.59), None)
    assert not r.matches(det(label="face"), None)


def test_zone_uses_the_feet_point_and_the_frame_size():
    # lower-left quarter of the frame
    r = Rule(name="r", label="person", zone=((0, 0.5), (0.5, 0.5), (0.5, 1), (0, 1)))
    feet_inside = det(box=(100, 100, 50, 200))  # centre (125, 200) is in the upper half; feet (125, 300) lower
    assert r.matches(feet_inside, SIZE)
    assert not r.matches(det(box=(100, 10, 50, 100)), SIZE)  # feet at y=110 of 480: upper half
    assert not r.matches(det(box=(400, 300, 50, 100)), SIZE)  # feet at x=425 of 640: right half
    assert not r.matches(feet_inside, None)  # no frame size: a zone cannot be checked
    assert not r.matches(feet_inside, (640, 960))  # same pixels in a taller frame: feet at y=0.31
    assert r.matching([feet_inside, det(label="face")], SIZE) == [feet_inside]


def test_min_frames_streak_fires_once_then_resets():
    e = engine(Rule(name="door", label="person", min_frames=3, cooldown_s=0))
    assert e.observe(result(1, det()), T0) == []
    assert e.observe(result(2, det(score=0.95, box=(1, 2, 3, 4))), T0 + 0.1) == []
    [ev] = e.observe(result(3, det()), T0 + 0.2)
    assert (ev.id, ev.rule, ev.port, ev.first_seq, ev.last_seq, ev.frames) == ("ev1", "door", 5000, 1, 3, 3)
    assert ev.first_at == pytest.approx(T0 + 0.1) and ev.last_at == pytest.approx(T0 + 0.3)
    assert ev.fired_at == T0 + 0.2
    assert ev.best == Detection("person", 0.95, (1, 2, 3, 4)) and ev.task_id == "t-5000-2"
    assert ev.trigger_task_id == "t-5000-3" and ev.snapshot is None
    # the streak starts again after an event
    assert e.observe(result(4, det()), T0 + 0.3) == []
    assert e.observe(result(5, det()), T0 + 0.4) == []
    assert [x.first_seq for x in e.observe(result(6, det()), T0 + 0.5)] == [4]


def test_a_miss_resets_the_streak():
    e = engine(Rule(name="door", label="person", min_frames=2))
    assert e.observe(result(1, det()), T0) == []
    assert e.observe(result(2, det(label="car")), T0) == []  # a result without a match
    assert e.observe(result(3, det()), T0) == []
    assert e.observe(result(4), T0) == []  # no detections at all
    assert e.observe(result(5, det()), T0) == []
    assert len(e.observe(result(6, det()), T0)) == 1


def test_non_ok_and_tile_results_neither_count_nor_reset():
    e = engine(Rule(name="door", label="person", min_frames=3))
    e.observe(result(1, det()), T0)
    assert e.observe(result(2, status="error"), T0) == []
    assert e.observe(result(3, status="failed"), T0) == []
    assert e.observe(result(4, det(), kind="tile"), T0) == []
    e.observe(result(5, det()), T0)
    [ev] = e.observe(result(6, det()), T0)
    assert (ev.first_seq, ev.last_seq, ev.frames) == (1, 6, 3)


def test_out_of_order_arrival_counts_and_orders_the_span():
    e = engine(Rule(name="door", label="person", min_frames=3))
    e.observe(result(11, det()), T0)
    e.observe(result(10, det()), T0)  # an earlier frame finished later by another worker
    [ev] = e.observe(result(12, det()), T0)
    assert (ev.first_seq, ev.last_seq) == (10, 12)
    assert ev.first_at == pytest.approx(T0 + 1.0) and ev.last_at == pytest.approx(T0 + 1.2)


def test_cooldown_is_per_port_and_uses_now():
    e = engine(Rule(name="any", label="person", cooldown_s=10))
    assert len(e.observe(result(1, det()), T0)) == 1
    assert e.observe(result(2, det()), T0 + 5) == []  # cooling down on 5000
    assert len(e.observe(result(1, det(), port=5001), T0 + 5)) == 1  # another port is independent
    assert e.observe(result(3, det()), T0 + 9.99) == []
    [ev] = e.observe(result(4, det()), T0 + 10)
    assert (ev.first_seq, ev.frames) == (2, 3)  # the streak kept counting while cooling down
    assert e.stats() == {"any": {"matches": 5, "events": 3, "suppressed_cooldown": 2}}


def test_continuous_presence_fires_once_per_cooldown():
    e = engine(Rule(name="door", label="person", min_frames=3, cooldown_s=10))
    fired = [t for t in range(100) for _ in e.observe(result(t, det()), T0 + t * 0.5)]
    assert fired == [2, 22, 42, 62, 82]


def test_ports_filter_and_several_rules():
    door = Rule(name="door", label="person", ports=(5000,))
    faces = Rule(name="faces", label="face", min_score=0.8)
    e = engine(door, faces)
    assert e.observe(result(1, det(), port=5001), T0) == []
    events = e.observe(result(1, det(), det(label="face", score=0.85), port=5000), T0)
    assert [ev.rule for ev in events] == ["door", "faces"]
    assert [ev.rule for ev in e.observe(result(2, det(label="face", score=0.9), port=5002), T0)] == ["faces"]
    assert e.rule("faces") is faces and e.rule("nope") is None


def test_zone_rule_in_the_engine():
    e = engine(Rule(name="bed", label="person", zone=((0, 0.5), (0.5, 0.5), (0.5, 1), (0, 1)), min_frames=2))
    inside, outside = det(box=(100, 100, 50, 200)), det(box=(400, 300, 50, 100))
    assert e.observe(result(1, inside), T0, SIZE) == []
    assert e.observe(result(2, outside), T0, SIZE) == []  # outside the zone: a miss
    assert e.observe(result(3, inside), T0, SIZE) == []
    assert e.observe(result(4, inside), T0, None) == []  # frame size unknown: a miss
    assert e.observe(result(5, inside), T0, SIZE) == []
    [ev] = e.observe(result(6, inside, outside), T0, SIZE)
    assert ev.best.box == (100, 100, 50, 200)


def test_the_best_detection_is_the_highest_score_of_the_streak():
    e = engine(Rule(name="door", label="person", min_frames=3))
    e.observe(result(1, det(score=0.7), det(score=0.8, box=(9, 9, 9, 9))), T0)
    e.observe(result(2, det(score=0.99, box=(5, 5, 5, 5)), det(score=0.6)), T0)
    [ev] = e.observe(result(3, det(score=0.75)), T0)
    assert ev.best.score == 0.99 and ev.best.box == (5, 5, 5, 5) and ev.task_id == "t-5000-2"


def test_tracked_streaks_are_bounded():
    e = RuleEngine([Rule(name="r", label="person", min_frames=2)], max_tracked=2)
    for port in (1, 2, 3):  # port 1's streak is forgotten when port 3 arrives
        e.observe(result(1, det(), port=port), T0)
    assert e.observe(result(2, det(), port=1), T0) == []
    assert len(e.observe(result(2, det(), port=3), T0)) == 1


def test_engine_is_thread_safe():
    e = engine(Rule(name="r", label="person", min_frames=1, cooldown_s=0))
    events = []

    def feed(port):
        for seq in range(200):
            events.extend(e.observe(result(seq, det(), port=port), T0))

    threads = [threading.Thread(target=feed, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(events) == 800 and len({ev.id for ev in events}) == 800


# ----- events ----------------------------------------------------------------------------------

def event(i, snapshot=None, port=5000):
    return Event(id=f"ev{i}", rule="door", port=port, first_seq=i, last_seq=i + 2, first_at=T0 + i,
                 last_at=T0 + i + 0.2, fired_at=T0 + i + 0.3, frames=3,
                 best=Detection("person", 0.91234, (1, 2, 3, 4)), task_id=f"t{i}", trigger_task_id=f"t{i + 2}",
                 snapshot=snapshot)


def test_to_wire_is_xmlrpc_safe():
    ev = Event(id="e", rule="r", port=5000, first_seq=2**32 + 5, last_seq=2**31 + 1, first_at=T0, last_at=T0,
               fired_at=T0, frames=2**40, best=Detection("person", 0.5, (2**33, 0, 1, 1)), task_id="t")
    w = to_wire(ev)
    assert w == {"id": "e", "rule": "r", "port": 5000, "first_seq": 5, "last_seq": 1, "first_at": T0,
                 "last_at": T0, "fired_at": T0, "frames": 2**31 - 1,
                 "detection": {"label": "person", "score": 0.5, "box": [2**31 - 1, 0, 1, 1]},
                 "task_id": "t", "trigger_task_id": "", "snapshot": False, "kind": "detect", "camera": "",
                 "phase": "start", "track_id": 0, "place": "", "direction": "", "ended_at": 0.0, "clip": ""}
    assert to_wire(event(1, b"jpeg"))["snapshot"] is True
    assert to_wire(event(1))["detection"]["score"] == 0.9123


def test_event_log_cursor_and_page():
    log = EventLog(size=5)
    for i in range(3):
        assert log.add(event(i)) == i + 1
    page = log.since(0, 2)
    assert [e["id"] for e in page["events"]] == ["ev0", "ev1"] and page["next"] == 2 and page["missed"] == 0
    assert [e["cursor"] for e in page["events"]] == [1, 2]
    page = log.since(2, 100)
    assert [e["id"] for e in page["events"]] == ["ev2"] and page["next"] == 3
    assert log.since(3, 100) == {"events": [], "next": 3, "missed": 0}
    assert [e["id"] for e in log.since(99, 1)["events"]] == ["ev0"]  # a cursor from the future


def test_event_log_ring_counts_missed():
    log = EventLog(size=3)
    for i in range(7):
        log.add(event(i))
    assert len(log) == 3
    page = log.since(0, 100)
    assert [e["id"] for e in page["events"]] == ["ev4", "ev5", "ev6"] and page["missed"] == 4 and page["next"] == 7
    assert log.since(5, 100)["missed"] == 0


def test_event_log_keeps_snapshots_for_the_newest_only():
    log = EventLog(size=10, snapshots=2)
    for i in range(4):
        log.add(event(i, snapshot=f"jpeg{i}".encode()))
    log.add(event(4))  # no snapshot
    assert [log.snapshot(f"ev{i}") for i in range(5)] == [None, None, b"jpeg2", b"jpeg3", None]
    assert [e["snapshot"] for e in log.since(0, 10)["events"]] == [False, False, True, True, False]
    assert "snapshot_jpeg_base64" not in log.since(0, 10)["events"][2]
    assert log.snapshot("nope") is None


def test_event_log_snapshot_byte_budget_and_ring_eviction():
    log = EventLog(size=2, snapshots=10, snapshot_budget_bytes=10)
    log.add(event(0, snapshot=b"x" * 6))
    log.add(event(1, snapshot=b"y" * 6))  # over budget together: the older one goes
    assert log.snapshot("ev0") is None and log.snapshot("ev1") == b"y" * 6
    log.add(event(2, snapshot=b"z" * 11))  # larger than the whole budget: not kept
    log.add(event(3))  # ev1 leaves the ring, and its snapshot with it
    assert log.snapshot("ev1") is None and log.snapshot("ev2") is None


# ----- annotate --------------------------------------------------------------------------------

def test_annotate_draws_and_keeps_the_size():
    image = np.full((240, 320, 3), 128, np.uint8)
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    dets = [det(box=(20, 30, 60, 120)), det(label="face", score=0.7, box=(200, 40, 40, 40))]
    out = annotate(jpeg, dets, highlight=dets[0])
    decoded = cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == image.shape
    # the highlighted box is drawn in red on the grey frame; the other one in green
    b, g, r = decoded[90, 20].astype(int)
    assert r > 200 and g < 80 and b < 80
    b, g, r = decoded[60, 200].astype(int)
    assert g > 120 and r < 80 and b < 80
    assert annotate(jpeg, [Detection("person", 0.5, (0, 0, 10, 10))]) is not None


def test_annotate_refuses_garbage():
    assert annotate(b"not a jpeg", [det()]) is None
    assert annotate(b"", [det()]) is None
