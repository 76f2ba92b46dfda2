"""What the master and the Celery workers agree on: settings, messages, and the registry's view."""

from __future__ import annotations

import pytest

import common.celeryconf as cc
from common.errors import BadRequest, ConfigError
from common.tasks import Detection, Lease, Outcome, Task, TaskKind, TaskSpec, lease_from_wire
from master.backends.celery import redact
from master.core.workers import WorkerRegistry


def test_settings_are_json_only_late_acked_one_at_a_time_with_our_visibility_timeout():
    s = cc.settings("redis://127.0.0.1:6379/0", visibility_s=12)
    assert s["task_serializer"] == s["result_serializer"] == "json"
    assert s["accept_content"] == ["json"] and s["result_accept_content"] == ["json"]
    assert s["task_acks_late"] and s["task_reject_on_worker_lost"] and s["worker_prefetch_multiplier"] == 1
    assert s["broker_transport_options"]["visibility_timeout"] == 12
    assert s["broker_transport_options"]["socket_timeout"] > 0  # a vanished Redis never hangs a publish
    assert s["task_routes"][cc.FRAME_TASK]["queue"] == "frames" and s["task_routes"][cc.TILE_TASK]["queue"] == "tiles"
    assert s["task_annotations"] == {}
    assert cc.settings("redis://h/0", rate_limit="50/s")["task_annotations"] == {cc.FRAME_TASK: {"rate_limit": "50/s"}}


@pytest.mark.parametrize("kw", [{"visibility_s": 0}, {"rate_limit": "fast"}, {"rate_limit": "5/day"}])
def test_bad_settings_are_refused_with_the_reason(kw):
    with pytest.raises(ConfigError):
        cc.settings("redis://h/0", **kw)


def test_environment_settings_and_their_errors():
    assert cc.redis_url({}) == "redis://127.0.0.1:6379/0"
    s = cc.settings_from_env({"FRAMEHIVE_REDIS": "redis://:pw@h:7/1", "FRAMEHIVE_VISIBILITY_S": "7",
                           "FRAMEHIVE_RATE_LIMIT": "10/m"})
    assert s["broker_url"] == s["result_backend"] == "redis://:pw@h:7/1"
    assert s["broker_transport_options"]["visibility_timeout"] == 7.0
    with pytest.raises(ConfigError, match="FRAMEHIVE_REDIS"):
        cc.redis_url({"FRAMEHIVE_REDIS": "amqp://h"})
    with pytest.raises(ConfigError, match="FRAMEHIVE_VISIBILITY_S"):
        cc.settings_from_env({"FRAMEHIVE_VISIBILITY_S": "soon"})
    assert cc.max_retries({}) == 3 and cc.max_retries({"FRAMEHIVE_MAX_RETRIES": "0"}) == 0
    with pytest.raises(ConfigError):
        cc.max_retries({"FRAMEHIVE_MAX_RETRIES": "-1"})


def lease(kind: TaskKind = TaskKind.TILE) -> Lease:
    spec = TaskSpec(port=5000, seq=7, pipeline="canny,blur:5", captured_ns=1, received_ns=2, kind=kind,
                    job_id="j1" if kind is TaskKind.TILE else "", meta={"stacked": True})
    return Lease(Task("t-1", spec, b"\x00\xffpayload", 3), "tok", 10.0, 1)


def test_a_lease_and_its_outcome_survive_the_json_messages():
    lz = lease()
    wire, b64 = cc.lease_message(lz)
    import base64
    again = lease_from_wire(wire, base64.b64decode(b64))
    assert again == lz
    out = Outcome("t-1", "tok", (Detection("person", 0.9, (1, 2, 3, 4)),), {"canny": 1.5}, "", 10, 20, b"\x01img")
    back, worker, stats = cc.outcome_from_result(cc.result_message(out, "celery0@h", {"rss_mb": 100.0}))
    assert back == Outcome("t-1", "tok", (Detection("person", 0.9, (1, 2, 3, 4)),), {"canny": 1.5}, "", 10, 20,
                           b"\x01img")
    assert (worker, stats) == ("celery0@h", {"rss_mb": 100.0})


@pytest.mark.parametrize("bad", [None, [], {"outcome": "x"}, {"outcome": {"task_id": 1}},
                                 {"outcome": {"task_id": "a", "token": "b"}, "image": "not base64!"}])
def test_malformed_results_are_refused(bad):
    with pytest.raises(BadRequest):
        cc.outcome_from_result(bad)


def test_redact_hides_a_redis_password():
    assert redact("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact("redis://user:s3cret@host/0") == "redis://user:***@host/0"
    assert redact("redis://host:6379/0") == "redis://host:6379/0"


def test_registry_observes_workers_it_does_not_lease_to():
    reg = WorkerRegistry(5.0, instance="x")
    reg.observe("celery0@h", 100.0, {"rss_mb": 90.0})
    reg.tally("celery0@h", 2, 0)
    reg.observe("celery0@h", 101.0, {"rss_mb": 91.0})
    [w] = reg.snapshot(101.0)
    assert (w["name"], w["tasks_done"], w["stats"]["rss_mb"], w["alive"]) == ("celery0@h", 2, 91.0, True)
    assert reg.newly_dead(107.0) == ["celery0@h"]


def test_the_worker_app_uses_the_shared_settings_and_retry_policy():
    from worker.celery_app import PipelineCrash, app, run_frame, run_tile

    assert app.conf.task_serializer == "json" and app.conf.accept_content == ["json"]
    assert app.conf.worker_prefetch_multiplier == 1 and app.conf.task_acks_late
    for t in (run_frame, run_tile):
        assert t.autoretry_for == (PipelineCrash,) and t.max_retries == 3 and t.retry_jitter
    assert {run_frame.name, run_tile.name} == {cc.FRAME_TASK, cc.TILE_TASK}


def test_a_celery_task_runs_the_same_step_as_the_pull_worker():
    """Called in-process (Celery's eager apply): a bad payload is a result with an error, not a retry."""
    from worker.celery_app import run_frame

    r = run_frame.apply(args=cc.lease_message(lease(TaskKind.FRAME))).get()
    out, _, _ = cc.outcome_from_result(r)
    assert out.task_id == "t-1" and "not a decodable" in out.error


def test_the_masters_own_dispatcher_leases_but_is_not_listed_as_a_worker():
    reg = WorkerRegistry(5.0, instance="x")
    inner = reg.register("celery-dispatcher", 100.0, internal=True)
    reg.register("worker0", 100.0)
    assert reg.known(inner) and reg.seen(inner, 101.0)
    assert [w["name"] for w in reg.snapshot(101.0)] == ["worker0"]
