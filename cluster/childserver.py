"""A private server process a test suite or bench starts on a free port (redis-server, mosquitto):
started with its output in a log file, waited for until it answers, and stopped with a signal and,
when it will not go, SIGKILL. cluster/redisserver.py and cluster/mqttbroker.py are built on it."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def start(name: str, args: Sequence[str], log_path: Path, answers: Callable[[], bool], *,
          timeout_s: float = 10.0, log_tail: Callable[[], str] = lambda: "") -> subprocess.Popen:
    """Run `args` with stdout and stderr appended to `log_path`; return once `answers()` is true.
    RuntimeError (with the end of the log) when it exits first or does not answer in time."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(list(args), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {log_tail()}")
        if answers():
            return proc
        time.sleep(0.02)
    end(proc, signal.SIGKILL)
    raise RuntimeError(f"{name} did not answer in {timeout_s}s: {log_tail()}")


def end(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
    """Send `sig` to a running server and wait for it; SIGKILL when it has not gone in `timeout_s`."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
