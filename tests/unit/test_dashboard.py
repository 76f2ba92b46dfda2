"""The dashboard's pure parts: camera cards from results, throughput history, which files are served."""

from __future__ import annotations

from common.results import Result, ResultStatus
from common.tasks import Detection, TaskKind
from master.observe.dashboard import History, camera, rates_between, static_file, totals


def result(seq: int, at: float, *, status: str = "ok", latency: float = 50.0, dets=(), stages=None) -> Result:
    return Result(cursor=seq + 1, task_id=f"t-{seq}", port=5000, seq=seq, kind=TaskKind.FRAME, pipeline="person",
                  status=ResultStatus(status), error="", worker="w", attempts=1,
                  detections=tuple(Detection(lbl, s, (0, 0, 1, 1)) for lbl, s in dets), timings_ms={},
                  captured_at=at - latency / 1000, received_at=at, queued_at=at, completed_at=at, latency_ms=latency,
                  stages_ms=stages or {})


def test_camera_card_shows_the_masters_fps_and_takes_the_median_latency():
    now = 1000.0
    recent = [result(i, now - 20 + i, latency=10.0 * i) for i in range(10)]
    recent += [result(10 + i, now - 4 + i, latency=100.0, dets=[("person", 0.91)]) for i in range(5)]
    card = camera("5000", {"added": 20, "completed": 15, "dropped_overflow": 2, "dropped_stale": 1, "pending": 3,
                           "fps": 24.5}, recent, now)
    assert card["port"] == 5000 and card["fps"] == 24.5  # counted by the master, not from the recent results
    assert card["latency_ms"] == 95.0  # median of the newest ten: 50, 60, 70, 80, 90 and five at 100
    assert card["dropped"] == 3 and card["pending"] == 3 and card["last_seq"] == 14
    assert card["detections"][0] == {"label": "person", "score": 0.91, "seq": 14}
    assert card["has_frame"] and card["last_age_s"] == 0.0


def test_camera_card_without_ok_results_has_no_frame_and_no_latency():
    card = camera("5001", {"added": 2}, [result(0, 10.0, status="failed")], 11.0)
    assert not card["has_frame"] and card["latency_ms"] is None and card["detections"] == []
    empty = camera("5002", {}, [], 11.0)
    assert empty["last_seq"] is None and empty["fps"] == 0.0


def test_history_keeps_one_sample_a_second_over_its_span_and_gives_rates():
    h = History(span_s=10.0, every_s=1.0)
    for t in range(0, 30):
        h.observe(100.0 + t * 0.5, {"out": float(t * 5)})  # 10 frames per second, sampled twice a second
    rates = h.rates()
    assert all(abs(r["out"] - 10.0) < 1e-9 for r in rates)
    assert all(b["t"] - a["t"] >= 1.0 for a, b in zip(rates, rates[1:]))
    assert rates[-1]["t"] - rates[0]["t"] <= 10.0


def test_a_counter_that_goes_back_is_a_restart_not_a_negative_rate():
    assert rates_between((0.0, {"out": 50.0}), (2.0, {"out": 4.0}))["out"] == 0.0
    assert rates_between((0.0, {"out": 0.0}), (0.0, {"out": 4.0}))["out"] == 0.0


def test_totals_sum_camera_ports_and_master_drops_but_not_file_job_tiles():
    stats = {"ports": {"1": {"added": 5, "completed": 4, "dropped_stale": 1},
                       "2": {"added": 3, "completed": 3, "dropped_overflow": 2},
                       "0": {"added": 900, "completed": 900}}}  # port 0: file-job tiles
    assert totals(stats) == {"in": 8.0, "out": 7.0, "dropped": 3.0}


def test_only_the_dashboard_files_are_served():
    ctype, body = static_file("index.html")
    assert ctype.startswith("text/html") and b"/dashboard/app.js" in body
    assert static_file("app.js")[0].startswith("text/javascript")
    for name in ("__init__.py", "../service.py", "missing.css"):
        assert static_file(name) is None


