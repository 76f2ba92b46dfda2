"""The master runs a camera's zones and behaviour rules on its tracked frames: events start, update and
end with a snapshot; zone counts reach get_counts, the stats and /metrics; counts survive a restart
with --state-dir and a reload that leaves their zone or line alone."""

from __future__ import annotations

import cv2
import numpy as np

from common.tasks import Detection, Outcome, TaskSpec
from master.clusterfile import parse
from master.core.journal import SqliteJournal
from master.core.service import MasterService, ServiceConfig
from master.core.store import TaskStore
from master.observe.metrics import families

NS = 1_000_000_000
JPEG = cv2.imencode(".jpg", np.full((480, 640, 3), 90, np.uint8))[1].tobytes()
CONFIG = '''[receivers.hub]
ports = "5000-5001"
[cameras.porch]
source = "synthetic"
port = 5000
[cameras.porch.zones.steps]
points = [[0.5, 0.5], [1.0, 0.5], [1.0, 1.0], [0.5, 1.0]]
[cameras.porch.lines.gate]
a = [0.25, 0.0]
b = [0.25, 1.0]
[[rule]]
name = "loiter"
label = "person"
kind = "dwell"
zone = "steps"
seconds = 2
'''


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


class Porch:
    """A master with the porch camera; `walk` sends one frame at a time, 10 a second."""

    def __init__(self, config: str = CONFIG, journal: SqliteJournal | None = None) -> None:
        self.clock = Clock()
        cfg = ServiceConfig()
        self.svc = MasterService(cfg, clock=self.clock, store=TaskStore(cfg.store, journal=journal))
        self.svc.apply_cluster(parse(config))
        self.worker = self.svc.register_worker("w")["worker_id"]
        self.seq, self.x = 0, None

    def walk(self, n: int, to: float, y: float = 0.8) -> None:
        """n frames walking from where they are to `to` (a box 60 px wide)."""
        start = to if self.x is None else self.x
        for i in range(1, n + 1):
            x = start + (to - start) * i / n
            self.x = x
            self.svc.add_tasks([(TaskSpec(port=5000, seq=self.seq, pipeline="person", received_ns=0,
                                          captured_ns=int(self.clock.t * NS)), JPEG)])
            [lease] = self.svc.request_tasks(self.worker, 1)
            box = (int(x * 640) - 30, int(y * 480) - 120, 60, 120)
            self.svc.complete(self.worker, [Outcome(lease.task.id, lease.token,
                                                    detections=(Detection("person", 0.9, box),))])
            self.seq += 1
            self.clock.t += 0.1
            self.svc.monitor_once()  # as the monitor thread does every 0.25 s

    def events(self) -> list[dict]:
        return self.svc.get_events(0, 100)["events"]


def test_a_person_lingering_in_a_zone_raises_one_dwell_event_that_ends_when_they_leave():
    porch = Porch()
    porch.walk(5, 0.2)
    porch.walk(30, 0.75)
    porch.walk(50, 0.75)  # 5 s on the steps
    porch.walk(30, 0.2)
    porch.clock.t += 2.0
    porch.svc.monitor_once()
    events = porch.events()
    assert [(e["phase"], e["kind"], e["camera"], e["place"]) for e in events] == \
        [("start", "dwell", "porch", "steps"), ("end", "dwell", "porch", "steps")]
    start, end = events
    assert start["id"] == end["id"] and start["track_id"] > 0 and end["ended_at"] > start["first_at"]
    assert start["snapshot"] and porch.svc.events.snapshot(start["id"]).startswith(b"\xff\xd8")
    assert start["clip"] == "none"  # no media directory: no clip, and the event says so
    counts = porch.svc.counts()["porch"]
    assert counts["zones"]["steps"] == {"now": {}, "peak": {"person": 1}, "entered": {"person": 1}}
    assert counts["lines"]["gate"] == {"in": {"person": 1}, "out": {"person": 1}}


