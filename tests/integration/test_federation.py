"""Past one coordinator: one cluster file with three masters ([masters.NAME]), each with its own
receiver, camera and worker, behind one federated view (python -m master.federation --config FILE).
One master is killed mid-run: the view says it is down and which cameras that costs, and the other
two masters' cameras lose no result."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import xmlrpc.client

from cluster.local import ROOT, LocalCluster, free_port, free_udp_ports, wait_for_log
from common.masterclient import MasterClient, wait_for_master
from tests.conftest import wait_until

CAMERAS = {"a": "porch", "b": "yard", "c": "shop"}


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def seqs(url: str, port: int) -> list[int]:
    out, cursor = [], 0
    with MasterClient(url) as c:
        while True:
            page = c.get_results(port, cursor, 1000)
            if not page["results"]:
                return sorted(r["seq"] for r in out)
            out += page["results"]
            cursor = page["next"]


def test_three_masters_one_view_and_one_master_lost(tmp_path):
    udp = dict(zip(CAMERAS, free_udp_ports(3)))
    http_ports = {n: free_port() for n in CAMERAS}
    cfg = tmp_path / "framehive.toml"
    text = "".join(f"[masters.{n}]\nport = {http_ports[n]}\n" for n in CAMERAS)
    text += "".join(f'[receivers.rx-{n}]\nmaster = "{n}"\nports = [{udp[n]}]\n' for n in CAMERAS)
    text += "".join(f'[cameras.{c}]\nsource = "synthetic:160x120"\nreceiver = "rx-{n}"\nfps = 10\npipeline = "noop"\n'
                    for n, c in CAMERAS.items())
    cfg.write_text(text)
    with LocalCluster(log_dir=tmp_path / "logs") as cluster:
        urls = {n: f"http://127.0.0.1:{p}" for n, p in http_ports.items()}
        ports, procs = udp, {}
        for name, camera in CAMERAS.items():  # what `framehive up` would start on each master's host
            procs[name] = cluster.spawn(f"master-{name}", "master", "--config", str(cfg), "--name", name)
            assert wait_for_master(urls[name], 30), procs[name].log_text()
            rx = cluster.spawn(f"rx-{name}", "receiver", "--name", f"rx-{name}", "--master", urls[name])
            wait_for_log(rx, "receiving UDP", 30)
            cluster.spawn(f"worker-{name}", "worker", "--master", urls[name], "--name", f"worker-{name}",
                          "--threads", "1")
            cluster.spawn(f"pub-{name}", "sender", "--master", urls[name], "--camera", camera)
        fed_port = free_port()
        fed = cluster.spawn("federation", "master.federation", "--port", str(fed_port), "--poll-s", "0.5",
                            "--config", str(cfg))
        wait_for_log(fed, "federation of 3 master(s)", 30)

        def view() -> dict:
            status, body = get(fed_port, "/api/v1/dashboard")
            assert status == 200, body
            return json.loads(body)

        wait_until(lambda: {c["name"] for c in view()["cameras"] if c.get("has_frame")} == set(CAMERAS.values()), 60)
        d = view()
        assert [m["state"] for m in d["masters"]] == ["up", "up", "up"]
        assert {c["name"]: c["master"] for c in d["cameras"]} == {"porch": "a", "yard": "b", "shop": "c"}
        # results and counts by camera name, whichever master has the camera
        rpc = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{fed_port}/RPC2")
        page = rpc.get_results("shop", 0, 10)
        assert page["master"] == "c" and page["results"] and page["results"][0]["camera"] == "shop"
        status, body = get(fed_port, "/api/v1/results?camera=yard&limit=5")
        assert status == 200 and json.loads(body)["results"][0]["camera"] == "yard"
        status, jpeg = get(fed_port, f"/m/b/ports/{ports['b']}/latest.jpg")
        assert status == 200 and jpeg[:2] == b"\xff\xd8"

        # master b dies: b's camera is lost, and the view says so; a's and c's go on without a gap
        before = {n: len(seqs(urls[n], ports[n])) for n in ("a", "c")}
        procs["b"].popen.send_signal(signal.SIGKILL)
        procs["b"].popen.wait(10)
        cluster.procs.remove(procs["b"])  # killed on purpose: not a role that failed to stop
        wait_until(lambda: view()["masters"][1]["state"] == "down", 20)
        d = view()
        yard = next(c for c in d["cameras"] if c["name"] == "yard")
        assert yard["unreachable"] and d["masters"][1]["cameras"] == ["yard"]
        assert {c["name"] for c in d["cameras"] if not c["unreachable"]} == {"porch", "shop"}
        status, body = get(fed_port, "/api/v1/results?camera=yard")
        assert status == 502 and b"does not answer" in body
        for n in ("a", "c"):  # 3 s more of frames on the masters that live
            wait_until(lambda n=n: len(seqs(urls[n], ports[n])) >= before[n] + 30, 30)
            got = seqs(urls[n], ports[n])
            missing = sorted(set(range(got[0], got[-1])) - set(got))
            assert not missing, f"camera {CAMERAS[n]} on master {n} lost results: {missing[:10]}"
        counts = json.loads(get(fed_port, "/api/v1/counts")[1])
        assert isinstance(counts, dict)
        status = subprocess.run([sys.executable, "-m", "master.cli.status", "--master",
                                 f"http://127.0.0.1:{fed_port}"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                                env={**os.environ, "COLUMNS": "200"})
        assert status.returncode == 0, status.stderr
        assert "masters" in status.stdout and "down for" in status.stdout and "porch" in status.stdout, status.stdout
        looks_right_in_chromium(f"http://127.0.0.1:{fed_port}/")


def looks_right_in_chromium(url: str) -> None:
    """The federated page in a real Chromium: each master's state, every camera's picture, the lost
    master's camera marked, no error on the page."""
    from playwright.sync_api import sync_playwright

    from tests.browser.chromium import CHROMIUM_ARGS, DESKTOP, WAIT_MS, chromium, open_page, screenshot

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = open_page(browser, url, **DESKTOP)
            page.wait_for_selector('#masters li.master.down[data-master="b"]', timeout=WAIT_MS)
            assert "yard" in page.inner_text('#masters li[data-master="b"]')
            for master in ("a", "c"):
                page.wait_for_function(f'() => {{ const i = document.querySelector('
                                       f'\'.camera[data-master="{master}"] img\'); '
                                       'return i && i.complete && i.naturalWidth > 0; }', timeout=WAIT_MS)
            page.wait_for_selector('.camera.unreachable[data-master="b"]', timeout=WAIT_MS)
            assert "master b unreachable" in page.inner_text('.camera[data-master="b"] h3')
            screenshot(page, "federation")
            assert page.errors == [], page.errors
        finally:
            browser.close()


