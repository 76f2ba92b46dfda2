"""The federation's processes: a poller per master, and one HTTP server (dashboard, JSON, XML-RPC, proxy).

Read-only by design: it never queues work or changes a master, so losing it loses a view, never a
result, and several can run at once. Each master is polled on its own thread (a master that hangs
delays only its own line), with the cluster's token.

    GET  /                      the dashboard page (the masters' own files), reading:
    GET  /api/v1/dashboard      every master's document merged (master/federation/view.py)
    GET  /api/v1/counts         every camera's counts, from its master
    GET  /api/v1/masters        each master's health
    GET  /api/v1/results?camera=NAME[&since=&limit=]   a camera's results page, from its master
                                (passed-through answers name it in an X-Framehive-Master header)
    GET  /m/<master>/...        a master's pictures, snapshots, clips and event states, passed through
    POST /RPC2                  XML-RPC: get_results(camera, since, limit), get_counts(), list_masters(),
                                get_stats() (each master's, or its error)
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import threading
import time
import xmlrpc.client
from collections.abc import Sequence
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

from common import auth
from common.errors import BadRequest
from common.masterclient import master_address
from common.runtime import Component, is_loopback
from master.api.httpserver import LOOPBACK_NAMES, foreign_host
from master.api.rpc import declares_dtd, xmlrpc_safe
from master.federation.view import MasterState, cameras_of, health, merge_counts, merge_dashboards
from master.observe import dashboard

log = logging.getLogger(__name__)

POLL_S = 1.0
TIMEOUT_S = 3.0
PROXY_CHUNK = 256 * 1024
MAX_PROXY_BYTES = 256 * 2**20
MAX_BODY_BYTES = 64 * 1024  # an XML-RPC call here carries a camera name and two numbers
PASSED = re.compile(r"/m/([a-z0-9][a-z0-9_-]{0,47})(/(?:ports/\d{1,5}/latest\.jpg|events/[A-Za-z0-9_.-]{1,64}/"
                    r"(?:snapshot\.jpg|clip\.mp4)|api/v1/events/[A-Za-z0-9_.-]{1,64}))")
DASHBOARD_FILE = re.compile(r"/dashboard/([a-z]+\.[a-z]+)")


def get_json(state: MasterState, path: str, token: str | None) -> Any:
    """GET a master's JSON document (OSError, ValueError or http.client errors when it cannot)."""
    address = master_address(state.url)
    conn = http.client.HTTPConnection(address.host, address.port, timeout=TIMEOUT_S)
    try:
        conn.request("GET", path, headers={"Authorization": auth.header(token)} if token else {})
        reply = conn.getresponse()
        body = reply.read(64 * 2**20)
        if reply.status != 200:
            raise ValueError(f"HTTP {reply.status} from {path}: {body[:120].decode(errors='replace')}")
        return json.loads(body)
    finally:
        conn.close()


