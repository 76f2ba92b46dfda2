"""Local ingest end to end with real processes: ffmpeg -> named pipe -> publisher -> unix socket ->
receiver -> master -> worker (noop) -> results."""

from __future__ import annotations

import json
import signal

from cluster.local import LocalCluster, wait_for_log
from tests.conftest import wait_until
from tests.integration.test_fifo_source import ffmpeg_into, finish

PORT = 6001  # the camera's port: a name for its results, no UDP port is opened


def test_ffmpeg_through_a_pipe_and_a_unix_socket_to_results(tmp_path):
    fifo, sock = tmp_path / "cam.mjpeg", tmp_path / "cam.sock"
    with LocalCluster(log_dir=tmp_path / "logs") as c:
        c.start_master()
        receiver = c.spawn("receiver", "receiver", "--ports", "none", "--unix-socket", f"{sock}={PORT}",
                           "--pipeline", "noop", "--master", c.master_url, "--name", "receiver")
        wait_for_log(receiver, f"receiving no UDP, unix socket {sock} for port {PORT}", 15)
        c.start_workers(1, "--threads", "1")
        pub = c.spawn("publisher", "sender", "--source", f"fifo:{fifo}", "--transport", "unix",
                      "--unix-socket", str(sock))
        wait_for_log(pub, "connecting", 15)
        finish(ffmpeg_into(fifo, "testsrc=size=320x240:rate=10", 40, "-f", "mjpeg", "-q:v", "5"))
        wait_for_log(pub, "dropped out: the writer closed the pipe", 15)
        pub.popen.send_signal(signal.SIGTERM)
        assert pub.popen.wait(20) == 0, pub.log_text()
        sent = json.loads(pub.log_text().strip().splitlines()[-1])
        assert sent["sent"] >= 30 and sent["connects"] == 1, sent
        with c.client() as client:
            page = wait_until(lambda: (p := client.get_results(PORT, 0, 1000))["next"] >= sent["sent"] and p, 30)
            rx = wait_until(lambda: client.get_stats()["sources"]["receiver"]["ports"].get(str(PORT), {})
                            .get("forwarded") == sent["sent"] and client.get_stats()["sources"]["receiver"], 30)
        results = page["results"]
        assert sorted(r["seq"] for r in results) == list(range(sent["sent"]))  # every frame sent, once
        assert all(r["status"] == "ok" and r["port"] == PORT for r in results)
        counters = rx["ports"][str(PORT)]
        assert counters["frames_complete"] == sent["sent"] and counters["malformed"] == 0, counters
        assert counters["connections"] == 1
        assert all(r["latency_ms"] > 0 for r in results)
    assert not sock.exists()  # the receiver removed its socket file when it stopped