def test_one_worker_process_serves_two_masters_with_a_lease_pool_each(tmp_path):
    """`python -m worker --master URL1,URL2`: each master sees its own worker, leases only its own tasks
    to it, and gets every frame's result; one SIGTERM stops both loops (exit 0, checked by the cluster)."""
    with LocalCluster(log_dir=tmp_path / "logs") as cluster:
        urls, ports = [], free_udp_ports(2)
        for i, port in enumerate(ports):
            url = f"http://127.0.0.1:{free_port()}"
            cluster.spawn(f"master-{i}", "master", "--port", url.rsplit(":", 1)[1])
            assert wait_for_master(url, 30)
            rx = cluster.spawn(f"rx-{i}", "receiver", "--ports", str(port), "--master", url, "--name", f"rx-{i}",
                               "--pipeline", "noop")
            wait_for_log(rx, "receiving UDP", 30)
            urls.append(url)
        cluster.spawn("worker", "worker", "--master", ",".join(urls), "--name", "both", "--threads", "1")
        n = 30
        pubs = [cluster.start_publisher(port, "synthetic:160x120", "--fps", "10", "--max-frames", str(n))
                for port in ports]
        for pub in pubs:
            assert pub.popen.wait(60) == 0
        for i, (url, port) in enumerate(zip(urls, ports)):
            wait_until(lambda url=url, port=port: len(seqs(url, port)) >= n - 1, 60)
            assert len(set(seqs(url, port))) == len(seqs(url, port)), "no duplicate result"
            with MasterClient(url) as c:
                workers = [w["name"] for w in c.get_stats()["workers"] if w["alive"]]
                assert workers == [f"both@{i}"], workers
                assert c.get_results(ports[1 - i], 0, 10)["results"] == [], "nothing of the other master's camera"
