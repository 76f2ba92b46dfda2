"""The client every role uses to talk to the master: one keep-alive HTTP connection per instance.

This is the one module in common/ that does I/O: receivers, workers and user tools all need it
and roles never import each other. Not thread-safe; give each thread its own instance.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import socket
import xmlrpc.client
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from common import auth, batch
from common.errors import BadRequest, DecodeError, MasterUnavailable, QueueFull, Unauthorized
from common.results import Result
from common.tasks import Lease, Outcome, TaskSpec, lease_from_wire, outcome_to_wire, spec_to_wire

DEFAULT_TIMEOUT_S = 10.0
_RETRYABLE = (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected,
              http.client.CannotSendRequest)


DEFAULT_PORTS = {"http": 8000, "https": 443}  # without a port: the master's own default, or TLS's
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252})")


@dataclass(frozen=True)
class MasterAddress:
    """Where a master is: scheme (http or https), host name or address, and TCP port."""

    scheme: str
    host: str
    port: int

    @property
    def base_url(self) -> str:
        """The URL of the master's root, e.g. http://[::1]:8000 (any path the user gave dropped)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def master_address(url: str) -> MasterAddress:
    """Parse a master URL like http://127.0.0.1:8000 (a path such as /RPC2 is ignored).

    Strict, so a typo fails at start-up with a usage error instead of being retried for ever: the
    scheme must be http or https, the host a host name or an IP address, the port 1..65535 (8000 for
    http and 443 for https when left out). Raises ValueError with a one-line message."""
    shape = f"master URL must look like http://HOST:PORT, got {url!r:.200}"
    if not isinstance(url, str) or not url.isprintable() or " " in url:
        raise ValueError(shape)
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or not _valid_host(parts.hostname):
        raise ValueError(shape)
    try:
        port = parts.port
    except ValueError as e:
        raise ValueError(f"bad port in master URL {url!r:.200}: it must be 1..65535") from e
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"bad port in master URL {url!r:.200}: it must be 1..65535")
    return MasterAddress(parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme])


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return _HOSTNAME.fullmatch(host) is not None


def parse_master_url(url: str) -> tuple[str, int]:
    """Host and port of a master URL (see `master_address`); raises ValueError for a bad one."""
    address = master_address(url)
    return address.host, address.port