def test_zone_occupancy_and_the_zones_of_a_track_are_shown_live():
    porch = Porch()
    porch.walk(10, 0.75)
    (track,) = porch.svc.tracks("porch")["tracks"]
    assert track["zones"] == ["steps"]
    samples = {(f.name, tuple(sorted(s.labels.items()))): s.value for f in families(porch.svc.stats())
               if f.name.startswith("framehive_zone") for s in f.samples}
    key = (("camera", "porch"), ("label", "person"), ("zone", "steps"))
    assert samples[("framehive_zone_objects", key)] == 1
    assert samples[("framehive_zone_entries", key)] == 1
    view = porch.svc.scene_view(5000)
    assert view["size"] == [640, 480] and view["zones"][0]["name"] == "steps"
    assert view["zones"][0]["now"] == {"person": 1}
    assert view["lines"][0]["counts"] == {"in": 0, "out": 0} and view["tracks"][0]["zones"] == ["steps"]


def test_counts_survive_a_restart_with_a_state_dir_and_a_reload_that_keeps_the_zone(tmp_path):
    journal = SqliteJournal(tmp_path / "master.sqlite3")
    first = Porch(journal=journal)
    first.walk(5, 0.2)
    first.walk(30, 0.75)
    first.svc.save_counts()
    journal.close()
    journal = SqliteJournal(tmp_path / "master.sqlite3")
    second = Porch(journal=journal)
    counts = second.svc.counts()["porch"]
    assert counts["lines"]["gate"] == {"out": {"person": 1}}
    assert counts["zones"]["steps"]["entered"] == {"person": 1} and counts["zones"]["steps"]["now"] == {}
    # a reload that moves the line starts its counts afresh and keeps the zone's
    second.svc.apply_cluster(parse(CONFIG.replace("a = [0.25, 0.0]", "a = [0.3, 0.0]")))
    counts = second.svc.counts()["porch"]
    assert counts["lines"]["gate"] == {} and counts["zones"]["steps"]["entered"] == {"person": 1}
    journal.close()


def test_a_reload_that_drops_the_rule_ends_its_lasting_event():
    porch = Porch()
    porch.walk(40, 0.75)
    assert [e["phase"] for e in porch.events()] == ["start"]
    porch.svc.apply_cluster(parse(CONFIG.split("[[rule]]")[0]))
    assert [e["phase"] for e in porch.events()] == ["start", "end"]


def test_master_status_shows_line_counts_zone_occupancy_and_behaviour_events():
    from rich.console import Console

    from master.cli.status import render
    from master.observe.dashboard import History, overview

    porch = Porch()
    porch.walk(5, 0.2)
    porch.walk(30, 0.75)
    porch.walk(25, 0.75)
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(render(overview(porch.svc, History(), now=porch.clock.t)))
    text = console.export_text()
    assert "line gate" in text and "in 0  out 1" in text
    assert "zone steps" in text and "person 1 now, peak 1" in text
    assert "dwell steps #" in text and "start" in text


def test_event_listeners_hear_every_entry_and_a_camera_can_have_detection_turned_off():
    porch = Porch()
    heard = []
    porch.svc.event_listeners.append(lambda e: heard.append((e.phase, e.kind)))
    porch.svc.event_listeners.append(lambda e: 1 / 0)  # a broken listener costs nothing
    porch.walk(5, 0.2)
    porch.walk(30, 0.75)
    porch.walk(25, 0.75)
    assert heard == [("start", "dwell")]
    assert porch.svc.set_detection("porch", False) == {"camera": "porch", "port": 5000, "detection": False}
    porch.svc.add_tasks([(TaskSpec(port=5000, seq=999, pipeline="person", received_ns=0, captured_ns=0), JPEG)])
    last = porch.svc.results(5000, 0, 1000)["results"][-1]
    assert (last.seq, last.status.value, last.skip_reason) == (999, "skipped", "disabled")
    porch.svc.set_detection("5000", True)
    assert porch.svc.detection_off == set()


def test_stats_take_sections_from_their_providers_and_one_that_fails_costs_only_its_own():
    porch = Porch()
    porch.svc.stats_providers["mqtt"] = lambda: {"connected": True}
    porch.svc.stats_providers["broken"] = lambda: 1 / 0
    stats = porch.svc.stats()
    assert stats["mqtt"] == {"connected": True} and "division by zero" in stats["broken"]["error"]
    assert "counts" in stats
