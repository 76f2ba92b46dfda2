"""The live path end to end with real processes: publishers -> receiver -> master -> workers -> results."""

from __future__ import annotations

import os
import signal
import time

import cv2
import numpy as np
import pytest

from cluster.local import LocalCluster, free_udp_ports
from common.masterclient import MasterClient
from common.pipeline import parse_stage
from tests.conftest import wait_until
from worker.pipeline import StageCache

FPS = 10


def expected_people(clip, n: int) -> list[int]:
    """Persons per frame for the first `n` frames, encoded exactly as the publisher encodes them."""
    detect = StageCache().get(parse_stage("person"))
    cap = cv2.VideoCapture(str(clip))
    counts = []
    for _ in range(n):
        ok, frame = cap.read()
        assert ok
        data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])[1]
        counts.append(len(detect(cv2.imdecode(np.asarray(data), cv2.IMREAD_COLOR))))
    return counts


def collect(url: str, port: int, want: int, timeout: float) -> list[dict]:
    got: list[dict] = []
    cursor = 0
    deadline = time.monotonic() + timeout
    with MasterClient(url) as c:
        while time.monotonic() < deadline:
            page = c.get_results(port, cursor, 1000)
            got += page["results"]
            cursor = page["next"]
            if len(got) >= want:
                break
            time.sleep(0.2)
    return got


def finished_or_dropped(cluster: LocalCluster, port: int) -> int:
    """Frames of a camera the master finished or dropped (counted by reason)."""
    c = stats_of(cluster)["ports"].get(str(port), {})
    return c.get("results", 0) + sum(v for k, v in c.items() if k.startswith("dropped_"))


def stats_of(cluster: LocalCluster) -> dict:
    with MasterClient(cluster.master_url) as c:
        stats = c.get_stats()
    return {"ports": stats["ports"], "sources": stats["sources"], "counters": stats["counters"]}


@pytest.fixture
def cluster(tmp_path):
    with LocalCluster(log_dir=tmp_path / "logs") as c:
        yield c


def test_two_cameras_end_to_end(cluster, person_clip):
    n = 90  # the shared clip's first person walks in around frame 65
    want = expected_people(person_clip, n)  # before the cluster starts: it needs both cores
    ports = free_udp_ports(2)
    cluster.start_master()
    cluster.start_receiver(ports, "--pipeline", "person")
    cluster.start_workers(2, "--threads", "1", "--preload", "person")
    pubs = [cluster.start_publisher(p, str(person_clip), "--fps", str(FPS), "--max-frames", str(n)) for p in ports]
    for p in pubs:
        p.popen.wait(60)
        assert p.popen.returncode == 0, p.log_text()
    for port in ports:
        rs = collect(cluster.master_url, port, n, 30)
        seqs = [r["seq"] for r in rs]
        assert len(seqs) == len(set(seqs)), "duplicate results"
        # every frame is a result or a counted drop (a machine too busy for 2 x 10 fps of `person` drops the
        # oldest queued frames by design); nothing vanishes, and most frames are detected
        wait_until(lambda port=port: finished_or_dropped(cluster, port) == n, 30)
        assert len(rs) >= 0.5 * n, f"port {port}: {len(rs)} results for {n} frames: {stats_of(cluster)}"
        got = {r["seq"]: len(r["detections"]) for r in rs}
        assert sum(want) > 0, "the clip's first frames should show people"
        assert all(got[s] == want[s] for s in got), "the cluster must find what a local run finds"
        assert all(r["status"] == "ok" and r["latency_ms"] > 0 for r in rs)

    def accounted(c: dict) -> int:  # every frame the receiver completed ends forwarded or dropped, counted
        return c.get("forwarded", 0) + c.get("dropped_stale", 0) + c.get("dropped_master_down", 0)

    def receiver_counts() -> dict | None:
        # the receiver reports its counters once a second, with a batch sent before that batch is
        # tallied: wait for a report that accounts for every frame rather than for the first complete one
        with MasterClient(cluster.master_url) as c:
            rx = c.get_stats()["sources"]["receiver"]["ports"]
        return rx if all(accounted(rx[str(p)]) == n for p in ports) else None

    rx = wait_until(receiver_counts, 30)
    assert rx is not None
    assert all(rx[str(p)]["frames_complete"] == n and rx[str(p)]["malformed"] == 0 for p in ports), rx
    assert all(rx[str(p)].get("refused", 0) == 0 for p in ports), rx


