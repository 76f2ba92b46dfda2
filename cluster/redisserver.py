"""A real redis-server on a free loopback port, for the Celery backend's tests, bench and demo.

Started as a child process with persistence off (a test's broker needs no disk) unless a data
directory is given, and with no eviction policy: a broker must never drop messages to make room.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from cluster import childserver
from cluster.local import free_port


class RedisServer:
    """`redis-server` bound to 127.0.0.1 on its own port; a context manager."""

    def __init__(self, port: int = 0, *, data_dir: Path | None = None, maxmemory_mb: int = 256) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise FileNotFoundError("redis-server is not installed: run `make setup` (it installs Debian's "
                                    "redis-server), or `apt-get install redis-server`")
        self.port = port or free_port()
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="framehive-redis-"))
        self.maxmemory_mb = maxmemory_mb
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.data_dir), "--maxmemory", f"{self.maxmemory_mb}mb",
                "--maxmemory-policy", "noeviction", "--protected-mode", "yes", "--loglevel", "warning"]
        self.proc = childserver.start("redis-server", args, self.data_dir / "redis.log", self.ping,
                                      timeout_s=timeout_s, log_tail=self.log_text)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); its data is gone, as persistence is off."""
        childserver.end(self.proc)
        self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        """Stop, stay down `down_s` seconds, start again on the same port."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def log_text(self) -> str:
        path = self.data_dir / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""
