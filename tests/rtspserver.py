"""A real RTSP server for tests: tests/gst_rtsp_server.py (GStreamer's RTSP server) in a process of its own,
run by Debian's python3, which has the system's `gi` (scripts/bootstrap.sh installs it)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.conftest import wait_until

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).with_name("gst_rtsp_server.py")


class RtspServer:
    """Serves a 320x240 test pattern at rtsp://127.0.0.1:PORT/cam; with `user` and `password` it asks
    for them (HTTP Basic). A context manager that always stops its process."""

    def __init__(self, port: int, log_dir: Path, *, user: str = "", password: str = "", codec: str = "h264",
                 fps: int = 10) -> None:
        self.port, self.log_dir = port, log_dir
        self.log_path = log_dir / "rtsp-server.log"
        self.starts = 0
        self.args = ["--port", str(port), "--path", "/cam", "--codec", codec, "--fps", str(fps)]
        self.env = {**os.environ, "RTSP_TEST_USER": user, "RTSP_TEST_PASSWORD": password}
        self.popen: subprocess.Popen | None = None

    def start(self, timeout_s: float = 20.0) -> RtspServer:
        """Start (again: a restart on the same port) and wait until it listens."""
        self.starts += 1
        self.log_path = self.log_dir / f"rtsp-server-{self.starts}.log"
        with open(self.log_path, "wb") as out:
            self.popen = subprocess.Popen([SYSTEM_PYTHON, str(SCRIPT), *self.args], stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)
        wait_until(lambda: self._ready(), timeout_s)
        return self

    def _ready(self) -> bool:
        assert self.popen is not None
        if self.popen.poll() is not None:
            raise RuntimeError(f"the RTSP server exited ({self.popen.returncode}); is GStreamer's RTSP server "
                               f"installed (make setup)?\n{self.log_path.read_text(errors='replace')}")
        return f"ready {self.port}" in self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