def test_worker_sigkill_mid_run_loses_and_duplicates_nothing(cluster, person_clip):
    n = 100
    [port] = free_udp_ports(1)
    cluster.start_master("--worker-timeout-s", "2")
    cluster.start_receiver([port], "--pipeline", "person")
    workers = cluster.start_workers(2, "--threads", "1", "--preload", "person")
    pub = cluster.start_publisher(port, str(person_clip), "--fps", str(FPS), "--max-frames", str(n))
    wait_until(lambda: len(collect(cluster.master_url, port, n, 0.1)) >= 30, 60)
    os.kill(workers[0].popen.pid, signal.SIGKILL)
    pub.popen.wait(60)
    rs = collect(cluster.master_url, port, n, 40)
    seqs = [r["seq"] for r in rs]
    ids = [r["task_id"] for r in rs]
    assert len(seqs) == len(set(seqs)) and len(ids) == len(set(ids)), "a duplicated result"
    with MasterClient(cluster.master_url) as c:
        stats = c.get_stats()
    counters = stats["ports"][str(port)]
    lost = n - len(rs)
    assert lost == counters.get("dropped_overflow", 0) + counters.get("dropped_stale", 0), "a frame vanished"
    assert len(rs) >= 0.95 * n, f"{len(rs)} results for {n} frames ({counters})"
    dead = [w for w in stats["workers"] if not w["alive"]]
    assert [w["name"] for w in dead] == ["worker0"]


def still_then_moving_clip(path, still: int, moving: int) -> str:
    """A clip that shows an empty room, then something crossing it."""
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for i in range(still + moving):
        img = np.full((240, 320, 3), 80, np.uint8)
        cv2.rectangle(img, (20, 20), (100, 80), (20, 150, 20), -1)
        if i >= still:
            x = 10 + (i - still) * 12
            cv2.rectangle(img, (x, 120), (x + 40, 220), (230, 230, 230), -1)
        out.write(img)
    out.release()
    return str(path)


def test_motion_gating_skips_still_frames_but_reports_every_frame(cluster, tmp_path):
    still, moving = 50, 20
    clip = still_then_moving_clip(tmp_path / "room.mp4", still, moving)
    [port] = free_udp_ports(1)
    cluster.start_master()
    cluster.start_receiver([port], "--pipeline", "person-hog", "--detect", "motion")
    cluster.start_workers(1, "--threads", "1")
    pub = cluster.start_publisher(port, clip, "--fps", "20")
    assert pub.popen.wait(30) == 0, pub.log_text()
    rs = sorted(collect(cluster.master_url, port, still + moving, 30), key=lambda r: r["seq"])
    assert [r["seq"] for r in rs] == list(range(still + moving))  # every frame has a result
    skipped = [r["seq"] for r in rs if r["status"] == "skipped"]
    assert all(r["skip_reason"] == "no motion" for r in rs if r["status"] == "skipped")
    # 2 s of hold after the first frame (40 frames at 20 fps), then the still room is skipped ...
    assert set(range(45, still)) <= set(skipped)
    # ... and nothing that moves is
    assert not set(range(still, still + moving)) & set(skipped)
    assert all(r["motion"] > 0 for r in rs[still:])
    # the receiver reports its counters with its batches: wait for the report that covers every frame
    wait_until(lambda: stats_of(cluster)["sources"]["receiver"]["ports"][str(port)].get("skipped_no_motion")
               == len(skipped))
