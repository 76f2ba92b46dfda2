"""A master with a token: every request but /healthz must present it; roles pass it along."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import xmlrpc.client

import pytest

from cluster.local import ROOT, LocalCluster, free_port, free_udp_ports, packaged_clip
from cluster.testdata import cut_clip
from common.errors import Unauthorized
from common.masterclient import MasterClient
from tests.conftest import wait_until

TOKEN = "s3cret-" + "x" * 24


@pytest.fixture
def cluster(tmp_path):
    with LocalCluster(log_dir=tmp_path / "logs", token=TOKEN) as c:
        c.start_master()
        yield c


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    out = r.status, dict(r.getheaders()), r.read()
    conn.close()
    return out


def test_without_the_token_every_door_but_healthz_is_closed(cluster):
    port = cluster.master_port
    assert get(port, "/healthz")[0] == 200
    for path in ("/", "/metrics", "/api/v1/stats", "/api/v1/dashboard", "/events", "/ports/5000/latest.jpg"):
        status, headers, body = get(port, path)
        assert status == 401 and b"token is required" in body, path
        assert headers["WWW-Authenticate"].startswith("Basic realm=")  # a browser asks for it
        assert get(port, path, {"Authorization": "Bearer wrong-token-of-length"})[0] == 401
        assert get(port, path, {"Authorization": f"Bearer {TOKEN}"})[0] in (200, 404), path
    with MasterClient(cluster.master_url, token="not-the-token-at-all") as c, pytest.raises(Unauthorized,
                                                                                            match="wants a token"):
        c.get_stats()
    anonymous = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/RPC2")
    with pytest.raises(xmlrpc.client.ProtocolError) as e:
        anonymous.get_stats()
    assert e.value.errcode == 401
    # xmlrpc.client sends user:password from the URL as HTTP Basic: the token as the password logs in
    assert "ports" in xmlrpc.client.ServerProxy(f"http://me:{TOKEN}@127.0.0.1:{port}/RPC2").get_stats()
    with cluster.client() as c:
        assert c.get_stats()["rejected_requests"]["unauthorized"] >= 14


def test_an_unauthenticated_body_is_never_read(cluster):
    conn = http.client.HTTPConnection("127.0.0.1", cluster.master_port, timeout=5)
    conn.putrequest("POST", "/api/v1/tasks")
    conn.putheader("Content-Length", str(10 * 2**20))
    conn.endheaders()
    r = conn.getresponse()  # answered before a byte of the 10 MB body was sent
    assert r.status == 401 and r.getheader("Connection") == "close"
    conn.close()


def test_the_live_path_runs_with_the_token_and_a_worker_without_it_is_told_why(cluster, person_clip):
    [port] = free_udp_ports(1)
    cluster.start_receiver([port], "--pipeline", "noop")  # this test is about the token, not the detector
    cluster.start_workers(1, "--threads", "1")
    pub = cluster.start_publisher(port, str(person_clip), "--fps", "10", "--max-frames", "20")
    pub.popen.wait(30)
    with cluster.client() as c:
        wait_until(lambda: c.get_results(port, 0)["next"] >= 15, 30)
    intruder = cluster.spawn("intruder", "worker", "--master", cluster.master_url, "--name", "intruder",
                             env={"FRAMEHIVE_TOKEN": ""})
    intruder_env_token = "wrong-token-0123456789"
    other = cluster.spawn("intruder2", "worker", "--master", cluster.master_url, "--name", "intruder2",
                          env={"FRAMEHIVE_TOKEN": intruder_env_token})
    for p in (intruder, other):  # retrying would not fix a wrong token: the worker says why and exits
        assert p.popen.wait(30) == 2, p.log_text()
        assert "wants a token" in p.log_text() and "--token-file" in p.log_text()
    with cluster.client() as c:
        names = {w["name"] for w in c.get_stats()["workers"]}
    assert "intruder" not in names and "intruder2" not in names


def test_binding_beyond_loopback_needs_a_token(tmp_path):
    def master(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "master", "--port", "0", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=20, env=env)
    done = master("--host", "0.0.0.0", env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and "without a token" in done.stderr and "--token-file" in done.stderr
    bad = tmp_path / "token"
    bad.write_text("short")
    done = master("--token-file", str(bad))
    assert done.returncode == 2 and "16..256 characters" in done.stderr


def test_a_page_on_another_site_cannot_post_with_the_users_login(cluster):
    conn = http.client.HTTPConnection("127.0.0.1", cluster.master_port, timeout=5)
    body = b"<?xml version='1.0'?><methodCall><methodName>get_stats</methodName></methodCall>"
    basic = "Basic " + __import__("base64").b64encode(f"u:{TOKEN}".encode()).decode()
    conn.request("POST", "/RPC2", body, {"Authorization": basic, "Origin": "http://evil.example",
                                         "Content-Type": "text/plain"})
    r = conn.getresponse()
    assert r.status == 403 and b"cross-origin" in r.read()
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", cluster.master_port, timeout=5)
    conn.request("POST", "/RPC2", body, {"Authorization": basic, "Origin": f"http://127.0.0.1:{cluster.master_port}",
                                         "Content-Type": "text/xml"})
    assert conn.getresponse().status == 200, "the dashboard's own origin may post"
    conn.close()


def test_the_job_server_and_its_preview_want_the_token_too(cluster, tmp_path):
    jobs_port, preview_port = free_port(), free_port()
    cluster.start_receiver([free_udp_ports(1)[0]], "--jobs-port", str(jobs_port), "--jobs-http-port", str(preview_port))
    cluster.start_workers(1, "--threads", "1")
    clip = cut_clip(packaged_clip("bikes.mp4"), tmp_path / "in.mp4", 0, 6)

    def upload(token: str | None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "FRAMEHIVE_TOKEN"}
        if token:
            env["FRAMEHIVE_TOKEN"] = token
        return subprocess.run([sys.executable, "-m", "sender.client", "--port", str(jobs_port), "--video", clip,
                               "--filters", "blur:3", "--out", str(tmp_path / "out.mp4")], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    refused = upload(None)
    assert refused.returncode == 1 and "error [unauthorized]" in refused.stderr
    assert upload("a-wrong-token-0123456789").returncode == 1
    ok = upload(TOKEN)
    assert ok.returncode == 0, ok.stderr
    assert get(preview_port, "/progress.json")[0] == 401
    status, _, body = get(preview_port, "/progress.json", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and b"refused_unauthorized" in body
