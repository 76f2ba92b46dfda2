"""Rules -> events end to end: a real cluster, a real clip, a real webhook receiver."""

from __future__ import annotations

import base64
import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest

from cluster.local import LocalCluster, free_udp_ports
from common.masterclient import MasterClient
from tests.conftest import wait_until
from tests.integration.test_cluster import collect, expected_people


class Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook():
    Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()
    t.join(5)


def get(port: int, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, r.getheader("Content-Type", ""), r.read()


def decode(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def test_a_person_fires_one_event_with_a_snapshot_and_an_empty_hall_fires_none(tmp_path, webhook, person_clip):
    n = 100
    want = expected_people(person_clip, n)
    [port] = free_udp_ports(1)
    rules = tmp_path / "rules.toml"
    rules.write_text(f'[[rule]]\nname = "person-seen"\nports = [{port}]\nlabel = "person"\nmin_score = 0.5\n'
                     f'min_frames = 2\ncooldown_s = 60\nwebhook = "{webhook}"\n')
    with LocalCluster(log_dir=tmp_path / "logs") as cluster:
        cluster.start_master("--rules", str(rules))
        cluster.start_receiver([port], "--pipeline", "person")
        cluster.start_workers(1, "--threads", "2", "--preload", "person")
        pub = cluster.start_publisher(port, str(person_clip), "--fps", "10", "--max-frames", str(n))
        assert pub.popen.wait(60) == 0
        rs = collect(cluster.master_url, port, n, 30)
        assert len(rs) >= 0.8 * n  # (a loaded machine may drop a few frames by design; counted elsewhere)
        wait_until(lambda: Hook.received, 15)
        with MasterClient(cluster.master_url) as c:
            page = c.call("get_events", 0, 100)
        mport = cluster.master_port
        status, ctype, latest = get(mport, f"/ports/{port}/latest.jpg")
        assert status == 200 and ctype == "image/jpeg" and decode(latest).ndim == 3
        [event] = page["events"]  # one event: the cooldown outlasts the clip
        assert event["rule"] == "person-seen" and event["port"] == port and event["snapshot"] is True
        assert all(want[s] > 0 for s in (event["first_seq"], event["last_seq"])), "fired on a frame with nobody"
        status, ctype, snap = get(mport, f"/events/{event['id']}/snapshot.jpg")
        assert status == 200 and ctype == "image/jpeg"
        status, _, body = get(mport, "/events")
        assert status == 200 and [e["id"] for e in json.loads(body)["events"]] == [event["id"]]
        assert get(mport, "/events/nope/snapshot.jpg")[0] == 404
    [hook] = Hook.received
    assert hook["event"]["id"] == event["id"]
    img = decode(base64.b64decode(hook["snapshot_jpeg_base64"]))
    assert decode(snap).shape == img.shape
    # the snapshot shows the person: the event's box lies on the frame and matches a result's detection
    x, y, w, h = hook["event"]["detection"]["box"]
    assert 0 <= x and 0 <= y and x + w <= img.shape[1] and y + h <= img.shape[0] and w * h > 0
    [shown] = [r for r in rs if r["task_id"] == hook["event"]["task_id"]]  # the frame in the snapshot
    assert [x, y, w, h] in [d["box"] for d in shown["detections"]]
    assert want[shown["seq"]] > 0


def test_a_bad_rules_file_is_refused_at_start_with_line_and_reason(tmp_path):
    import subprocess
    import sys

    from cluster.local import ROOT
    bad = tmp_path / "rules.toml"
    bad.write_text('[[rule]]\nname = "x"\nlabel = "person"\nzone = [[0, 0], [1, 1]]\n')
    out = subprocess.run([sys.executable, "-m", "master", "--rules", str(bad), "--port", "0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and f"{bad}:4:" in out.stderr and "zone" in out.stderr, out.stderr
