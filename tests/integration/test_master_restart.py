"""A master killed and restarted with --state-dir loses no accepted file-job tile and no stored result."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys

import pytest

from cluster.local import ROOT, LocalCluster, free_port, packaged_clip
from cluster.testdata import cut_clip
from tests.conftest import wait_until

FRAMES = 48


@pytest.fixture
def clip(tmp_path) -> str:
    return cut_clip(packaged_clip("bikes.mp4"), tmp_path / "in.mp4", 0, FRAMES)


@pytest.mark.parametrize("at", [0.2, 0.5, 0.8])
def test_file_job_and_results_survive_a_master_kill(tmp_path, clip, person_clip, at):
    kill_master_mid_job(tmp_path, clip, person_clip, at)


@pytest.mark.slow
@pytest.mark.parametrize("run", range(3))
@pytest.mark.parametrize("at", [0.05, 0.15, 0.3, 0.45, 0.6, 0.7, 0.9, 0.97])
def test_file_job_survives_master_kills_at_many_points(tmp_path, clip, person_clip, at, run):
    kill_master_mid_job(tmp_path, clip, person_clip, at)


def kill_master_mid_job(tmp_path, clip, person_clip, at: float) -> None:
    """SIGKILL the master when a share `at` of the job's tiles are done, restart it on its state: the
    job must finish with every tile processed (none replaced by its original) and results kept."""
    state = tmp_path / "state"
    with LocalCluster(log_dir=tmp_path / "logs") as c:
        master = c.start_master("--state-dir", str(state))
        jobs_port = free_port()
        [cam] = [free_port(socket.SOCK_DGRAM)]
        c.start_receiver([cam], "--pipeline", "noop", "--jobs-port", str(jobs_port))
        c.start_workers(2, "--threads", "1")
        pub = c.start_publisher(cam, str(person_clip), "--fps", "20", "--max-frames", "20")
        assert pub.popen.wait(30) == 0
        with c.client() as m:
            wait_until(lambda: m.get_results(cam, 0)["next"] >= 15, 30)
            before = m.get_results(cam, 0, 1000)["results"]
        out = tmp_path / "out.mp4"
        client = subprocess.Popen([sys.executable, "-m", "sender.client", "--host", "127.0.0.1", "--port",
                                   str(jobs_port), "--video", clip, "--tiles", "3x3", "--filters", "canny,blur:3",
                                   "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)

        def tiles_done() -> int:
            with c.client(timeout_s=2) as m:
                return m.get_stats()["counters"].get("completed", 0) - len(before)

        wait_until(lambda: tiles_done() >= int(at * 9 * FRAMES), 90, 0.02)
        master.popen.send_signal(signal.SIGKILL)
        master.popen.wait(10)
        restarted = c.start_master("--state-dir", str(state))
        stdout, stderr = client.communicate(timeout=180)
        assert client.returncode == 0, stderr + c.procs[1].log_text()[-3000:]
        metrics = json.loads(stdout)["metrics"]
        assert metrics["frames"] == FRAMES and metrics["tiles"] == 9 * FRAMES
        assert metrics["fallback_tiles"] == 0, f"a tile was lost across the restart: {metrics}"
        with c.client() as m:
            after = m.get_results(cam, 0, 1000)["results"]
            assert [r["cursor"] for r in after[:len(before)]] == [r["cursor"] for r in before]
            assert [r["task_id"] for r in after[:len(before)]] == [r["task_id"] for r in before]
        log = restarted.log_text()
        assert "tile(s) to queue again" in log
        queued, finished = (int(x) for x in re.search(r"(\d+) tile\(s\) to queue again, (\d+) finished", log).groups())
        assert queued + finished > 0, "the kill came after the job was done: the test proved nothing"
