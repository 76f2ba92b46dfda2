"""The federated view: several masters' documents merged; a master that does not answer loses only
its own cameras, marked unreachable with their last numbers."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from master.federation.__main__ import masters_arg
from master.federation.view import MasterState, cameras_of, merge_counts, merge_dashboards


def doc(*cameras: tuple[str, int], workers: int = 1, pending: int = 2, t: float = 100.0) -> dict:
    return {"uptime_s": 10.0, "durable": True, "queue": {"pending": pending, "completed": 5},
            "cameras": [{"name": n, "port": p, "last_seq": 1} for n, p in cameras],
            "workers": [{"id": f"w{i}", "state": "busy"} for i in range(workers)],
            "events": {"total": 1, "recent": [{"id": f"ev-{cameras[0][0]}", "fired_at": t}]},
            "throughput": [{"t": t, "in": 10.0, "out": 9.0, "dropped": 0.0}], "jobs": [], "tiles": {"added": 1}}


def states(now: float = 1000.0) -> list[MasterState]:
    a, b, c = MasterState("a", "http://10.0.0.1:8000"), MasterState("b", "http://10.0.0.2:8000"), \
        MasterState("c", "http://10.0.0.3:8000")
    a.answered(doc(("porch", 5000)), {"porch": {"port": 5000, "lines": {}}}, now)
    b.answered(doc(("yard", 5000), ("drive", 5001), workers=2, t=101.0), {"yard": {"port": 5000}}, now)
    c.answered(doc(("shop", 5000), pending=3), {}, now)
    return [a, b, c]


def test_every_masters_cameras_workers_events_and_totals_are_merged():
    view = merge_dashboards(states(), now=1000.0)
    assert [(c["name"], c["key"], c["frame_url"]) for c in view["cameras"]] == [
        ("drive", "b/5001", "/m/b/ports/5001/latest.jpg"), ("porch", "a/5000", "/m/a/ports/5000/latest.jpg"),
        ("shop", "c/5000", "/m/c/ports/5000/latest.jpg"), ("yard", "b/5000", "/m/b/ports/5000/latest.jpg")]
    assert len(view["workers"]) == 4 and {w["master"] for w in view["workers"]} == {"a", "b", "c"}
    assert view["queue"] == {"pending": 7, "completed": 15} and view["tiles"] == {"added": 3}
    assert [e["master"] for e in view["events"]["recent"]] == ["b", "a", "c"]  # newest first
    assert view["events"]["recent"][0]["base"] == "/m/b"
    assert view["throughput"] == [{"t": 100.0, "in": 20.0, "out": 18.0, "dropped": 0.0},
                                  {"t": 101.0, "in": 10.0, "out": 9.0, "dropped": 0.0}]
    assert [m["state"] for m in view["masters"]] == ["up", "up", "up"] and view["clashes"] == []


def test_a_master_that_stops_answering_loses_only_its_own_cameras_and_says_so():
    masters = states()
    masters[1].failed("ConnectionRefusedError: [Errno 111] Connection refused", 1005.0)
    view = merge_dashboards(masters, now=1010.0)
    down = {c["name"]: c for c in view["cameras"] if c["unreachable"]}
    assert set(down) == {"yard", "drive"} and down["yard"]["data_age_s"] == 10.0
    assert {c["name"] for c in view["cameras"] if not c["unreachable"]} == {"porch", "shop"}
    assert {w["master"] for w in view["workers"]} == {"a", "c"} and view["queue"]["pending"] == 5
    b = view["masters"][1]
    assert (b["state"], b["down_for_s"], b["cameras"]) == ("down", 5.0, ["drive", "yard"])
    assert "Connection refused" in b["error"]
    assert merge_counts(masters)["yard"] == {"port": 5000, "master": "b", "stale": True}
    masters[1].answered(doc(("yard", 5000)), {}, 1020.0)  # back
    assert merge_dashboards(masters, now=1021.0)["masters"][1]["state"] == "up"


def test_a_camera_name_two_masters_claim_is_reported_and_served_by_the_first():
    masters = states()
    masters[2].answered(doc(("porch", 5002)), {}, 1000.0)
    view = merge_dashboards(masters, now=1000.0)
    assert view["clashes"] == ["camera 'porch' is on masters a and c"]
    owner, port = cameras_of(masters)["porch"]
    assert (owner.name, port) == ("a", 5000)


def test_a_master_never_seen_shows_only_its_error():
    m = MasterState("z", "http://10.9.9.9:8000")
    m.failed("TimeoutError: timed out", 5.0)
    view = merge_dashboards([m], now=6.0)
    assert view["cameras"] == [] and view["masters"][0]["state"] == "down"


@pytest.mark.parametrize(("text", "words"), [
    ("a=http://h:1,a=http://h:2", "given twice"), ("A=http://h:1", "not NAME=URL"), ("", "at least one"),
    ("a=ftp://h", "master a")])
def test_bad_masters_flags_say_what_is_wrong(text, words):
    with pytest.raises(ConfigError, match=words):
        masters_arg(text)
