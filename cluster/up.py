"""`framehive up framehive.toml`: the cluster a config file describes, on this host, supervised.

Starts the master (which reads the file), each receiver by name, the publishers of the cameras this
host publishes and N workers, each as its own `python -m` process. With several `[masters.NAME]`,
`--master NAME` runs that master's share (its receivers, its cameras' publishers, workers for it);
without it every master runs here (one box), each with its own receivers and publishers, and each
worker serves all of them (`python -m worker --master URL1,URL2`: a pull loop and lease pool per
master). A role that dies is restarted with backoff (logged and counted); SIGHUP re-reads the file,
has the master apply it, and starts or stops publishers and receivers to match; SIGINT/SIGTERM stops
everything in order (publishers, receivers, workers, then the master) and exits 0.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.config import MasterLink
from common.errors import ConfigError
from common.hostnames import is_this_host
from common.masterclient import wait_for_master
from master.clusterfile import ClusterFile, load

log = logging.getLogger("framehive.up")

ORDER = ("publisher", "receiver", "worker", "master")  # the stop order: producers first
BACKOFF_FIRST_S, BACKOFF_MAX_S = 1.0, 30.0
STABLE_S = 30.0  # a role that ran this long before dying starts again from the first backoff
STOP_WAIT_S = 20.0


@dataclass
class Role:
    """One supervised process: what to run, and its restart bookkeeping."""

    name: str  # e.g. "publisher hall", "receiver hub", "worker 1"
    kind: str
    argv: list[str]
    popen: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = BACKOFF_FIRST_S
    due_at: float = 0.0  # when a dead role may start again
    wanted: bool = True

    def start(self, env: dict[str, str]) -> None:
        # its own process group: a Ctrl-C at the terminal reaches `up` alone, which stops the roles in order
        self.popen = subprocess.Popen([sys.executable, "-m", *self.argv], env=env, preexec_fn=_die_with_parent,
                                      process_group=0)
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class Up:
    """The supervisor of one host's share of a cluster file."""

    path: str
    workers: int
    only: str = ""  # with several [masters.NAME]: run this one's share ("": all of them)
    host: str = field(default_factory=socket.gethostname)
    roles: dict[str, Role] = field(default_factory=dict)
    restarts: int = 0

    def __post_init__(self) -> None:
        self.file: ClusterFile = load(self.path)  # ConfigError: nothing starts
        if self.only and self.only not in self.file.masters:
            raise ConfigError(f"{self.path}: no master named {self.only!r}" +
                              (f" (masters: {', '.join(self.file.masters)})" if self.file.masters else
                               " (this file has one [master] table: leave --master out)"))
        names = [self.only] if self.only else list(self.file.masters) or [""]
        self.urls = {n: self.file.master_urls()[n] for n in names}  # the masters this host runs
        master = self.file.masters[names[0]] if self.file.masters else self.file.master
        self.url = self.urls[names[0]]
        self.token_args = ["--token-file", master["token_file"]] if master.get("token_file") else []
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._reload = threading.Event()

    # ----- what should run -------------------------------------------------------------------------

    def publishes(self, host: str) -> bool:
        """Whether a camera with this `host` key is published here: any host when empty; else this
        machine's name, its name with a domain, or one of its addresses (for `up` on this machine's
        own name; a `host` given to Up for another machine matches only itself)."""
        if not host or host == self.host:
            return True
        return self.host == socket.gethostname() and is_this_host(host)

    def wanted(self) -> dict[str, Role]:
        """The roles the current file asks of this host."""
        out = {}
        for m in self.urls:
            key = f"master {m}" if m else "master"
            out[key] = Role(key, "master", ["master", "--config", self.path, *(["--name", m] if m else [])])
        for name, spec in self.file.receivers.items():
            if spec.master not in self.urls:
                continue
            argv = ["receiver", "--name", name, "--master", self.urls[spec.master], *self.token_args]
            argv += ["--insecure"] if spec.insecure else []
            argv += ["--key-file", spec.key_file] if spec.key_file else []
            out[f"receiver {name}"] = Role(f"receiver {name}", "receiver", argv)
        for name, cam in self.file.cameras.items():
            if cam.enabled and self.publishes(cam.host) and cam.master in self.urls:
                out[f"publisher {name}"] = Role(f"publisher {name}", "publisher",
                                                ["sender", "--master", self.urls[cam.master], "--camera", name,
                                                 *self.token_args])
        masters = ",".join(self.urls.values())  # each worker serves every master run here, a lease pool each
        for i in range(self.workers):
            out[f"worker {i}"] = Role(f"worker {i}", "worker", ["worker", "--master", masters, "--name",
                                                                 f"{self.host}-w{i}", *self.token_args])
        return out

    # ----- running ----------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())
        self.roles = self.wanted()
        for role in self.roles.values():
            if role.kind == "master":
                role.start(self.env)
        for url in self.urls.values():
            if not wait_for_master(url, 30):
                log.error("the master did not come up at %s", url)
                self.stop_all()
                return 1
        for role in self.roles.values():
            if role.popen is None:
                role.start(self.env)
        log.info("up: %s", ", ".join(self.roles))
        while not stop.wait(0.5):
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            self.tend()
        self.stop_all()
        return 0

    def tend(self) -> None:
        """Restart roles that died, with backoff; a role that ended with 0 (a finite file) is left alone."""
        now = time.monotonic()
        for role in self.roles.values():
            if role.alive() or role.popen is None and role.due_at == 0:
                continue
            if role.popen is not None:
                code = role.popen.returncode
                role.popen = None
                if code == 0 and role.kind == "publisher":
                    role.wanted = False  # its source ended
                    log.info("%s finished", role.name)
                    continue
                role.backoff_s = BACKOFF_FIRST_S if now - role.started_at > STABLE_S else \
                    min(BACKOFF_MAX_S, role.backoff_s * 2)
                role.due_at = now + role.backoff_s
                log.warning("%s exited with %s: restarting in %.0f s", role.name, code, role.backoff_s)
            if role.wanted and now >= role.due_at:
                role.restarts += 1
                self.restarts += 1
                role.due_at = 0
                role.start(self.env)

    def reload(self) -> None:
        """SIGHUP: the master applies the edited file (or refuses it); this host's roles follow."""
        try:
            new = load(self.path, previous=self.file)
        except ConfigError as e:
            log.error("config reload refused, still running the old file: %s", e)
            return
        for url in self.urls.values():
            try:
                reply = MasterLink.load(url, self.token_args[1] if self.token_args else "").client().call(
                    "reload_config")
            except Exception as e:  # noqa: BLE001 - any failure leaves the running cluster as it is
                log.error("the master at %s could not reload: %s", url, e)
                return
            if not reply["ok"]:
                log.error("the master at %s refused the edited file: %s", url, reply["error"])
                return
        changed = {f"publisher {n}" for n, c in new.cameras.items()
                   if n in self.file.cameras and c != self.file.cameras[n]}
        self.file = new
        wanted = self.wanted()
        for name in [n for n in self.roles if n not in wanted or n in changed]:
            self.stop_role(self.roles.pop(name))  # a changed camera's publisher starts again with its new settings
        for name, role in wanted.items():
            if name not in self.roles:
                self.roles[name] = role
                role.start(self.env)
        log.info("reloaded: added %s, removed %s, changed %s", reply.get("added"), reply.get("removed"),
                 reply.get("changed"))

    def stop_role(self, role: Role, *, signalled: bool = False) -> None:
        """SIGTERM (unless already sent: a second one makes a role exit at once, without its clean stop)
        and wait; SIGKILL what does not stop in time."""
        if role.alive():
            if not signalled:
                role.popen.send_signal(signal.SIGTERM)
            try:
                role.popen.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                log.error("%s did not stop in %.0f s: killing it", role.name, STOP_WAIT_S)
                role.popen.kill()
                role.popen.wait(5)

    def stop_all(self) -> None:
        """SIGTERM in order, producers first, each kind in parallel."""
        for kind in ORDER:
            group = [r for r in self.roles.values() if r.kind == kind and r.alive()]
            for role in group:
                role.popen.send_signal(signal.SIGTERM)
            for role in group:
                self.stop_role(role, signalled=True)
        log.info("stopped (%d restart(s) while up)", self.restarts)


def _die_with_parent() -> None:
    """In the child before exec: a SIGTERM when `framehive up` itself dies (even by SIGKILL), so no
    role is left running without its supervisor (Linux prctl PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def default_workers() -> int:
    """Workers for this host: one per core but one (the master and receivers need a little)."""
    return max(1, (os.cpu_count() or 2) - 1)


def path_arg(text: str) -> str:
    return str(Path(text).resolve())
