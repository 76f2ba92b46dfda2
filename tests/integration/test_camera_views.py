"""What users see of cameras on a real master: the true frame rate."""

from __future__ import annotations

import json
import time
import urllib.request
import xmlrpc.client

from tests.conftest import RunningMaster

NOW_NS = time.time_ns()
BATCH = 8  # the master keeps 8 frames waiting per camera; more would push the oldest out


def frame(port: int, seq: int) -> dict:
    return {"port": port, "seq": seq, "pipeline": "noop", "captured_ns": str(NOW_NS),
            "payload": xmlrpc.client.Binary(b"\xff\xd8frame")}


def finish(master: RunningMaster, tasks: list[dict]) -> int:
    """Queue `tasks` in batches and complete every one as a worker would; returns how many were stored."""
    p = xmlrpc.client.ServerProxy(f"{master.url}/RPC2")
    worker = p.register_worker("views-test")["worker_id"]
    stored = 0
    for i in range(0, len(tasks), BATCH):
        p.add_tasks(tasks[i:i + BATCH])
        leases = p.request_tasks(worker, BATCH)
        out = p.complete_tasks(worker, [{"task_id": x["id"], "token": x["token"]} for x in leases])
        stored += len(out["accepted"])
    return stored


def dashboard(master: RunningMaster) -> dict:
    with urllib.request.urlopen(f"{master.url}/api/v1/dashboard", timeout=10) as r:
        return json.load(r)


def test_a_busy_camera_shows_its_true_frame_rate(master):
    assert finish(master, [frame(5000, i) for i in range(200)]) == 200
    [cam] = dashboard(master)["cameras"]
    # 200 frames finished within the 5 s window: at least 40 fps, however slowly this machine ran them
    assert cam["port"] == 5000 and cam["fps"] >= 30.0, cam
    assert master.service.stats()["ports"]["5000"]["fps"] == cam["fps"]

