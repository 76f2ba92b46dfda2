"""The master's one HTTP port: XML-RPC at /RPC2, the binary task API at /api/v1/*, the dashboard at /,
Prometheus metrics at /metrics, status pages.

Threaded, HTTP/1.1 keep-alive, no gzip, a request-size limit checked before any body is read,
a cap on concurrent connections, and an idle timeout so a silent client cannot hold a thread.
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import os
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from http.server import HTTPServer
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xmlrpc.server import SimpleXMLRPCRequestHandler

from common import auth
from common.deadlineio import DeadlineReader
from common.errors import BadRequest, DecodeError, FramehiveError, QueueFull
from common.runtime import is_loopback
from master.api import taskapi
from master.api.rpc import MasterRpc, RpcDispatcher
from master.core.service import MasterService
from master.observe import dashboard, metrics

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_MAX_CONNECTIONS_PER_HOST = 64  # one host's share of the slots (a host runs a few workers, each 1-2)
IDLE_TIMEOUT_S = 60.0
HEAD_TIMEOUT_S = 15.0  # a kept-alive connection's wait for its next request, and that request's whole head
RESERVE_SLOTS = 16  # connections taken when every slot is busy: one request each, head within RESERVE_HEAD_S
RESERVE_HEAD_S = 2.0
# When every slot and every reserve slot is held, a newcomer takes the slot of the connection that has
# waited longest for a request head (an idle keep-alive, or a head trickling in), if it has waited this
# long: many addresses each holding their share of idle sockets then cannot keep everyone else out.
EVICT_AFTER_S = 1.0
BODY_TIMEOUT_S = 60.0  # a request's whole body (32 MiB at half a MB/s)
WRITE_BUFFER_BYTES = 64 * 1024  # a reply up to this size goes out in one send


EVENT_SNAPSHOT = re.compile(r"/events/([A-Za-z0-9_.-]{1,64})/snapshot\.jpg")
EVENT_CLIP = re.compile(r"/events/([A-Za-z0-9_.-]{1,64})/clip\.mp4")
EVENT_ONE = re.compile(r"/api/v1/events/([A-Za-z0-9_.-]{1,64})")
RANGE = re.compile(r"bytes=(\d*)-(\d*)")
FILE_CHUNK = 256 * 1024
LATEST_FRAME = re.compile(r"/ports/(\d{1,5})/latest\.jpg")
DASHBOARD_FILE = re.compile(r"/dashboard/([a-z]+\.[a-z]+)")

Route = Callable[[MasterService, bytes], tuple[int, str, bytes]]
POST_ROUTES: dict[str, Route] = {
    "/api/v1/tasks": taskapi.add,
    "/api/v1/lease": taskapi.lease,
    "/api/v1/complete": taskapi.complete,
    "/api/v1/heartbeats": taskapi.heartbeats,
    "/api/v1/jobs/take": taskapi.job_take,
    "/api/v1/jobs/cancel": taskapi.job_cancel,
}


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(header: str) -> str:
    """The name in a Host header, lower case, without its port or IPv6 brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header[1:]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def loopback_address(host: str) -> bool:
    """Whether `host` is a loopback IP address written as one (127.0.0.5, ::1): not a name that merely
    starts like one (127.0.0.1.nip.io, or any name an attacker's DNS points at 127.0.0.1)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def foreign_host(header: str, allowed: frozenset[str]) -> str | None:
    """The name in a Host header when it is neither a loopback address nor one of `allowed` (a page
    of another site reaching us through a DNS-rebound name), else None."""
    host = host_name(header)
    return None if host in allowed or loopback_address(host) else host


class MasterHandler(SimpleXMLRPCRequestHandler):
    """Routes one connection's requests; XML-RPC goes to the dispatcher unchanged."""

    protocol_version = "HTTP/1.1"
    rpc_paths = ("/RPC2", "/RPC2/")
    encode_threshold = None  # gzip costs 1-1.4 ms per 40 KB reply and buys nothing on a LAN
    timeout = IDLE_TIMEOUT_S
    # A reply's head and body leave in one write (flushed at the end of each request), not two: one
    # send per reply instead of two, and no small second segment for Nagle to hold back.
    wbufsize = WRITE_BUFFER_BYTES
    disable_nagle_algorithm = True
    server: MasterHTTPServer

    _date: tuple[int, str] = (0, "")

    def setup(self) -> None:
        super().setup()
        self._reader = DeadlineReader(self.connection, IDLE_TIMEOUT_S)
        self.rfile = io.BufferedReader(self._reader)
        self.reserved = self.server.is_reserved(self.connection)

    def handle_one_request(self) -> None:
        head_s = RESERVE_HEAD_S if self.reserved else self.server.head_timeout_s
        self._reader.deadline = time.monotonic() + head_s
        self.server.waiting_for_head(self.connection, True)
        super().handle_one_request()
        if self.reserved:  # a reserve slot serves one request: it is room for clients that know what they
            self.close_connection = True  # want (workers, operators with the token), not a place to idle

    def handle_expect_100(self) -> bool:
        ok = super().handle_expect_100()
        self.wfile.flush()  # the client waits for the 100 Continue before it sends the body
        return ok

    def parse_request(self) -> bool:
        self.server.waiting_for_head(self.connection, False)
        ok = super().parse_request()
        self._reader.deadline = time.monotonic() + self.server.body_timeout_s  # the head is in: the body's turn
        return ok

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header, formatted once per second (formatting it costs ~7% of a request)."""
        if timestamp is not None:
            return super().date_time_string(timestamp)
        now = int(time.time())
        if MasterHandler._date[0] != now:
            MasterHandler._date = (now, super().date_time_string(now))
        return MasterHandler._date[1]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def _authorized(self) -> bool:
        """With a token set, a request must present it; /healthz stays open for health checks."""
        token = self.server.token
        if token is None or auth.allowed(self.headers.get("Authorization"), token):
            return True
        self.server.service.errors["unauthorized"] += 1
        auth.refuse(self)
        return False

    def _same_origin(self) -> bool:
        """A browser posting from another site's page (with the user's cached dashboard login) is refused:
        browsers name the page's origin, which must be this server."""
        origin = self.headers.get("Origin")
        if not origin or urlsplit(origin).netloc == self.headers.get("Host", ""):
            return True
        self.server.service.errors["cross_origin"] += 1
        self._send(403, "text/plain", b"cross-origin requests are refused\n", close=True)
        return False

    def _host_allowed(self) -> bool:
        """On a tokenless loopback master, refuse a Host that is not this machine (DNS rebinding)."""
        if not self.server.host_check:
            return True
        host = foreign_host(self.headers.get("Host", ""), self.server.allowed_hosts)
        if host is None:
            return True
        self.server.service.errors["bad_host"] += 1
        self._send(421, "text/plain", f"this master answers to localhost only, not {host[:60]!r} "
                   "(start it with --allowed-host NAME, or with a token)\n".encode(), close=True)
        return False

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        path = urlsplit(self.path).path
        if (not self._host_allowed() or not self._same_origin() or not self._authorized()
                or not self._body_allowed()):
            return
        if path in self.rpc_paths:
            super().do_POST()
            return
        route = POST_ROUTES.get(path)
        if route is None:
            self._drain()
            self._send(404, "text/plain", f"no such endpoint: POST {path}\n".encode())
            return
        body = self._read_body()
        if body is None:
            return
        self._send(*self._call(route, body))

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        url = urlsplit(self.path)
        svc = self.server.service
        if url.path == "/healthz":
            self._send(200, "text/plain", b"ok\n")
        elif not self._host_allowed() or not self._authorized():
            return
        elif url.path == "/api/v1/stats":
            self._json(200, svc.stats())
        elif url.path == "/api/v1/counts":
            self._json(200, svc.counts())
        elif url.path == "/":
            self._static("index.html")
        elif m := DASHBOARD_FILE.fullmatch(url.path):
            self._static(m[1])
        elif url.path == "/api/v1/dashboard":
            self._json(200, dashboard.overview(svc, self.server.history))
        elif url.path == "/metrics":
            self._send(200, metrics.CONTENT_TYPE, metrics.exposition(self.server.metrics))
        elif url.path == "/api/v1/results":
            self._send(*self._call(lambda s, _: taskapi.results_get(s, parse_qs(url.query)), b""))
        elif url.path in ("/events", "/api/v1/events"):
            self._send(*self._call(lambda s, _: taskapi.events_get(s, parse_qs(url.query)), b""))
        elif m := EVENT_SNAPSHOT.fullmatch(url.path):
            self._jpeg(svc.event_snapshot(m[1]), f"no snapshot for event {m[1]}")
        elif m := EVENT_CLIP.fullmatch(url.path):
            self._clip(m[1])
        elif m := EVENT_ONE.fullmatch(url.path):
            event = svc.event(m[1])
            if event is None:
                self._send(404, "application/json", _err(f"no event {m[1]} (unknown, or older than the log keeps)"))
            else:
                self._json(200, event)
        elif m := LATEST_FRAME.fullmatch(url.path):
            self._jpeg(svc.latest_frame(int(m[1])), f"no processed frame yet on port {m[1]}")
        else:
            self._send(404, "text/plain", f"no such page: {url.path}\n".encode())

    def _call(self, route: Route, body: bytes) -> tuple[int, str, bytes]:
        svc = self.server.service
        try:
            return route(svc, body)
        except QueueFull as e:
            svc.errors["queue_full"] += 1
            return 503, "application/json", _err(str(e))
        except (BadRequest, DecodeError, FramehiveError) as e:
            svc.errors["bad_request"] += 1
            return 400, "application/json", _err(str(e))
        except Exception:
            svc.errors["internal"] += 1
            log.exception("%s failed", self.path)
            return 500, "application/json", _err("internal error (details in the master's log)")

    def _body_allowed(self) -> bool:
        raw = self.headers.get("Content-Length")
        if raw is None or not raw.isdigit():
            self.server.service.errors["no_length"] += 1
            self._send(411, "text/plain", b"a Content-Length header is required\n", close=True)
            return False
        if int(raw) > self.server.max_request_bytes:
            self.server.service.errors["too_large"] += 1
            msg = f"request body of {raw} bytes is over the limit of {self.server.max_request_bytes}\n"
            self._send(413, "text/plain", msg.encode(), close=True)
            return False
        return True

    def _read_body(self) -> bytes | None:
        n = int(self.headers["Content-Length"])
        body = self.rfile.read(n)
        if len(body) != n:
            self.server.service.errors["truncated"] += 1
            self.close_connection = True
            return None
        return body

    def _drain(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))

    def _jpeg(self, data: bytes | None, missing: str) -> None:
        if data is None:
            self._send(404, "text/plain", f"{missing}\n".encode())
        else:
            self._send(200, "image/jpeg", data)

    def _clip(self, event_id: str) -> None:
        """An event's MP4, with byte ranges (browsers seek in a video with them)."""
        path = self.server.service.clip_path(event_id)
        try:
            f = open(path, "rb") if path is not None else None  # noqa: SIM115 - closed below
        except OSError:
            f = None
        if f is None:
            self._send(404, "text/plain", f"no clip for event {event_id} (none recorded, not finished yet, or "
                                          f"removed by retention)\n".encode())
            return
        with f:
            size = os.fstat(f.fileno()).st_size
            start, end, status = 0, size - 1, 200
            m = RANGE.fullmatch(self.headers.get("Range", "").strip())
            if m and (m[1] or m[2]):
                if m[1]:
                    start, end = int(m[1]), min(int(m[2]) if m[2] else size - 1, size - 1)
                else:  # the last N bytes
                    start = max(0, size - int(m[2]))
                if start > end or start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            self.send_response(status)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            f.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = f.read(min(FILE_CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    def _static(self, name: str) -> None:
        found = dashboard.static_file(name)
        if found is None:
            self._send(404, "text/plain", f"no such page: /dashboard/{name}\n".encode())
        else:
            self._send(200, *found)

    def _json(self, status: int, obj: Any) -> None:
        try:  # strict JSON: NaN or Infinity would make the dashboard's JSON.parse fail
            body = json.dumps(obj, allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            self.server.service.errors["unserialisable"] += 1
            log.exception("a read-out could not be serialised")
            status, body = 500, json.dumps({"error": f"read-out not serialisable: {e}"}).encode()
        self._send(status, "application/json", body)

    def _send(self, status: int, ctype: str, body: bytes, *, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)


def _err(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


class MasterHTTPServer(ThreadingMixIn, HTTPServer):
    """A thread per connection, at most `max_connections` at once; the rest are refused."""

    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True
    logRequests = False  # read by SimpleXMLRPCRequestHandler.log_request

    def __init__(self, address: tuple[str, int], service: MasterService, *,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, token: str | None = None,
                 allowed_hosts: Iterable[str] = (),
                 max_connections_per_host: int = DEFAULT_MAX_CONNECTIONS_PER_HOST,
                 reserve_slots: int = RESERVE_SLOTS) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.service = service
        self.token = token  # None: no authentication (loopback, or --insecure)
        # Without a token on loopback, the Host header must name this machine (or a name given with
        # --allowed-host): a page on a DNS-rebound name of an attacker's then cannot talk to us.
        self.host_check = token is None and is_loopback(address[0])
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts) | LOOPBACK_NAMES
        self.max_request_bytes = max_request_bytes
        self.dispatcher = RpcDispatcher(MasterRpc(service), service.errors)
        self.history = dashboard.History()
        self.metrics = metrics.registry_for(service.stats)
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self.max_connections_per_host = max_connections_per_host
        self._reserve = threading.BoundedSemaphore(reserve_slots) if reserve_slots else None
        self._reserved: set[socket.socket] = set()
        self._waiting: dict[socket.socket, float] = {}  # connections waiting for a request head, since when
        self._handed_over: set[socket.socket] = set()  # evicted: their slot went to a newcomer
        self.head_timeout_s, self.body_timeout_s = HEAD_TIMEOUT_S, BODY_TIMEOUT_S
        self._per_host: Counter[str] = Counter()
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, MasterHandler)

    def _marshaled_dispatch(self, data: bytes, dispatch_method: Any = None, path: Any = None) -> bytes:
        return self.dispatcher._marshaled_dispatch(data, dispatch_method, path)

    def process_request(self, request: Any, client_address: Any) -> None:
        host = str(client_address[0])
        with self._open_lock:
            crowded = self._per_host[host] >= self.max_connections_per_host
            if not crowded:
                self._per_host[host] += 1
        if crowded:
            self.service.errors["too_many_connections_per_host"] += 1
            log.warning("refused %s: it has %d connections open already", host, self.max_connections_per_host)
            self.shutdown_request(request)
            return
        if not self._slots.acquire(blocking=False):
            if self._reserve is not None and self._reserve.acquire(blocking=False):
                self.service.errors["served_from_reserve"] += 1  # every slot busy (a slowloris?): one short chance
                with self._open_lock:
                    self._reserved.add(request)
                super().process_request(request, client_address)
                return
            if self._evict_idle():
                self.service.errors["evicted_idle"] += 1
                super().process_request(request, client_address)  # in the evicted connection's slot
                return
            self._host_done(host)
            self.service.errors["too_many_connections"] += 1
            log.warning("refused %s: %d connections open already", client_address, self.max_connections)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def waiting_for_head(self, conn: socket.socket, waiting: bool) -> None:
        """A handler says its connection now waits for a request head (True), or has one (False)."""
        with self._open_lock:
            if waiting:
                self._waiting[conn] = time.monotonic()
            else:
                self._waiting.pop(conn, None)

    def idle_connections(self, older_than_s: float = 0.0) -> int:
        """Connections (not reserve ones) that have waited for a request head at least this long."""
        now = time.monotonic()
        with self._open_lock:
            return sum(1 for c, since in self._waiting.items()
                       if c not in self._reserved and now - since >= older_than_s)

    def _evict_idle(self) -> bool:
        """Close the connection that has waited longest for a request head (at least EVICT_AFTER_S), its
        slot going to the caller's new connection; False when there is none."""
        now = time.monotonic()
        with self._open_lock:
            idle = [(since, c) for c, since in self._waiting.items()
                    if c not in self._reserved and c not in self._handed_over and now - since >= EVICT_AFTER_S]
            if not idle:
                return False
            victim = min(idle, key=lambda x: x[0])[1]
            del self._waiting[victim]
            self._handed_over.add(victim)
        try:
            victim.shutdown(socket.SHUT_RDWR)  # its handler's read ends; the thread ends without releasing
        except OSError:
            pass
        return True

    def is_reserved(self, conn: socket.socket) -> bool:
        """Whether a connection holds a reserve slot (see process_request)."""
        with self._open_lock:
            return conn in self._reserved

    def _host_done(self, host: str) -> None:
        with self._open_lock:
            self._per_host[host] -= 1
            if self._per_host[host] <= 0:
                del self._per_host[host]

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)
                self._waiting.pop(request, None)
                reserved = request in self._reserved
                self._reserved.discard(request)
                handed_over = request in self._handed_over
                self._handed_over.discard(request)
            if not handed_over:  # an evicted connection's slot is the newcomer's now
                (self._reserve if reserved else self._slots).release()
            self._host_done(str(client_address[0]))

    def server_close(self) -> None:
        """Close the listening socket and every open keep-alive connection."""
        super().server_close()
        with self._open_lock:
            for conn in self._open:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)