class MasterClient:
    """Calls the master's XML-RPC verbs and binary task API over one connection."""

    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, token: str | None = None) -> None:
        self.url = url
        self._headers = {"Authorization": auth.header(token)} if token else {}
        address = master_address(url)
        self.host, self.port = address.host, address.port
        self._connection = http.client.HTTPSConnection if address.scheme == "https" else http.client.HTTPConnection
        self.timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None
        self.backlog = 0  # tasks the master had waiting at the last lease or complete reply

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> MasterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- transport ---------------------------------------------------------------------------

    def _request(self, path: str, body: bytes, ctype: str, *, timeout_s: float | None = None) -> tuple[int, str, bytes]:
        for attempt in (1, 2):
            reused = self._conn is not None
            if self._conn is None:
                self._conn = self._connection(self.host, self.port, timeout=self.timeout_s)
            try:
                self._conn.timeout = timeout_s or self.timeout_s
                if self._conn.sock is not None:
                    self._conn.sock.settimeout(self._conn.timeout)
                self._conn.request("POST", path, body, {"Content-Type": ctype, **self._headers})
                resp = self._conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self.close()
                return resp.status, resp.getheader("Content-Type", ""), data
            except _RETRYABLE as e:
                self.close()
                if not reused or attempt == 2:  # a fresh connection failing is a real failure
                    raise MasterUnavailable(f"master at {self.host}:{self.port}: {e}") from e
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise MasterUnavailable(f"master at {self.host}:{self.port}: {e or type(e).__name__}") from e
        raise AssertionError("unreachable")

    def _check(self, status: int, data: bytes) -> None:
        if status == 200:
            return
        try:
            message = json.loads(data).get("error", "")
        except (ValueError, AttributeError):
            message = data.decode("utf-8", "replace").strip()
        if status == 503:
            raise QueueFull(message)
        if status == 401:
            raise Unauthorized(f"master at {self.host}:{self.port} wants a token: set $FRAMEHIVE_TOKEN or "
                               "--token-file to the master's token")
        if status >= 500:
            raise MasterUnavailable(f"master answered {status}: {message}")
        raise BadRequest(f"master refused the request ({status}): {message}")

    def call(self, verb: str, *params: Any) -> Any:
        """Call an XML-RPC verb; a Fault from the master is raised as xmlrpc.client.Fault."""
        body = xmlrpc.client.dumps(params, verb, encoding="utf-8", allow_none=False).encode()
        status, _, data = self._request("/RPC2", body, "text/xml")
        self._check(status, data)
        try:
            (result,), _ = xmlrpc.client.loads(data, use_builtin_types=False)
        except xmlrpc.client.Fault:
            raise
        except Exception as e:
            raise DecodeError(f"unreadable XML-RPC reply to {verb}: {e}") from e
        return result

    # ----- binary task API ---------------------------------------------------------------------

    def add_tasks(self, items: Sequence[tuple[TaskSpec, bytes]], *, source: str = "",
                  counters: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Queue tasks with their payloads; returns {ids, errors}."""
        meta: dict[str, Any] = {"tasks": [spec_to_wire(s) for s, _ in items]}
        if source and counters is not None:
            meta.update(source=source, counters=dict(counters))
        status, _, data = self._request("/api/v1/tasks", batch.pack(meta, [p for _, p in items]),
                                        batch.CONTENT_TYPE)
        self._check(status, data)
        return json.loads(data)

    def lease(self, worker_id: str, max_n: int, wait_s: float = 0.0) -> list[Lease]:
        """Lease up to `max_n` tasks, long-polling up to `wait_s` seconds."""
        body = json.dumps({"worker": worker_id, "max": max_n, "wait_s": wait_s}).encode()
        status, _, data = self._request("/api/v1/lease", body, "application/json",
                                        timeout_s=self.timeout_s + wait_s)
        self._check(status, data)
        meta, blobs = batch.unpack(data)
        self.backlog = _backlog(meta)
        return [lease_from_wire(t, bytes(b)) for t, b in zip(meta.get("tasks", []), blobs)]

    def complete(self, worker_id: str, outcomes: Iterable[Outcome] = (),
                 failed: Iterable[tuple[str, str, str]] = (), released: Iterable[tuple[str, str]] = (),
                 *, lease_max: int = 0, wait_s: float = 0.0) -> tuple[dict[str, Any], list[Lease]]:
        """Report results, failures (task_id, token, error) and hand-backs (task_id, token) at once,
        and lease up to `lease_max` new tasks in the same request; returns (reply, leases)."""
        outcomes = list(outcomes)
        meta = {"worker": worker_id, "outcomes": [outcome_to_wire(o) for o in outcomes],
                "failed": [{"task_id": t, "token": k, "error": e} for t, k, e in failed],
                "released": [{"task_id": t, "token": k} for t, k in released],
                "lease": {"max": lease_max, "wait_s": wait_s}}
        blobs = [o.image for o in outcomes] if any(o.image for o in outcomes) else []
        status, _, data = self._request("/api/v1/complete", batch.pack(meta, blobs), batch.CONTENT_TYPE,
                                        timeout_s=self.timeout_s + wait_s)
        self._check(status, data)
        reply, blobs = batch.unpack(data)
        self.backlog = _backlog(reply)
        return reply, [lease_from_wire(t, bytes(b)) for t, b in zip(reply.pop("tasks", []), blobs)]

    def take_job_results(self, job_id: str, max_n: int, wait_s: float = 0.0,
                         ack: Sequence[str] = ()) -> list[tuple[Result, bytes]]:
        """Finished tiles of a file job with their output images, waiting up to `wait_s` for one. `ack`:
        the task ids the previous call returned (the master keeps them until acknowledged)."""
        body = json.dumps({"job_id": job_id, "max": max_n, "wait_s": wait_s, "ack": list(ack)}).encode()
        status, _, data = self._request("/api/v1/jobs/take", body, "application/json",
                                        timeout_s=self.timeout_s + wait_s)
        self._check(status, data)
        meta, blobs = batch.unpack(data)
        return [(Result.from_wire(r), bytes(b)) for r, b in zip(meta.get("results", []), blobs)]

    def cancel_job(self, job_id: str) -> int:
        """Drop a file job's tasks and results on the master."""
        status, _, data = self._request("/api/v1/jobs/cancel", json.dumps({"job_id": job_id}).encode(),
                                        "application/json")
        self._check(status, data)
        return int(json.loads(data)["cancelled"])

    # ----- control verbs -----------------------------------------------------------------------

    def register_worker(self, name: str) -> dict[str, Any]:
        """Register; returns {worker_id, lease_s, heartbeat_s}."""
        return self.call("register_worker", name)

    def heartbeat(self, worker_id: str, stats: Mapping[str, Any],
                  held: Iterable[str] | None = None) -> dict[str, Any]:
        """Report liveness (and the task ids in hand); returns {known, renewed, reclaimed}."""
        if held is None:
            return self.call("heartbeat", worker_id, dict(stats))
        return self.call("heartbeat", worker_id, dict(stats), list(held))

    def heartbeats(self, beats: Sequence[tuple[str, Mapping[str, Any], Iterable[str] | None]],
                   shared: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Heartbeats of several workers of this process in one request: (worker_id, its own stats, task
        ids in hand) each, `shared` stats once for all; one {known, renewed, reclaimed} per beat."""
        body = json.dumps({"stats": dict(shared) if shared is not None else None,
                           "beats": [{"worker": w, "stats": dict(s), "held": None if h is None else list(h)}
                                     for w, s, h in beats]}).encode()
        status, _, data = self._request("/api/v1/heartbeats", body, "application/json")
        self._check(status, data)
        return json.loads(data)["replies"]

    def get_results(self, port: int, since: int = 0, limit: int = 100, incarnation: str = "") -> dict[str, Any]:
        """One page of a camera's results: {results, next, missed, incarnation[, restarted]}; pass the
        previous page's `incarnation` to learn of a master restart instead of skipping results."""
        if incarnation:
            return self.call("get_results", port, since, limit, incarnation)
        return self.call("get_results", port, since, limit)

    def get_stats(self) -> dict[str, Any]:
        """The master's counters, workers and sources."""
        return self.call("get_stats")


def _backlog(reply: Any) -> int:
    """The master's waiting tasks from a lease or complete reply (0 from a master that does not say)."""
    n = reply.get("backlog", 0) if isinstance(reply, dict) else 0
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else 0


def wait_for_master(url: str, timeout_s: float) -> bool:
    """True once the master answers /healthz within `timeout_s` (used by launchers and tests, which
    start masters speaking plain http)."""
    import time

    host, port = parse_master_url(url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False