class Federation(Component):
    """The masters' states, kept fresh by one polling thread per master."""

    thread_name = "federation"

    def __init__(self, masters: Sequence[tuple[str, str]], token: str | None, *, poll_s: float = POLL_S) -> None:
        super().__init__()
        self.masters = [MasterState(name, url) for name, url in masters]
        self.token, self.poll_s = token, poll_s
        self.lock = threading.Lock()

    def loops(self) -> list:
        return [(f"poll-{m.name}", lambda m=m: self._poll_loop(m)) for m in self.masters]

    def _poll_loop(self, m: MasterState) -> None:
        while not self._stop.is_set():
            self.poll_once(m)
            self._stop.wait(self.poll_s)

    def poll_once(self, m: MasterState) -> None:
        try:
            doc = get_json(m, "/api/v1/dashboard", self.token)
            counts = get_json(m, "/api/v1/counts", self.token)
        except (OSError, ValueError, http.client.HTTPException) as e:
            with self.lock:
                first = m.down_since is None  # the first failure since it last answered (or ever)
                m.failed(f"{type(e).__name__}: {e}", time.time())
            if first:
                log.warning("master %s (%s) does not answer: %s; its cameras are shown as unreachable", m.name,
                            m.url, e)
            return
        with self.lock:
            back = m.error != "" and m.seen_at is not None
            m.answered(doc, counts, time.time())
        if back:
            log.info("master %s (%s) answers again", m.name, m.url)

    def dashboard(self) -> dict[str, Any]:
        with self.lock:
            return merge_dashboards(self.masters, time.time())

    def counts(self) -> dict[str, Any]:
        with self.lock:
            return merge_counts(self.masters)

    def health(self) -> list[dict[str, Any]]:
        with self.lock:
            now = time.time()
            return [health(m, now) for m in self.masters]

    def owner(self, camera: str) -> tuple[MasterState, int]:
        with self.lock:
            found = cameras_of(self.masters).get(camera)
        if found is None:
            raise BadRequest(f"no camera named {camera!r} on any master that has answered")
        return found

    def master(self, name: str) -> MasterState | None:
        return next((m for m in self.masters if m.name == name), None)

    def results(self, camera: str, since: int = 0, limit: int = 100) -> dict[str, Any]:
        """A camera's page of results, from its master (XML-RPC, as a user calls get_results)."""
        m, port = self.owner(camera)
        if not m.up:
            raise BadRequest(f"camera {camera!r} is on master {m.name}, which does not answer ({m.error})")
        address = master_address(m.url)
        headers = [("Authorization", auth.header(self.token))] if self.token else []
        proxy = xmlrpc.client.ServerProxy(f"http://{address.host}:{address.port}/RPC2", allow_none=False,
                                          headers=headers)
        page = proxy.get_results(port, int(since), int(limit))
        return {**page, "camera": camera, "master": m.name}

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m in self.masters:
            try:
                out[m.name] = get_json(m, "/api/v1/stats", self.token)
            except (OSError, ValueError, http.client.HTTPException) as e:
                out[m.name] = {"error": f"{type(e).__name__}: {e}"}
        return out


