"""The stored result type: its wire form is exactly the dict the store wrote before it had a type, and
`from_wire` checks every field and gives back what `to_wire` was given."""

from __future__ import annotations

import itertools
import json

import pytest

from common import batch
from common.errors import BadRequest
from common.results import Result, ResultStatus
from common.tasks import Detection, Outcome, TaskKind, TaskSpec
from master.api import taskapi
from master.core.journal import SqliteJournal
from master.core.service import MasterService, ServiceConfig
from master.core.store import StoreConfig, TaskStore

T0 = 1_700_000_000.25

# What master/core/store.py returned for these cases when results were plain dicts (captured from that code):
# the wire format is these keys, in this order, with these types and this rounding.
EXPECTED = {
    "frame": {
        "cursor": 1, "task_id": "t-1", "port": 5000, "seq": 7, "kind": "frame", "pipeline": "person", "status": "ok",
        "error": "", "worker": "host-1#1", "attempts": 1,
        "detections": [{"label": "person", "score": 0.9123, "box": [412, 88, 120, 310]},
                       {"label": "dog", "score": 0.5, "box": [1, 2, 3, 4]}],
        "timings_ms": {"decode": 0.812, "person": 21.4}, "captured_at": 1700000000.1234567,
        "received_at": 1700000000.13, "queued_at": 1700000000.2499998, "completed_at": 1700000000.3,
        "latency_ms": 176.543,
        "stages_ms": {"network_in": 6.543, "receiver": 10.0, "to_master": 110.0, "queue": 10.0, "work": 20.5,
                      "dispatch": 19.5, "end_to_end": 176.543},
        "motion": 0.25,
    },
    "skipped": {
        "cursor": 2, "task_id": "t-2", "port": 5000, "seq": 8, "kind": "frame", "pipeline": "person",
        "status": "skipped", "error": "", "worker": "", "attempts": 0, "detections": [], "timings_ms": {},
        "captured_at": 1700000000.1234567, "received_at": 1700000000.13, "queued_at": 1700000000.35,
        "completed_at": 1700000000.35, "latency_ms": 226.543, "stages_ms": {"network_in": 6.543, "end_to_end": 226.543},
        "motion": 0.001, "skip_reason": "no_motion",
    },
    "error": {
        "cursor": 3, "task_id": "t-3", "port": 5000, "seq": 9, "kind": "frame", "pipeline": "person", "status": "error",
        "error": "cannot decode", "worker": "host-1#1", "attempts": 1, "detections": [], "timings_ms": {},
        "captured_at": 1700000000.1234567, "received_at": 1700000000.13, "queued_at": 1700000000.45,
        "completed_at": 1700000000.47, "latency_ms": 346.543,
        "stages_ms": {"network_in": 6.543, "queue": 10.0, "end_to_end": 346.543},
    },
    "failed": {
        "cursor": 4, "task_id": "t-4", "port": 5000, "seq": 10, "kind": "frame", "pipeline": "person",
        "status": "failed", "error": "failed after 1 attempts: lease expired on worker 'host-1#1'",
        "worker": "host-1#1", "attempts": 1, "detections": [], "timings_ms": {}, "captured_at": 1700000000.1234567,
        "received_at": 1700000000.13, "queued_at": 1700000000.55, "completed_at": 1700000100.25,
        "latency_ms": 100126.543, "stages_ms": {"network_in": 6.543, "queue": 10.0, "end_to_end": 100126.543},
    },
    "tile": {
        "cursor": 0, "task_id": "t-5", "port": 5000, "seq": 3, "kind": "tile", "pipeline": "person", "status": "ok",
        "error": "", "worker": "host-2#1", "attempts": 1, "detections": [], "timings_ms": {"canny": 1.235},
        "captured_at": 1700000000.1234567, "received_at": 1700000000.13, "queued_at": 1700000000.65,
        "completed_at": 1700000000.7, "latency_ms": 576.543,
        "stages_ms": {"network_in": 6.543, "queue": 10.0, "work": 1.0, "dispatch": 39.0, "end_to_end": 576.543},
        "job_id": "job-1", "meta": {"frame": 3, "tile": 4},
    },
}


def spec(seq: int, *, kind: TaskKind = TaskKind.FRAME, job: str = "", meta: dict | None = None) -> TaskSpec:
    return TaskSpec(port=5000, seq=seq, pipeline="person", captured_ns=1_700_000_000_123_456_789,
                    received_ns=1_700_000_000_130_000_001, kind=kind, job_id=job, meta=meta or {})


