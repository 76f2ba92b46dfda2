"""Publishers that survive their cameras, against a real RTSP server on loopback (GStreamer's): a camera
that appears late, one that restarts mid-stream, a password that is wrong; frames counted at a real UDP
ingest; the password never in any line the publisher writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from cluster.local import ROOT, free_port, free_udp_ports
from receiver.buffer import FrameBuffer
from receiver.udp import UdpIngest
from tests.conftest import wait_until
from tests.rtspserver import RtspServer

USER = "viewer"
PASSWORD = "p@ss:w/rd-Zq9x"  # characters that must be percent-encoded in a URL
STOP_WITHIN_S = 5.0


class Publisher:
    """`python -m sender` as a process, its stdout and stderr in one log file."""

    def __init__(self, log_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        with open(log_path, "wb") as out:
            self.popen = subprocess.Popen([sys.executable, "-m", "sender", *args], cwd=ROOT,
                                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                          stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout_s: float = 30.0) -> None:
        def seen() -> bool:
            assert self.popen.poll() is None, f"the publisher exited:\n{self.text()}"
            return text in self.text()
        wait_until(seen, timeout_s)

    def stop(self) -> dict:
        """SIGTERM; it must exit 0 within STOP_WITHIN_S. Its final counters."""
        started = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        code = self.popen.wait(STOP_WITHIN_S + 20)
        took = time.monotonic() - started
        assert code == 0 and took < STOP_WITHIN_S, f"exit {code} after {took:.1f}s:\n{self.text()}"
        return json.loads(self.text().strip().splitlines()[-1])

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)


@pytest.fixture
def udp() -> Iterator[tuple[int, UdpIngest]]:
    """A real UDP ingest the publishers send to: (its port, the ingest, to count frames)."""
    [port] = free_udp_ports(1)
    ingest = UdpIngest("127.0.0.1", [port], {port: "noop"}, FrameBuffer(per_port=4))
    ingest.start()
    yield port, ingest
    ingest.stop()
    assert ingest.join(5)


def frames(ingest: UdpIngest, port: int) -> int:
    return ingest.counters()[str(port)].get("frames_complete", 0)


def assert_no_secret(text: str) -> None:
    for form in (PASSWORD, quote(PASSWORD, safe=""), quote(PASSWORD)):
        assert form not in text, f"the password shows as {form!r}"


def test_a_publisher_started_before_its_camera_delivers_once_the_camera_appears(tmp_path, udp):
    port, ingest = udp
    rtsp_port = free_port()
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    pub = Publisher(tmp_path / "publisher.log", "--source", f"rtsp://127.0.0.1:{rtsp_port}/cam", "--username", USER,
                    "--password-file", str(password_file), "--receiver", f"127.0.0.1:{port}", "--retry-max-s", "2",
                    "--log-level", "DEBUG")
    try:
        pub.wait_for("offline: Connection refused")
        with pytest.raises(subprocess.TimeoutExpired):
            pub.popen.wait(6)  # six seconds without its camera: still running, retrying
        assert frames(ingest, port) == 0
        with RtspServer(rtsp_port, tmp_path, user=USER, password=PASSWORD):
            wait_until(lambda: frames(ingest, port) >= 20, 30)
            stats = pub.stop()
    finally:
        pub.kill()
    log = pub.text()
    assert stats["reconnects"] == 1 and stats["outages"] == 1 and stats["offline_s"] >= 6, stats
    assert stats["sent"] >= 20 and frames(ingest, port) >= 20
    assert log.count("WARNING") == 1 and log.count("attempt ") >= 3  # one line per change, retries at DEBUG only
    assert f"rtsp://{USER}:***@127.0.0.1:{rtsp_port}/cam: online again after" in log
    assert_no_secret(log)


def test_a_camera_restarted_mid_stream_is_reconnected_and_frames_resume(tmp_path, udp):
    port, ingest = udp
    server = RtspServer(free_port(), tmp_path, user=USER, password=PASSWORD).start()
    source = f"rtsp://${{CAM_USER}}:${{CAM_PASS}}@127.0.0.1:{server.port}/cam"  # expanded from the environment
    pub = Publisher(tmp_path / "publisher.log", "--source", source, "--receiver", f"127.0.0.1:{port}",
                    "--retry-max-s", "1", "--log-level", "DEBUG", env={"CAM_USER": USER, "CAM_PASS": PASSWORD})
    try:
        wait_until(lambda: frames(ingest, port) >= 10, 30)
        server.stop()
        pub.wait_for("dropped out")
        before = frames(ingest, port)
        server.start()
        wait_until(lambda: frames(ingest, port) >= before + 10, 30)
        stats = pub.stop()
    finally:
        pub.kill()
        server.stop()
    log = pub.text()
    assert stats["reconnects"] == 1 and stats["outages"] == 1, stats
    assert log.count("online again after") == 1 and log.count("dropped out") == 1
    assert_no_secret(log)


def test_a_wrong_password_is_retried_quietly_never_shown_and_sigterm_still_stops_it(tmp_path, udp):
    port, ingest = udp
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")  # the server wants another one
    with RtspServer(free_port(), tmp_path, user=USER, password="the-right-one") as server:
        pub = Publisher(tmp_path / "publisher.log", "--source", f"rtsp://127.0.0.1:{server.port}/cam",
                        "--username", USER, "--password-file", str(password_file), "--receiver",
                        f"127.0.0.1:{port}", "--retry-max-s", "0.5", "--log-level", "DEBUG")
        try:
            pub.wait_for("attempt 4 failed: Server returned 401 Unauthorized")
            stats = pub.stop()  # while it is retrying
        finally:
            pub.kill()
    log = pub.text()
    assert stats["outages"] == 1 and stats["reconnects"] == 0 and "sent" not in stats
    assert log.count("WARNING") == 1 and "offline: Server returned 401 Unauthorized" in log
    assert frames(ingest, port) == 0
    assert_no_secret(log)


def test_a_password_on_the_command_line_is_refused_without_echoing_it(tmp_path):
    out = subprocess.run([sys.executable, "-m", "sender", "--source", f"rtsp://{USER}:{quote(PASSWORD)}@h/cam"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--password-file" in out.stderr
    assert_no_secret(out.stdout + out.stderr)
