"""The job server's own limits: jobs at once, spooled bytes, uploads that stall, files a killed
predecessor left behind. Each refusal is a clear error code the client can act on (busy, idle)."""

from __future__ import annotations

import json
import socket
import struct

import pytest

from cluster.local import free_port
from common import jobproto
from receiver.jobs import JobConfig, JobServerThread
from receiver.jobs import server as jobs_server


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs_server, "UPLOAD_STALL_S", 1.0)
    port = free_port()
    stray = tmp_path / f"framehive-jobs-{port}"
    stray.mkdir()
    (stray / "framehive-dead-in").write_bytes(b"x" * 1000)  # what a SIGKILLed receiver left
    t = JobServerThread("127.0.0.1", port, JobConfig(master_url="http://127.0.0.1:9", spool_dir=tmp_path,
                                                     max_jobs=2, max_spool_bytes=1500))
    t.start()
    assert t.ready.wait(10) and t.error is None
    t.stray = stray
    yield t
    t.stop()
    t.join(10)


def send(sock: socket.socket, msg: dict) -> None:
    sock.sendall(jobproto.encode(msg))


def recv(sock: socket.socket) -> dict:
    (n,) = struct.unpack(">I", sock.recv(4, socket.MSG_WAITALL))
    return json.loads(sock.recv(n, socket.MSG_WAITALL))


def handshake(port: int, size: int) -> tuple[socket.socket, dict]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    send(sock, {"type": "handshake", "version": 1, "protocol": "stream", "tiles": "1x1", "filters": "blur:3",
                "codec": "h264", "name": "in.mp4", "preview": False, "size": size, "sha256": "0" * 64})
    return sock, recv(sock)


def test_spool_files_of_a_dead_predecessor_are_removed_at_start(server):
    assert list(server.stray.iterdir()) == []


def test_jobs_and_spooled_bytes_are_capped(server):
    port = server.server.port
    first, a = handshake(port, 1000)
    assert a["type"] == "accepted"
    second, b = handshake(port, 1000)  # 2000 bytes spooled would pass the 1500 quota
    assert b["type"] == "error" and b["code"] == "busy" and "spool" in b["message"]
    third, c = handshake(port, 400)
    assert c["type"] == "accepted"
    fourth, d = handshake(port, 10)  # a third job at once
    assert d["type"] == "error" and d["code"] == "busy" and "jobs are running" in d["message"]
    for s in (first, second, third, fourth):
        s.close()


def test_an_upload_that_only_sends_empty_messages_is_refused_as_idle(server):
    sock, reply = handshake(server.server.port, 1000)
    assert reply["type"] == "accepted"
    sock.sendall(jobproto.data_header(10) + b"0123456789")
    answer = None
    for _ in range(200):  # an empty data message every 20 ms: never idle by the per-message timeout
        try:
            sock.sendall(jobproto.data_header(0))
        except OSError:
            break
        sock.settimeout(0.02)
        try:
            answer = recv(sock)
            if answer["type"] == "error":
                break
        except (TimeoutError, struct.error):
            continue
    sock.settimeout(10)
    while answer is None or answer["type"] != "error":
        answer = recv(sock)
    assert answer["code"] == "idle" and "no upload bytes" in answer["message"]
    sock.close()


def test_trickling_preview_clients_give_their_slots_back(server, monkeypatch):
    """A byte every fraction of a second keeps a per-read timeout happy for ever: with every preview slot
    held so, nobody could watch a job. A request's whole head has a deadline; past it the slot is freed."""
    import threading
    import time
    import urllib.request

    from receiver.jobs import preview

    monkeypatch.setattr(preview, "HEAD_TIMEOUT_S", 1.0)
    httpd = preview.PreviewServer(("127.0.0.1", 0), server.server, max_connections=4)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    port = httpd.server_address[1]
    tricklers = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
    try:
        for s in tricklers:
            s.sendall(b"GET /progress.json HTTP/1.1\r\n")
        served, deadline = False, time.monotonic() + 10
        while not served and time.monotonic() < deadline:
            for s in tricklers:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/progress.json", timeout=2) as r:
                    served = r.status == 200
            except OSError:
                time.sleep(0.3)
        assert served, "a new preview client got in once the tricklers' head deadline passed"
    finally:
        for s in tricklers:
            s.close()
        httpd.shutdown()
        httpd.server_close()
