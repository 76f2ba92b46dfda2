"""File jobs reach the master's dashboard and /metrics through their receiver's reports."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import xmlrpc.client

from prometheus_client.parser import text_string_to_metric_families

from cluster.local import ROOT, LocalCluster, free_port, free_udp_ports, packaged_clip
from cluster.testdata import cut_clip
from common.tasks import TaskSpec
from tests.conftest import wait_until

FRAMES = 20


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def test_a_file_job_shows_on_the_dashboard_and_in_metrics(tmp_path):
    clip = cut_clip(packaged_clip("bikes.mp4"), tmp_path / "in.mp4", 0, FRAMES)
    with LocalCluster(log_dir=tmp_path / "logs") as c:
        c.start_master()
        jobs_port = free_port()
        c.start_receiver([free_udp_ports(1)[0]], "--jobs-port", str(jobs_port), name="edge")
        c.start_workers(1, "--threads", "1")
        done = subprocess.run([sys.executable, "-m", "sender.client", "--port", str(jobs_port), "--video", clip,
                               "--tiles", "2x2", "--filters", "sobel", "--out", str(tmp_path / "out.mp4")],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr

        def reported() -> list:
            jobs = json.loads(fetch(c.master_url + "/api/v1/dashboard"))["jobs"]
            return [j for j in jobs if j["state"] == "done"]

        [job] = wait_until(reported, 10)
        assert (job["source"], job["name"], job["grid"], job["filters"]) == ("edge", "in.mp4", "2x2", "sobel")
        assert job["frames_total"] == job["frames_in"] == job["frames_out"] == FRAMES
        assert job["tiles_done"] == 4 * FRAMES and job["fallback_tiles"] == 0 and job["fps_out"] > 0
        families = {f.name: f for f in text_string_to_metric_families(fetch(c.master_url + "/metrics").decode())}
        delivered = [s.value for s in families["framehive_file_jobs"].samples
                     if s.labels == {"source": "edge", "event": "delivered"} and s.name.endswith("_total")]
        assert delivered == [1.0]
        assert [s.value for s in families["framehive_file_jobs_running"].samples] == [0.0]


def test_xmlrpc_stats_survive_counters_beyond_32_bits(tmp_path):
    """A receiver's byte count passes 2**31 after hours of video: get_stats must still answer."""
    with LocalCluster(log_dir=tmp_path / "logs") as c:
        c.start_master()
        with c.client() as m:
            now = time.time_ns()
            m.add_tasks([(TaskSpec(port=5000, seq=1, pipeline="noop", captured_ns=now, received_ns=now), b"x")],
                        source="big", counters={"ports": {"5000": {"bytes": 5 * 2**31, "datagrams": 7}}})
        stats = xmlrpc.client.ServerProxy(c.master_url + "/RPC2").get_stats()
        assert stats["sources"]["big"]["ports"]["5000"] == {"bytes": float(5 * 2**31), "datagrams": 7}