def stored(journal: SqliteJournal | None = None) -> dict[str, Result]:
    """One result of each kind, made by the store exactly as in a running master."""
    counter = itertools.count()
    s = TaskStore(StoreConfig(max_attempts=1), token_factory=lambda: f"tok{next(counter)}", id_prefix="t",
                  journal=journal)
    s.add(spec(2**31 + 7, meta={"motion": 0.25, "forwarded_ns": "1700000000140000000"}), b"jpeg", T0)
    [lease] = s.request("host-1#1", 1, T0 + 0.01)
    frame = s.complete(lease.task.id, lease.token, Outcome(
        lease.task.id, lease.token, (Detection("person", 0.912345678, (412, 88, 120, 310)),
                                     Detection("dog", 0.5, (1, 2, 3, 4))),
        {"decode": 0.81234, "person": 21.4}, started_ns=1_700_000_000_270_000_000,
        finished_ns=1_700_000_000_290_500_000), "host-1#1", T0 + 0.05)
    s.add(spec(8, meta={"skip": "no_motion", "motion": 0.001}), b"jpeg", T0 + 0.1)
    [skipped] = s.results(5000, 1, 10)["results"]
    s.add(spec(9), b"not a jpeg", T0 + 0.2)
    [lease] = s.request("host-1#1", 1, T0 + 0.21)
    error = s.complete(lease.task.id, lease.token, Outcome(lease.task.id, lease.token, error="cannot decode"),
                       "host-1#1", T0 + 0.22)
    s.add(spec(10), b"jpeg", T0 + 0.3)
    s.request("host-1#1", 1, T0 + 0.31)
    s.expire(T0 + 100)
    [failed] = s.results(5000, 3, 10)["results"]
    s.add(spec(3, kind=TaskKind.TILE, job="job-1", meta={"frame": 3, "tile": 4}), b"tile", T0 + 0.4)
    [lease] = s.request("host-2#1", 1, T0 + 0.41)
    tile = s.complete(lease.task.id, lease.token, Outcome(
        lease.task.id, lease.token, (), {"canny": 1.23456}, started_ns=1_700_000_000_700_000_000,
        finished_ns=1_700_000_000_701_000_000, image=b"out"), "host-2#1", T0 + 0.45)
    return {"frame": frame, "skipped": skipped, "error": error, "failed": failed, "tile": tile}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_the_wire_form_is_byte_for_byte_the_dict_the_store_wrote_before(case):
    r = stored()[case]
    assert isinstance(r, Result)
    # JSON text compares key order, int against float and every rounding, not just equal values
    assert json.dumps(r.to_wire()) == json.dumps(EXPECTED[case])


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_from_wire_gives_back_what_to_wire_was_given(case):
    r = stored()[case]
    assert Result.from_wire(r.to_wire()) == r
    again = Result.from_wire(json.loads(json.dumps(EXPECTED[case])))  # as a client reads it
    assert again == r and json.dumps(again.to_wire()) == json.dumps(EXPECTED[case])


def test_fields_read_as_attributes():
    results = stored()
    frame, tile = results["frame"], results["tile"]
    assert frame.status is ResultStatus.OK and frame.kind is TaskKind.FRAME and frame.motion == 0.25
    assert frame.detections[0] == Detection("person", 0.9123, (412, 88, 120, 310))
    assert results["skipped"].skip_reason == "no_motion" and results["failed"].status is ResultStatus.FAILED
    assert tile.kind is TaskKind.TILE and tile.job_id == "job-1" and tile.meta == {"frame": 3, "tile": 4}


def test_the_journal_keeps_the_wire_form_and_gives_back_equal_results(tmp_path):
    path = tmp_path / "m.sqlite3"
    results = stored(SqliteJournal(path))
    restored = SqliteJournal(path).restore()
    assert restored.results[5000] == [results[k] for k in ("frame", "skipped", "error", "failed")]
    assert restored.job_results == [("job-1", results["tile"], b"out")]


@pytest.mark.parametrize("field, value", [
    ("cursor", -1), ("cursor", "1"), ("task_id", 7), ("port", 70000), ("seq", 2**31), ("kind", "video"),
    ("status", "done"), ("error", None), ("worker", "w" * 300), ("attempts", True), ("detections", "person"),
    ("timings_ms", {"decode": "fast"}), ("captured_at", float("nan")), ("latency_ms", "41"),
    ("stages_ms", [1.0]), ("job_id", 3), ("motion", float("inf")), ("skip_reason", 1), ("meta", [1]),
])
def test_from_wire_names_the_bad_field(field, value):
    wire = {**EXPECTED["tile"], field: value}
    with pytest.raises(BadRequest, match=field):
        Result.from_wire(wire)


def test_from_wire_refuses_what_is_not_a_result():
    with pytest.raises(BadRequest, match="struct"):
        Result.from_wire(["not", "a", "dict"])
    missing = dict(EXPECTED["frame"])
    del missing["completed_at"]
    with pytest.raises(BadRequest, match="completed_at"):
        Result.from_wire(missing)
    with pytest.raises(BadRequest, match="box"):
        Result.from_wire({**EXPECTED["frame"], "detections": [{"label": "person", "score": 0.5, "box": [1, 2]}]})


def test_a_failure_reported_with_a_huge_error_is_stored_short_enough_to_read_back():
    svc = MasterService(ServiceConfig(store=StoreConfig(max_attempts=1)), clock=lambda: T0)
    worker = svc.register_worker("w")["worker_id"]
    svc.add_tasks([(spec(1), b"jpeg")])
    [lease] = svc.request_tasks(worker, 1)
    body = batch.pack({"worker": worker, "failed": [{"task_id": lease.task.id, "token": lease.token,
                                                      "error": "x" * 1_000_000}]})
    taskapi.complete(svc, body)
    [r] = svc.results(5000, 0, 10)["results"]
    assert r.status is ResultStatus.FAILED and len(r.error) < 600
    assert Result.from_wire(json.loads(json.dumps(r.to_wire()))) == r
