"""The pull worker against a real master: detection, bad payloads, master outages and restarts, SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from cluster.local import ROOT, free_port
from common.masterclient import MasterClient
from common.pipeline import parse_stage
from common.tasks import TaskSpec
from master.api.httpserver import MasterHTTPServer
from master.core.service import MasterService, ServiceConfig
from master.core.store import StoreConfig
from tests.conftest import RunningMaster, wait_until
from worker.group import WorkerGroup
from worker.loop import Worker, WorkerConfig
from worker.pipeline import StageCache


@pytest.fixture(scope="module")
def stages() -> StageCache:
    return StageCache()  # models load once for the module


def jpeg(frame) -> bytes:
    return cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()


def add(url: str, payloads: list[bytes], *, port=5000, pipeline="person") -> list[str]:
    now = time.time_ns()
    with MasterClient(url) as c:
        return c.add_tasks([(TaskSpec(port=port, seq=i, pipeline=pipeline, captured_ns=now, received_ns=now), p)
                            for i, p in enumerate(payloads)])["ids"]


def results(url: str, port=5000) -> list[dict]:
    with MasterClient(url) as c:
        return c.get_results(port, 0, 1000)["results"]


def test_worker_runs_each_tasks_pipeline(master, stages, person_frames):
    payloads = [jpeg(f) for f in person_frames[:8]]
    add(master.url, payloads, port=5000, pipeline="person")
    add(master.url, payloads[:2], port=5001, pipeline="face,person-hog")
    with Worker(WorkerConfig(master_url=master.url, name="t", wait_s=0.2), stages=stages):
        wait_until(lambda: len(results(master.url, 5000)) == 8 and len(results(master.url, 5001)) == 2, 60)
    rs = results(master.url, 5000)
    assert all(r["status"] == "ok" and set(r["timings_ms"]) == {"decode", "person"} for r in rs)
    # the same frames through the detector here give the same answer: the cluster adds no error
    detect = stages.get(parse_stage("person"))
    direct = [len(detect(cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR))) for p in payloads]
    assert [len(r["detections"]) for r in sorted(rs, key=lambda r: r["seq"])] == direct
    assert set(results(master.url, 5001)[0]["timings_ms"]) == {"decode", "face", "person-hog"}


def test_garbage_payload_is_a_visible_error_and_the_worker_goes_on(master, stages, person_frames):
    add(master.url, [b"definitely not a jpeg", jpeg(person_frames[0])])
    with Worker(WorkerConfig(master_url=master.url, wait_s=0.2), stages=stages):
        wait_until(lambda: len(results(master.url)) == 2, 30)
    bad, good = sorted(results(master.url), key=lambda r: r["seq"])
    assert bad["status"] == "error" and "not a decodable" in bad["error"]
    assert good["status"] == "ok"


def test_worker_waits_for_a_master_that_is_down_then_recovers_across_restarts(stages, person_frames):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    w = Worker(WorkerConfig(master_url=url, wait_s=0.2, backoff_max_s=0.3), stages=stages)
    w.start()
    try:
        time.sleep(0.5)  # the worker is retrying against nothing
        ids = []
        for _ in range(2):  # first start, then a restart: the worker must register again
            svc = MasterService()
            server = MasterHTTPServer(("127.0.0.1", port), svc)
            t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
            svc.start()
            t.start()
            try:
                add(url, [jpeg(person_frames[0])])
                wait_until(lambda: len(results(url)) == 1, 30)
                ids.append(w.worker_id)
            finally:
                server.shutdown()
                server.server_close()
                t.join(5)
                svc.stop()
    finally:
        w.stop()
        w.join(10)
    assert ids[0] != ids[1] and all(ids)  # registered with each master in turn


def test_sigterm_finishes_in_hand_and_hands_back_the_rest(person_frames):
    m = RunningMaster(ServiceConfig(store=StoreConfig(max_pending_per_port=100))).start()
    try:
        add(m.url, [jpeg(f) for f in person_frames[:8]] * 3, pipeline="person-hog")
        proc = subprocess.Popen([sys.executable, "-m", "worker", "--master", m.url, "--batch", "24",
                                 "--threads", "1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_until(lambda: m.service.stats()["in_progress"] > 0, 30)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out.decode()
        stats = m.service.stats()
        done = stats["counters"].get("completed", 0)
        assert stats["in_progress"] == 0 and stats["pending"] == 24 - done and done < 24
        assert stats["counters"]["released"] == 24 - done
    finally:
        m.stop()


def test_a_slow_task_is_reported_before_the_rest_of_its_batch(master, stages, person_frames):
    """Batch 2 from two cameras, each task held 300 ms by the `sleep` stage: the first camera's result
    must not wait for the second's (a task over EARLY_REPORT_S is reported at once). The second task
    starts after the first is reported and sleeps 300 ms, so the two are stored at least that far apart
    however loaded the machine; reported together they would be stored in the same instant."""
    payload = jpeg(person_frames[0])
    add(master.url, [payload], port=5100, pipeline="sleep:300")
    add(master.url, [payload], port=5101, pipeline="sleep:300")
    with Worker(WorkerConfig(master_url=master.url, name="early", batch=2, wait_s=0.2), stages=stages):
        wait_until(lambda: results(master.url, 5100) and results(master.url, 5101), 60)
    [a], [b] = results(master.url, 5100), results(master.url, 5101)
    first, second = sorted((a, b), key=lambda r: r["completed_at"])
    assert first["worker"] == second["worker"] and first["status"] == second["status"] == "ok"
    assert second["completed_at"] - first["completed_at"] >= 0.3


def test_a_worker_group_holds_one_task_per_loop_at_once_and_stops_cleanly(master, stages, person_frames):
    """`--loops 4`: four pull loops in one process register as four workers and hold four `sleep` tasks
    at the same moment (what one loop could never do with batch 1); one heartbeat connection keeps
    all four alive and shows each one busy; a stop finishes the tasks in hand and hands back the rest."""
    payload = jpeg(person_frames[0])
    for port in range(5200, 5208):
        add(master.url, [payload], port=port, pipeline="sleep:1500")
    group = WorkerGroup(WorkerConfig(master_url=master.url, name="grp", batch=1, wait_s=0.2, loops=4),
                        stages=stages)
    with group:
        wait_until(lambda: master.service.stats()["in_progress"] == 4, 30)
        wait_until(lambda: sum(w["stats"].get("busy", 0) for w in master.service.stats()["workers"]) == 4, 10)
    stats = master.service.stats()
    assert stats["in_progress"] == 0  # nothing left leased: finished or handed back
    assert stats["counters"].get("completed", 0) == group.done >= 4
    assert stats["pending"] == 8 - group.done
    assert {w["name"] for w in stats["workers"]} == {f"grp-{i}" for i in range(4)}


def test_loops_and_a_process_pool_do_not_mix():
    with pytest.raises(ValueError, match="loops and processes"):
        WorkerConfig(loops=4, processes=2)
    with pytest.raises(ValueError, match="loops must be"):
        WorkerConfig(loops=0)


def test_a_worker_leases_one_at_a_time_while_its_tasks_are_slow(master, stages, person_frames):
    """Tasks over EARLY_REPORT_S are reported one by one anyway: a worker then leases one at a time, so
    no task waits in its hand for another while a second worker may be idle; fast tasks go back to
    whole batches (one request for several)."""
    payload = jpeg(person_frames[0])
    add(master.url, [payload] * 3, port=5300, pipeline="sleep:40")
    w = Worker(WorkerConfig(master_url=master.url, name="adaptive", batch=4, wait_s=0.2), stages=stages)
    assert w.lease_size == 4
    with w:
        wait_until(lambda: len(results(master.url, 5300)) == 3, 30)
        assert w.lease_size == 1
        add(master.url, [payload] * 8, port=5301, pipeline="noop")
        wait_until(lambda: len(results(master.url, 5301)) == 8, 30)
        assert w.lease_size == 4


def test_with_a_backlog_a_worker_reports_slow_tasks_together(master, stages, person_frames):
    """When tasks wait at the master behind the ones leased (every lease reply says how many), no worker
    is idle: a worker then keeps its batch of slow tasks and reports them in one request, half the
    requests per result, instead of one request per task."""
    payload = jpeg(person_frames[0])
    for port in range(5400, 5405):
        add(master.url, [payload] * 2, port=port, pipeline="sleep:40")
    w = Worker(WorkerConfig(master_url=master.url, name="backlog", batch=2, wait_s=0.2), stages=stages)
    with w:
        wait_until(lambda: sum(len(results(master.url, p)) for p in range(5400, 5405)) == 10, 30)
    done = sorted(r["completed_at"] for p in range(5400, 5405) for r in results(master.url, p))
    # the first batch of 2 was leased with 8 waiting behind it: both stored by one request, not 40 ms apart
    assert done[1] - done[0] < 0.02
    assert all(b - a >= 0.04 for a, b in zip(done[1::2], done[2::2]))  # one request per pair, each after its 2nd task