def test_a_camera_card_says_where_recent_frames_spent_their_time():
    from master.observe.dashboard import camera

    recent = [result(i, 100.0, stages={"queue": 10.0 + i, "work": 30.0, "dispatch": 2.0, "end_to_end": 60.0})
              for i in range(5)]
    card = camera("5000", {}, recent, 100.0)
    assert card["stages_ms"] == [{"stage": "queue", "ms": 12.0}, {"stage": "work", "ms": 30.0},
                                 {"stage": "dispatch", "ms": 2.0}]
    assert camera("5000", {}, [], 100.0)["stages_ms"] == []


def test_xmlrpc_safe_turns_what_xmlrpc_cannot_carry_into_what_it_can():
    from master.api.rpc import xmlrpc_safe

    assert xmlrpc_safe({"a": [2**31, -(2**31) - 1, 2**31 - 1, True, None, 1.5], 3: "x"}) == {
        "a": [float(2**31), float(-(2**31) - 1), 2**31 - 1, True, "", 1.5], "3": "x"}


def entry(event_id: str, phase: str, kind: str = "dwell", **kw) -> dict:
    return {"id": event_id, "phase": phase, "kind": kind, "rule": "r", "clip": "none", **kw}


def test_the_entries_of_an_event_make_one_row_with_its_latest_phase_newest_event_first():
    from master.observe.dashboard import event_rows

    log = [entry("a", "start"), entry("b", "start", "detect"), entry("a", "update"), entry("c", "start", "cross"),
           entry("c", "end", "cross"), entry("d", "start"), entry("a", "end", ended_at=5.0)]
    rows = event_rows(log)
    assert [(r["id"], r["phase"], r["state"], r["entries"]) for r in rows] == [
        ("d", "start", "ongoing", 1), ("c", "end", "moment", 2), ("b", "start", "moment", 1),
        ("a", "end", "ended", 3)]
    assert rows[-1]["ended_at"] == 5.0  # the fields of the latest entry
    assert [r["id"] for r in event_rows(log, limit=2)] == ["d", "c"]
    assert event_rows([]) == []


def test_a_lasting_event_is_ongoing_until_its_end_and_detect_events_have_no_duration():
    from master.observe.dashboard import event_state

    for kind in ("enter", "dwell", "occupancy"):
        assert event_state(entry("x", "start", kind)) == event_state(entry("x", "update", kind)) == "ongoing"
        assert event_state(entry("x", "end", kind)) == "ended"
    for kind in ("detect", "exit", "cross"):
        assert event_state(entry("x", "start", kind)) == "moment"
    assert event_state({"id": "old", "phase": "start"}) == "moment"  # an entry without a kind: a detect rule's


def test_the_dashboard_document_carries_each_cameras_scene_and_one_row_per_event():
    from master.observe.dashboard import History, overview
    from tests.unit.test_behaviours_in_master import Porch

    porch = Porch()
    porch.walk(5, 0.2)
    porch.walk(20, 0.75)  # across the gate and onto the steps
    porch.walk(25, 0.75)  # 2.5 s there: the dwell event starts
    d = overview(porch.svc, History(), now=porch.clock.t)
    [card] = d["cameras"]
    scene = card["scene"]
    assert card["name"] == "porch" and scene["size"] == [640, 480]
    assert scene["zones"][0]["name"] == "steps" and scene["zones"][0]["now"] == {"person": 1}
    assert scene["lines"][0]["counts"] == {"in": 0, "out": 1}
    [track] = scene["tracks"]
    assert track["state"] == "confirmed" and track["zones"] == ["steps"]
    [row] = d["events"]["recent"]
    assert (row["kind"], row["camera"], row["place"], row["state"]) == ("dwell", "porch", "steps", "ongoing")
    assert row["track_id"] == track["id"] and row["snapshot"]
    porch.walk(30, 0.2)  # off the steps: the event ends, still one row
    [row] = overview(porch.svc, History(), now=porch.clock.t)["events"]["recent"]
    assert (row["phase"], row["state"], row["entries"]) == ("end", "ended", 2)
