"""--state-dir on a full disk: the journal says it is not durable, the live path keeps its pace, file
jobs finish, and the journal is durable again by itself when there is room. A real full disk: a
small tmpfs mounted for the test (needs root, as the network-namespace test does)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.local import ROOT, LocalCluster, free_port, packaged_clip
from cluster.testdata import cut_clip
from common.tasks import TaskSpec
from tests.conftest import wait_until


@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 2 MiB tmpfs for a real full disk needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"this machine does not let root mount a tmpfs: {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_state_disk_degrades_to_not_durable_and_recovers(tiny_disk, person_frames, tmp_path):
    import cv2

    jpeg = cv2.imencode(".jpg", cv2.resize(person_frames[0], (160, 90)))[1].tobytes()
    with LocalCluster(log_dir=tmp_path / "logs") as c:
        master = c.start_master("--state-dir", str(tiny_disk / "state"))
        c.start_workers(1, "--threads", "1")

        def send(port: int, n: int) -> None:
            now = time.time_ns()
            with c.client() as m:
                for i in range(n):
                    reply = m.add_tasks([(TaskSpec(port=port, seq=i, pipeline="noop", captured_ns=now,
                                                   received_ns=now), jpeg)])
                    assert all(reply["ids"]), reply

        def accounted(port: int, n: int) -> bool:
            """Every frame answered, or dropped by newest-wins with its reason counted."""
            with c.client() as m:
                p = m.get_stats()["ports"].get(str(port), {})
            return p.get("completed", 0) + p.get("dropped_overflow", 0) == n and p.get("completed", 0) >= 8

        send(7100, 20)
        wait_until(lambda: accounted(7100, 20), 30)
        filler = fill(tiny_disk)
        send(7101, 40)  # every call still answers: no 500s while the journal cannot write
        wait_until(lambda: accounted(7101, 40), 30)
        # a file job finishes too, every tile processed, only not durable
        clip = cut_clip(packaged_clip("bikes.mp4"), tmp_path / "in.mp4", 0, 12)
        jobs_port = free_port()
        c.start_receiver([free_port(socket.SOCK_DGRAM)], "--pipeline", "noop", "--jobs-port", str(jobs_port))
        job = subprocess.run([sys.executable, "-m", "sender.client", "--host", "127.0.0.1", "--port", str(jobs_port),
                              "--video", clip, "--tiles", "2x2", "--filters", "blur:3", "--out",
                              str(tmp_path / "out.mp4")], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert job.returncode == 0, job.stderr[-2000:]
        metrics = json.loads(job.stdout)["metrics"]
        assert metrics["frames"] == 12 and metrics["fallback_tiles"] == 0, metrics
        with c.client() as m:
            journal = m.get_stats()["journal"]
        assert journal["enabled"] and not journal["durable"] and journal["write_errors"] > 0, journal
        assert master.log_text().count("NOT durable") == 1  # once per change, not per write
        filler.unlink()
        send(7102, 40)
        wait_until(lambda: accounted(7102, 40), 30)
        def durable() -> bool:  # the master rewrites what it holds into the journal at its next pass
            with c.client() as m:
                return m.get_stats()["journal"]["durable"]

        wait_until(durable, 15)
        assert "durable again" in master.log_text()
