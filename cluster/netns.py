"""Hosts made of Linux network namespaces, for tests that must cross a real network stack.

`NetLab` creates a hub namespace holding a bridge, and one namespace per host joined to it by a
veth pair (`eth0` inside the host, addresses from a private range that exists only in these
namespaces). Nothing is added to the caller's own namespace. Roles run as `ip netns exec NS python -m
...`, so they are real processes with real sockets; `netem()` adds loss or delay to a host's link.
Where the kernel has no netem (`sch_netem`), `lossy_relay()` drops datagrams in user space instead
(`python -m cluster.netns relay LISTEN TO LOSS`).
`close()` kills what it started and deletes every namespace (their veth ends go with them), even
after a failure half-way through setup. Needs root (CAP_SYS_ADMIN) and iproute2 (`ip`, `tc`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cluster.local import ROOT, Proc, wait_for_log

SUBNET = "10.213.0"  # a /24 that exists only inside the namespaces made here


def _run(*cmd: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")


def unavailable() -> str | None:
    """Why namespaces cannot be used here (None when they can): probes once by making one."""
    missing = [t for t in ("ip", "tc") if shutil.which(t) is None]
    if missing:
        return f"{' and '.join(missing)} not found: install iproute2"
    name = f"fhprobe{secrets.token_hex(3)}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return f"the kernel refuses network namespaces here (`ip netns add` said: {r.stderr.strip()})"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
    return None


def netem_missing() -> str | None:
    """Why `tc ... netem` cannot be used here (None when it can): probes once in a throwaway namespace."""
    name = f"fhprobe{secrets.token_hex(3)}"
    _run("ip", "netns", "add", name)
    try:
        r = subprocess.run(["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
                            "loss", "1%"], capture_output=True, text=True, timeout=30)
        return None if r.returncode == 0 else f"tc netem: {r.stderr.strip()} (no sch_netem in this kernel)"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@dataclass
class Host:
    """One namespace with one address."""

    ns: str
    ip: str
    lab: NetLab

    def spawn(self, name: str, module: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        """`python -m module args...` inside this host, its output in the lab's log_dir/name.log."""
        return self.lab.spawn(self, name, [sys.executable, "-m", module, *args], env)

    def python(self, code: str, timeout_s: float = 30.0) -> object:
        """Run `code` in a fresh interpreter in this host; it prints one JSON value, returned here."""
        env = {**os.environ, **self.lab.env}
        r = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", code], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=timeout_s)
        if r.returncode != 0:
            raise RuntimeError(f"python in {self.ns} failed: {r.stderr[-2000:]}")
        return json.loads(r.stdout)


@dataclass
class NetLab:
    """A bridge and hosts on it; a context manager that always removes what it made."""

    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="framehive-netns-")))
    env: dict[str, str] = field(default_factory=dict)  # given to every process, e.g. FRAMEHIVE_TOKEN
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    hosts: list[Host] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    _namespaces: list[str] = field(default_factory=list)

    def __enter__(self) -> NetLab:
        hub = f"fh{self.tag}hub"
        try:
            self._add_ns(hub)
            _run("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
            _run("ip", "-n", hub, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def hub(self) -> str:
        return self._namespaces[0]

    def _add_ns(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self._namespaces.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")

    def host(self, label: str) -> Host:
        """A new namespace `fh<tag><label>` with eth0 = 10.213.0.<n>/24 on the bridge."""
        n = len(self.hosts) + 1
        ns, peer = f"fh{self.tag}{label}", f"v{self.tag}{n}"  # interface names stay under 16 bytes
        self._add_ns(ns)
        _run("ip", "-n", self.hub, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _run("ip", "-n", self.hub, "link", "set", peer, "master", "br0", "up")
        ip = f"{SUBNET}.{n}"
        _run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        h = Host(ns, ip, self)
        self.hosts.append(h)
        return h

    def netem(self, host: Host, *args: str) -> None:
        """Shape what `host` sends, e.g. netem(h, "loss", "5%")."""
        _run("ip", "netns", "exec", host.ns, "tc", "qdisc", "add", "dev", "eth0", "root", "netem", *args)

    def lossy_relay(self, host: Host, listen_port: int, to: str, loss: float) -> Proc:
        """A UDP relay in `host` on 127.0.0.1:`listen_port` that forwards to `to` (HOST:PORT), dropping
        each datagram with probability `loss`: a lossy link where netem is missing."""
        proc = self.spawn(host, f"relay{listen_port}", [sys.executable, "-m", "cluster.netns", "relay",
                                                         f"127.0.0.1:{listen_port}", to, str(loss)])
        self.wait_log(proc, "relaying", 10)
        return proc

    def spawn(self, host: Host, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / f"{name}.log"
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **self.env, **(env or {})}
        with open(path, "wb") as out:  # `ip netns exec` execs the command: the pid is the python process
            popen = subprocess.Popen(["ip", "netns", "exec", host.ns, *cmd], cwd=ROOT, env=full_env,
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        proc = Proc(name, popen, path)
        self.procs.append(proc)
        return proc

    def wait_log(self, proc: Proc, text: str, timeout_s: float) -> None:
        wait_for_log(proc, text, timeout_s)

    def close(self) -> None:
        """SIGTERM every process (SIGKILL after 15 s), then delete every namespace made."""
        for p in self.procs:
            if p.alive():
                p.popen.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.popen.wait(15)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait(5)
        errors = []
        for ns in reversed(self._namespaces):
            r = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                errors.append(f"{ns}: {r.stderr.strip()}")
        self._namespaces.clear()
        if errors:
            raise RuntimeError("could not delete namespaces: " + "; ".join(errors))


def relay(listen: str, to: str, loss: float) -> None:
    """Forward datagrams from `listen` to `to`, dropping each with probability `loss`; counts on SIGTERM."""
    def addr(text: str) -> tuple[str, int]:
        host, port = text.rsplit(":", 1)
        return host, int(port)

    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    rng = random.Random()
    inbound, outbound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET,
                                                                                         socket.SOCK_DGRAM)
    inbound.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    inbound.bind(addr(listen))
    inbound.settimeout(0.2)
    target = addr(to)
    seen = dropped = 0
    print(f"relaying {listen} -> {to} losing {loss:.1%}", flush=True)
    while not stop:
        try:
            data = inbound.recv(65535)
        except TimeoutError:
            continue
        seen += 1
        if rng.random() < loss:
            dropped += 1
            continue
        outbound.sendto(data, target)
    print(json.dumps({"datagrams": seen, "dropped": dropped}), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m cluster.netns", description="helpers run inside a namespace")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("relay", help="a lossy UDP relay")
    r.add_argument("listen")
    r.add_argument("to")
    r.add_argument("loss", type=float)
    args = ap.parse_args()
    relay(args.listen, args.to, args.loss)
