"""The Celery backend end to end: a real redis-server, real Celery worker processes, the same API.

Each test starts its own redis-server on a free port (setup installs Debian's redis-server) and
`celery -A worker.celery_app worker` processes exactly as docs/OPERATIONS.md tells users to.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import cv2
import psutil
import pytest

from cluster.local import ROOT, LocalCluster, free_port, free_udp_ports
from cluster.redisserver import RedisServer
from cluster.testdata import sample_image
from common.masterclient import MasterClient
from common.results import Result
from common.tasks import TaskKind, TaskSpec
from tests.conftest import wait_until
from tests.integration.test_cluster import collect, expected_people

VISIBILITY_S = 3.0  # short, so a killed worker's task is redelivered within the test


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


@pytest.fixture
def cluster(tmp_path):
    with LocalCluster(log_dir=tmp_path / "logs") as c:
        yield c


def start_celery_master(cluster: LocalCluster, redis: RedisServer, *args: str) -> None:
    cluster.start_master("--backend", "celery", "--redis", redis.url, "--visibility-s", str(VISIBILITY_S), *args)


def stats(cluster: LocalCluster) -> dict:
    with MasterClient(cluster.master_url) as c:
        return c.get_stats()


def kill_tree(pid: int) -> None:
    """SIGKILL a Celery worker and its pool children at once: no chance to hand anything back."""
    parent = psutil.Process(pid)
    for p in [*parent.children(recursive=True), parent]:
        p.send_signal(signal.SIGKILL)


def test_live_stream_through_celery_reads_like_the_builtin_backend(cluster, redis, person_clip):
    n = 80
    want = expected_people(person_clip, n)
    [port] = free_udp_ports(1)
    start_celery_master(cluster, redis)
    cluster.start_receiver([port], "--pipeline", "person")
    cluster.start_celery_workers(2, redis.url, visibility_s=VISIBILITY_S)
    pub = cluster.start_publisher(port, str(person_clip), "--fps", "10", "--max-frames", str(n))
    pub.popen.wait(60)
    rs = collect(cluster.master_url, port, n, 30)
    seqs = [r["seq"] for r in rs]
    assert len(seqs) == len(set(seqs)), "duplicate results"
    assert len(rs) >= 0.95 * n, f"{len(rs)} results for {n} frames: {stats(cluster)['backend']}"
    assert all(r["status"] == "ok" for r in rs)
    got = {r["seq"]: len(r["detections"]) for r in rs}
    assert all(got[s] == want[s] for s in got), "Celery workers must find what a local run finds"
    assert {r["worker"].split("@")[0] for r in rs} <= {"celery0", "celery1"}
    s = stats(cluster)
    assert s["backend"]["name"] == "celery" and s["backend"]["redis_ok"] and s["backend"]["in_flight"] == 0
    names = {w["name"] for w in s["workers"] if w["alive"]}
    assert {"celery0", "celery1"} <= {x.split("@")[0] for x in names}, names


def test_file_job_through_celery(cluster, redis, tmp_path):
    clip = tmp_path / "in.mp4"
    out = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 25, (320, 240))
    img = cv2.resize(sample_image("astronaut.png"), (320, 240))
    for i in range(12):
        out.write(cv2.GaussianBlur(img, (1 + 2 * (i % 3), 1 + 2 * (i % 3)), 0))
    out.release()
    start_celery_master(cluster, redis)
    jobs_port = free_port()
    cluster.start_receiver([free_udp_ports(1)[0]], "--jobs-port", str(jobs_port))
    cluster.start_celery_workers(2, redis.url, visibility_s=VISIBILITY_S)
    result = tmp_path / "out.mp4"
    done = subprocess.run([sys.executable, "-m", "sender.client", "--host", "::1", "--port", str(jobs_port),
                           "--video", str(clip), "--tiles", "2x2", "--filters", "canny,blur:3", "--out", str(result)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)["metrics"]
    assert metrics["frames"] == 12 and metrics["fallback_tiles"] == 0 and metrics["tiles"] == 48, metrics
    cap = cv2.VideoCapture(str(result))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    assert stats(cluster)["backend"]["collected"] >= 12 * 4


def add_tiles(url: str, job: str, n: int) -> None:
    ok, jpg = cv2.imencode(".png", cv2.resize(sample_image("astronaut.png"), (160, 160)))
    now = time.time_ns()
    with MasterClient(url) as c:
        for i in range(0, n, 20):
            c.add_tasks([(TaskSpec(port=0, seq=s, pipeline="person", captured_ns=now, received_ns=now,
                                   kind=TaskKind.TILE, job_id=job), jpg.tobytes()) for s in range(i, min(n, i + 20))])


def take_all(url: str, job: str, n: int, timeout_s: float) -> list[Result]:
    got: list[Result] = []
    deadline = time.monotonic() + timeout_s
    with MasterClient(url) as c:
        while len(got) < n and time.monotonic() < deadline:
            got += [r for r, _ in c.take_job_results(job, 64, wait_s=1.0)]
    return got


def test_a_celery_worker_killed_mid_task_loses_and_duplicates_nothing(cluster, redis):
    n = 60
    start_celery_master(cluster, redis)
    workers = cluster.start_celery_workers(2, redis.url, visibility_s=VISIBILITY_S)
    add_tiles(cluster.master_url, "kill", n)
    wait_until(lambda: stats(cluster)["backend"]["collected"] >= 10, 60)
    kill_tree(workers[0].popen.pid)
    got = take_all(cluster.master_url, "kill", n, 90)
    seqs = [r.seq for r in got]
    assert sorted(seqs) == list(range(n)), f"{len(got)} results, {len(set(seqs))} distinct"
    assert all(r.status == "ok" for r in got), [r.error for r in got if r.status != "ok"]
    after = take_all(cluster.master_url, "kill", 1, 2 * VISIBILITY_S + 2)
    assert after == [], "a redelivered task produced a second result"
    survivors = {r.worker.split("@")[0] for r in got[-5:]}
    assert survivors == {"celery1"}, survivors


def test_redis_restart_mid_run_gives_clear_errors_then_recovers(cluster, redis, person_clip):
    [port] = free_udp_ports(1)
    start_celery_master(cluster, redis)
    cluster.start_receiver([port], "--pipeline", "person")
    cluster.start_celery_workers(1, redis.url, visibility_s=VISIBILITY_S)
    cluster.start_publisher(port, str(person_clip), "--fps", "8", "--loop")
    wait_until(lambda: stats(cluster)["backend"]["collected"] >= 5, 60)
    redis.stop()
    down = wait_until(lambda: (s := stats(cluster)["backend"]) and not s["redis_ok"] and s, 20)
    assert "Error" in down["last_error"] or "error" in down["last_error"], down
    started = time.monotonic()
    with MasterClient(cluster.master_url, timeout_s=3) as c:  # the master keeps answering while Redis is gone
        assert c.get_results(port, 0)["next"] >= 5
    assert time.monotonic() - started < 3
    before = stats(cluster)["backend"]["collected"]
    redis.start()
    wait_until(lambda: stats(cluster)["backend"]["collected"] >= before + 10, 60)
    assert stats(cluster)["backend"]["redis_ok"]
    log = cluster.procs[0].log_text()
    assert "unreachable" in log and "reachable again" in log


def test_workers_refuse_pickled_messages(cluster, redis):
    """Anyone who reaches Redis must not be able to run code on the workers through a pickle."""
    from celery import Celery
    from kombu.exceptions import ContentDisallowed  # noqa: F401 - the error a worker logs

    cluster.start_celery_workers(1, redis.url, visibility_s=VISIBILITY_S)
    evil = Celery("evil", broker=redis.url, backend=redis.url)
    evil.conf.update(task_serializer="pickle", accept_content=["pickle", "json"])
    evil.send_task("framehive.frame", args=[{"x": 1}, ""], queue="frames", serializer="pickle")
    w = cluster.procs[-1]
    wait_until(lambda: "disallowed" in w.log_text().lower() or "ContentDisallowed" in w.log_text(), 20)
    assert w.alive()


def test_master_refuses_a_bad_redis_url_before_starting(tmp_path):
    done = subprocess.run([sys.executable, "-m", "master", "--backend", "celery", "--redis", "http://x:1",
                           "--port", "0"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "redis://" in done.stderr



def test_the_frame_rate_limit_paces_a_worker(cluster, redis):
    start_celery_master(cluster, redis)
    cluster.start_celery_workers(1, redis.url, visibility_s=VISIBILITY_S, env={"FRAMEHIVE_RATE_LIMIT": "5/s"})
    ok, jpg = cv2.imencode(".jpg", cv2.resize(sample_image("astronaut.png"), (160, 160)))
    now = time.time_ns()
    n = 8
    with MasterClient(cluster.master_url) as c:
        c.add_tasks([(TaskSpec(port=7000, seq=s, pipeline="noop", captured_ns=now, received_ns=now), jpg.tobytes())
                     for s in range(n)])
    rs = collect(cluster.master_url, 7000, n, 30)
    assert len(rs) == n
    done = sorted(r["completed_at"] for r in rs)
    # 5 per second: 8 tasks need at least 7 gaps of ~0.2 s (a noop takes milliseconds unpaced)
    assert done[-1] - done[0] >= 0.7 * (n - 1) / 5, done


def test_two_masters_share_one_celery_pool_and_each_gets_its_own_results(cluster, redis, tmp_path):
    """Past one coordinator on Celery: two masters send to the same Redis queues and the same workers;
    each collects its own results (by the Celery task ids it made) and none of the other's."""
    import xmlrpc.client

    from cluster.local import free_port
    from common.masterclient import wait_for_master

    ports = free_udp_ports(2)
    start_celery_master(cluster, redis)
    other = f"http://127.0.0.1:{free_port()}"
    cluster.spawn("master-2", "master", "--port", other.rsplit(":", 1)[1], "--backend", "celery", "--redis",
                  redis.url, "--visibility-s", str(VISIBILITY_S))
    assert wait_for_master(other, 30)
    cluster.start_receiver([ports[0]], "--pipeline", "noop")
    cluster.spawn("receiver-2", "receiver", "--ports", str(ports[1]), "--master", other, "--name", "receiver-2",
                  "--pipeline", "noop")
    cluster.start_celery_workers(2, redis.url, visibility_s=VISIBILITY_S)
    n = 40
    pubs = [cluster.start_publisher(port, "synthetic:160x120", "--fps", "10", "--max-frames", str(n)) for port in ports]
    for pub in pubs:
        assert pub.popen.wait(60) == 0  # finite: let them finish, not race their exit with the teardown's SIGTERM
    first = collect(cluster.master_url, ports[0], n, 60)
    second = collect(other, ports[1], n, 60)
    for rs in (first, second):
        assert len(rs) >= 0.95 * n and len({r["seq"] for r in rs}) == len(rs)
        assert all(r["status"] == "ok" for r in rs)
    with xmlrpc.client.ServerProxy(f"{other}/RPC2") as c2:  # nothing of the first master's camera reached it
        assert c2.get_results(ports[0], 0, 10)["results"] == []
    assert collect(cluster.master_url, ports[1], 0, 1) == []
    assert stats(cluster)["backend"]["in_flight"] == 0
