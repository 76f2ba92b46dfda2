"""The cluster described in framehive.toml: roles start from the master's address, cameras have names,
and a SIGHUP applies an edited file (a camera added, one removed) without costing the others a frame."""

from __future__ import annotations

import json
import signal

import pytest

from cluster.local import LocalCluster, free_udp_ports, wait_for_log
from tests.conftest import wait_until

FPS = 10


def config(ports: list[int], cameras: dict[str, tuple[int, str]], extra: str = "") -> str:
    text = f'[receivers.hub]\nports = {ports}\n'
    for name, (port, source) in cameras.items():
        text += f'\n[cameras.{name}]\nsource = "{source}"\nport = {port}\nfps = {FPS}\npipeline = "noop"\n'
    return text + extra


@pytest.fixture
def cluster(tmp_path):
    with LocalCluster(log_dir=tmp_path / "logs") as c:
        yield c


def results(cluster: LocalCluster, port: int) -> list[dict]:
    out, cursor = [], 0
    with cluster.client() as c:
        while True:
            page = c.get_results(port, cursor, 1000)
            if not page["results"]:
                return out
            out += page["results"]
            cursor = page["next"]


def test_named_cameras_from_the_file_and_a_reload_that_adds_and_removes(cluster, tmp_path):
    ports = free_udp_ports(4)
    front, yard, gate = ports[0], ports[1], ports[2]
    path = tmp_path / "framehive.toml"
    path.write_text(config(ports, {"front": (front, "synthetic"), "yard": (yard, "synthetic:320x240")},
                           '\n[[rule]]\nname = "anything-at-front"\ncameras = ["front"]\nlabel = "person"\n'))
    master = cluster.start_master("--config", str(path))
    rx = cluster.spawn("hub", "receiver", "--name", "hub", "--master", cluster.master_url)  # no --ports: the file's
    wait_for_log(rx, "receiving UDP", 30)
    cluster.start_workers(1, "--threads", "1")
    for name in ("front", "yard"):
        cluster.spawn(f"pub-{name}", "sender", "--master", cluster.master_url, "--camera", name)

    wait_until(lambda: len(results(cluster, front)) >= 5 and len(results(cluster, yard)) >= 5, 60)
    assert {r["camera"] for r in results(cluster, front)} == {"front"}
    with cluster.client() as c:
        stats = c.get_stats()
    assert stats["ports"][str(front)]["camera"] == "front" and stats["config"]["generation"] == 1

    # edit: yard leaves, gate joins; a SIGHUP applies it
    before = len(results(cluster, front))
    path.write_text(config(ports, {"front": (front, "synthetic"), "gate": (gate, "synthetic:320x240")}))
    master.popen.send_signal(signal.SIGHUP)
    wait_for_log(rx, f"port {gate}: listening", 30)
    wait_for_log(rx, f"port {yard}: closed", 30)
    cluster.spawn("pub-gate", "sender", "--master", cluster.master_url, "--camera", "gate")
    wait_until(lambda: len(results(cluster, gate)) >= 5, 60)
    assert {r["camera"] for r in results(cluster, gate)} == {"gate"}
    yard_after = len(results(cluster, yard))
    wait_until(lambda: len(results(cluster, front)) >= before + 3 * FPS, 60)
    assert len(results(cluster, yard)) == yard_after, "a removed camera's port is closed: nothing more arrives"

    # the untouched camera lost no frame across the reload: its frame numbers run without a gap
    seqs = sorted(r["seq"] for r in results(cluster, front))
    missing = sorted(set(range(seqs[0], seqs[-1])) - set(seqs))
    assert not missing, f"front lost frames: {missing[:10]}"

    # a broken edit is refused with its line, and the cluster keeps running on the old file
    path.write_text(config(ports, {"front": (front, "synthetic")}) + '\n[cameras.bad]\nsource = "synthetic"\n'
                    'receiver = "nowhere"\n')
    with cluster.client() as c:
        reply = c.call("reload_config")
        assert not reply["ok"] and "framehive.toml:" in reply["error"]
        assert "no receiver named 'nowhere'" in reply["error"]
        assert c.get_stats()["config"]["generation"] == 2
    now = len(results(cluster, front))
    wait_until(lambda: len(results(cluster, front)) >= now + FPS, 30)
    # names reach the user's tools: results by camera name, Prometheus labels
    import subprocess
    import sys
    import urllib.request

    from cluster.local import ROOT
    out = subprocess.run([sys.executable, "-m", "master.cli.results", "--master", cluster.master_url,
                          "--camera", "front"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith(f"front {front} seq"), out.stdout[:300] + out.stderr
    with urllib.request.urlopen(f"{cluster.master_url}/metrics", timeout=10) as r:
        assert f'framehive_results_total{{camera="front",port="{front}"}}' in r.read().decode()
    with urllib.request.urlopen(f"{cluster.master_url}/api/v1/counts", timeout=10) as r:
        assert json.load(r) == {}, "no camera of this file has a counting line"


def test_one_publisher_with_all_sends_every_camera_of_this_host(cluster, tmp_path):
    ports = free_udp_ports(3)
    path = tmp_path / "framehive.toml"
    path.write_text(config(ports, {"a": (ports[0], "synthetic:160x120"), "b": (ports[1], "synthetic:320x240")})
                    + f'\n[cameras.elsewhere]\nsource = "synthetic"\nport = {ports[2]}\nhost = "another-host"\n')
    cluster.start_master("--config", str(path))
    rx = cluster.spawn("hub", "receiver", "--name", "hub", "--master", cluster.master_url)
    wait_for_log(rx, "receiving UDP", 30)
    cluster.start_workers(1, "--threads", "1")
    pub = cluster.spawn("pub-all", "sender", "--master", cluster.master_url, "--all")
    wait_until(lambda: len(results(cluster, ports[0])) >= 5 and len(results(cluster, ports[1])) >= 5, 60)
    assert not results(cluster, ports[2]), "a camera of another host is not published here"
    assert "publishing a: " in pub.log_text() and "publishing b: " in pub.log_text()
