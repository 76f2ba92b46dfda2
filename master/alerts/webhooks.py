"""Webhook delivery: events POSTed as JSON to the URLs rules name, off the caller's thread.

Each distinct URL gets a lane: a bounded queue (the oldest event is dropped when full) and one
thread that delivers in order, with a timeout per attempt and bounded retries with exponential
backoff and jitter. So a slow or dead webhook delays only its own events, and `send` never blocks.

A delivery is `POST <url>` with `Content-Type: application/json` and the body
`{"event": {...event wire dict...}, "snapshot_jpeg_base64": "..."}` (the snapshot key only when the
event has one). A 2xx answer is delivered; a connection error, timeout, 408, 429 or 5xx is retried;
any other status (a redirect, a 4xx) is a permanent failure and not retried. Events still queued at
`stop()` are abandoned (counted), so a dead webhook cannot hold up shutdown.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import random
import socket
import threading
import time
import urllib.parse
from collections import Counter, deque
from dataclasses import dataclass

from common.runtime import Component
from master.alerts.events import Event, to_wire

log = logging.getLogger(__name__)

COUNTERS = ("delivered", "failed", "retried", "dropped_full", "abandoned", "refused")
MAX_REPLY_BYTES = 64 * 1024  # read (and ignore) at most this much of a webhook's answer
IDLE_WAIT_S = 1.0  # a lane with nothing to send re-checks its stop flag this often


@dataclass(frozen=True)
class WebhookConfig:
    """Limits and timings of webhook delivery."""

    queue_size: int = 256  # events waiting per URL; the oldest is dropped beyond
    timeout_s: float = 3.0  # per attempt: connect, send, and each read of the answer
    retries: int = 4  # attempts after the first one
    backoff_s: float = 0.5  # wait before the first retry; doubles each retry (times 0.5..1 jitter)
    backoff_max_s: float = 8.0
    max_urls: int = 32  # distinct webhook URLs (one thread each)

    def __post_init__(self) -> None:
        for name in ("queue_size", "max_urls"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.retries < 0 or self.timeout_s <= 0 or self.backoff_s < 0 or self.backoff_max_s < 0:
            raise ValueError("retries, backoff_s and backoff_max_s must be >= 0; timeout_s > 0")


def delivery_body(event: Event) -> bytes:
    """The JSON body POSTed for one event."""
    body: dict[str, object] = {"event": to_wire(event)}
    if event.snapshot is not None:
        body["snapshot_jpeg_base64"] = base64.b64encode(event.snapshot).decode("ascii")
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


class WebhookSender(Component):
    """Delivers events to webhook URLs: one lane (queue + thread) per distinct URL."""

    thread_name = "webhooks"

    def __init__(self, config: WebhookConfig | None = None, *, rng: random.Random | None = None) -> None:
        super().__init__()
        self.config = config or WebhookConfig()
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._lanes: dict[str, _Lane] = {}
        self._refused: Counter[str] = Counter()

    def send(self, url: str, event: Event) -> bool:
        """Queue `event` for `url` without blocking; False when refused (stopped, too many URLs)."""
        with self._lock:
            lane = self._lanes.get(url)
            if lane is None:
                if self._stop.is_set() or len(self._lanes) >= self.config.max_urls:
                    self._refused["refused"] += 1
                    log.warning("webhook %s refused for event %s: %s", _where(url), event.id,
                                "stopped" if self._stop.is_set() else f"more than {self.config.max_urls} URLs")
                    return False
                lane = self._lanes[url] = _Lane(url, self.config, self._rng)
                if self._started:
                    lane.start()
        if self._stop.is_set():
            self._refused["refused"] += 1
            return False
        lane.put(event)
        return True

    def start(self) -> None:
        """Start a delivery thread for every URL seen so far (later URLs start their own)."""
        with self._lock:
            if self._started:
                raise RuntimeError("WebhookSender was started twice")
            self._started = True
            for lane in self._lanes.values():
                lane.start()

    def stop(self) -> None:
        """Ask every lane to finish; returns at once (a request in flight is cut short)."""
        with self._lock:
            self._stop.set()
            lanes = list(self._lanes.values())
        for lane in lanes:
            lane.stop()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for every lane's thread, `timeout` seconds in all; True when all ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            lanes = list(self._lanes.values())
        return all([lane.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
                    for lane in lanes])

    def run(self) -> None:
        raise NotImplementedError("WebhookSender runs one thread per URL, not one of its own")

    def stats(self) -> dict[str, int]:
        """Totals over every URL: delivered, failed (after retries), retried, dropped_full, abandoned,
        refused, queued, urls."""
        with self._lock:
            lanes = list(self._lanes.values())
            total: Counter[str] = Counter(self._refused)
        queued = 0
        for lane in lanes:
            counters, waiting = lane.snapshot()
            total.update(counters)
            queued += waiting
        return {**{k: total.get(k, 0) for k in COUNTERS}, "queued": queued, "urls": len(lanes)}


class _Lane(Component):
    """The queue and delivery thread of one webhook URL."""

    def __init__(self, url: str, config: WebhookConfig, rng: random.Random) -> None:
        super().__init__()
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook must be an http:// or https:// URL, got {url!r}")
        self.url, self.config, self._rng = url, config, rng
        self.thread_name = f"webhook-{parts.hostname}:{parts.port or ''}"
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._cond = threading.Condition()
        self._queue: deque[Event] = deque()
        self._conn: http.client.HTTPConnection | None = None
        self.counters: Counter[str] = Counter()

    def put(self, event: Event) -> None:
        with self._cond:
            if len(self._queue) >= self.config.queue_size:
                dropped = self._queue.popleft()
                self.counters["dropped_full"] += 1
                log.warning("webhook %s: queue full, dropped event %s", _where(self.url), dropped.id)
            self._queue.append(event)
            self._cond.notify()

    def snapshot(self) -> tuple[Counter[str], int]:
        with self._cond:
            return Counter(self.counters), len(self._queue)

    def run(self) -> None:
        while not self._stop.is_set():
            event = self._next()
            if event is None:
                continue
            try:
                self._deliver(event)
            except Exception:  # a bug must not end the lane: log it and go on with the next event
                log.exception("webhook %s: delivering event %s failed", _where(self.url), event.id)
                self._count("failed")
        with self._cond:
            self.counters["abandoned"] += len(self._queue)
            self._queue.clear()

    def _next(self) -> Event | None:
        with self._cond:
            if not self._queue:
                self._cond.wait(IDLE_WAIT_S)
            return self._queue.popleft() if self._queue and not self._stop.is_set() else None

    def _deliver(self, event: Event) -> None:
        body = delivery_body(event)
        for attempt in range(self.config.retries + 1):
            if attempt:
                self._count("retried")
                if self._stop.wait(self._backoff(attempt)):
                    break
            outcome, detail = self._post(body)
            if outcome == "ok":
                self._count("delivered")
                return
            log.log(logging.WARNING if outcome == "fatal" else logging.DEBUG,
                    "webhook %s: event %s attempt %d: %s", _where(self.url), event.id, attempt + 1, detail)
            if outcome == "fatal" or self._stop.is_set():
                break
        if self._stop.is_set():
            self._count("abandoned")
            return
        self._count("failed")
        log.warning("webhook %s: gave up on event %s after %d attempts", _where(self.url), event.id, attempt + 1)

    def _backoff(self, attempt: int) -> float:
        delay = min(self.config.backoff_max_s, self.config.backoff_s * 2 ** (attempt - 1))
        return delay * self._rng.uniform(0.5, 1.0)

    def _post(self, body: bytes) -> tuple[str, str]:
        """One attempt: ("ok" | "retry" | "fatal", what happened)."""
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.config.timeout_s)
        try:
            conn.connect()
            self._conn = conn
            if self._stop.is_set():
                return "retry", "stopping"
            conn.request("POST", self._target, body=body,
                         headers={"Content-Type": "application/json", "User-Agent": "framehive-master"})
            resp = conn.getresponse()
            resp.read(MAX_REPLY_BYTES)
        except (OSError, http.client.HTTPException) as e:
            return "retry", f"{type(e).__name__}: {e}"
        finally:
            self._conn = None
            conn.close()
        if 200 <= resp.status < 300:
            return "ok", str(resp.status)
        retry = resp.status in (408, 429) or resp.status >= 500
        return ("retry" if retry else "fatal"), f"HTTP {resp.status} {resp.reason}"

    def _count(self, what: str) -> None:
        with self._cond:
            self.counters[what] += 1

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # unblocks a request in flight at once


def _where(url: str) -> str:
    """A URL without credentials or query string, for logs (webhook URLs often carry tokens)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"