class _Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = ("/RPC2",)
    server: FederationServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None or auth.allowed(self.headers.get("Authorization"), token):
            return True
        auth.refuse(self)
        return False

    def _host_allowed(self) -> bool:
        """Without a token on loopback, only this machine's names (a page on another site whose DNS
        name points at 127.0.0.1 must not read the cameras: DNS rebinding), as on the master."""
        if not self.server.host_check:
            return True
        host = foreign_host(self.headers.get("Host", ""), self.server.allowed_hosts)
        if host is None:
            return True
        self._send(421, "text/plain", f"this view answers to localhost only, not {host[:60]!r} "
                   "(start it with --allowed-host NAME, or with a token)\n".encode())
        self.close_connection = True
        return False

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if not self._host_allowed() or not self._authorized():
            return
        try:
            size = int(self.headers.get("Content-Length", ""))
        except ValueError:
            size = -1
        if not 0 <= size <= MAX_BODY_BYTES:
            self._send(413, "text/plain", f"a request body here is 0..{MAX_BODY_BYTES} bytes with a "
                       "Content-Length\n".encode())
            self.close_connection = True
            return
        super().do_POST()

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        url = urlsplit(self.path)
        fed = self.server.federation
        if url.path == "/healthz":
            self._send(200, "text/plain", b"ok\n")
        elif not self._host_allowed() or not self._authorized():
            return
        elif url.path == "/":
            self._static("index.html")
        elif m := DASHBOARD_FILE.fullmatch(url.path):
            self._static(m[1])
        elif url.path == "/api/v1/dashboard":
            self._json(fed.dashboard())
        elif url.path == "/api/v1/counts":
            self._json(fed.counts())
        elif url.path == "/api/v1/masters":
            self._json(fed.health())
        elif url.path == "/api/v1/results":
            self._results(parse_qs(url.query))
        elif m := PASSED.fullmatch(url.path):
            self._pass(m[1], m[2])
        else:
            self._send(404, "text/plain", f"no such page: {url.path}\n".encode())

    def _results(self, query: dict[str, list[str]]) -> None:
        try:
            camera = query["camera"][0]
            since, limit = int(query.get("since", ["0"])[0]), int(query.get("limit", ["100"])[0])
            owner, port = self.server.federation.owner(camera)
        except (KeyError, ValueError, BadRequest) as e:
            self._send(400, "application/json", json.dumps({"error": str(e) or "use ?camera=NAME"}).encode())
            return
        self._pass(owner.name, f"/api/v1/results?port={port}&since={since}&limit={limit}")

    def _pass(self, name: str, path: str) -> None:
        """Hand a master's answer on as it comes (byte ranges too: browsers seek in clips with them)."""
        m = self.server.federation.master(name)
        if m is None:
            self._send(404, "text/plain", f"no master named {name!r}\n".encode())
            return
        address = master_address(m.url)
        conn = http.client.HTTPConnection(address.host, address.port, timeout=TIMEOUT_S * 3)
        headers = {"Authorization": auth.header(self.server.federation.token)} if self.server.federation.token else {}
        if self.headers.get("Range"):
            headers["Range"] = self.headers["Range"]
        try:
            conn.request("GET", quote(path, safe="/?&=.-_"), headers=headers)
            reply = conn.getresponse()
            size = int(reply.getheader("Content-Length") or 0)
            if size > MAX_PROXY_BYTES:
                self._send(502, "text/plain", f"master {name} answered {size} bytes: over the limit\n".encode())
                return
            self.send_response(reply.status)
            for h in ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges"):
                if reply.getheader(h):
                    self.send_header(h, reply.getheader(h))
            self.send_header("X-Framehive-Master", name)  # whose answer this is
            self.end_headers()
            left = size
            while left > 0:
                chunk = reply.read(min(PROXY_CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)
        except (OSError, http.client.HTTPException) as e:
            self._send(502, "text/plain", f"master {name} ({m.url}) does not answer: {e}\n".encode())
        finally:
            conn.close()

    def _static(self, name: str) -> None:
        found = dashboard.static_file(name)
        if found is None:
            self._send(404, "text/plain", f"no such page: /dashboard/{name}\n".encode())
        else:
            self._send(200, *found)

    def _json(self, obj: Any) -> None:
        self._send(200, "application/json", json.dumps(obj, allow_nan=False).encode())

    def _send(self, status: int, ctype: str, body: bytes, *, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


class FederationServer(ThreadingMixIn, SimpleXMLRPCServer):
    """The federation's one port; a thread per connection."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], federation: Federation, *, token: str | None,
                 allowed_hosts: Sequence[str] = ()) -> None:
        super().__init__(address, requestHandler=_Handler, logRequests=False, allow_none=False)
        self.federation, self.token = federation, token
        self.host_check = token is None and is_loopback(address[0])
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts) | LOOPBACK_NAMES
        # XML-RPC has no None and no integer past 32 bits: what the masters' JSON holds is made to fit
        for verb, method in (("get_results", federation.results), ("get_counts", federation.counts),
                             ("list_masters", federation.health), ("get_stats", federation.stats)):
            self.register_function(lambda *a, method=method: xmlrpc_safe(method(*a)), verb)

    def _marshaled_dispatch(self, data: bytes, dispatch_method: Any = None, path: Any = None) -> bytes:
        """No DOCTYPE or entity declarations (expat would expand entities 100-fold), as on the master."""
        if declares_dtd(data):
            fault = xmlrpc.client.Fault(1, "XML-RPC requests must not declare a DOCTYPE or entities")
            return xmlrpc.client.dumps(fault, methodresponse=True, allow_none=False).encode()
        return super()._marshaled_dispatch(data, dispatch_method, path)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        sock.settimeout(30.0)  # a client that stalls mid-request frees its thread
        return sock, addr
