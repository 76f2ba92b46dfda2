"""Webhook delivery against real HTTP servers on 127.0.0.1: bodies, retries, timeouts, dead ports, stop."""

import base64
import contextlib
import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from common.tasks import Detection
from master.alerts.events import Event, to_wire
from master.alerts.webhooks import WebhookConfig, WebhookSender, delivery_body
from tests.conftest import wait_until

T0 = 1_700_000_000.0
FAST = dict(timeout_s=0.3, retries=2, backoff_s=0.01, backoff_max_s=0.02)


def event(i: int, snapshot: bytes | None = None) -> Event:
    return Event(id=f"ev{i}", rule="door", port=5000, first_seq=i, last_seq=i + 2, first_at=T0, last_at=T0 + 0.2,
                 fired_at=T0 + 0.3, frames=3, best=Detection("person", 0.9, (1, 2, 3, 4)), task_id=f"t{i}",
                 snapshot=snapshot)


class Hook:
    """A real webhook endpoint: answers each request with the next scripted status ("hang": never)."""

    def __init__(self, script: list[int | str] | None = None, default: int | str = 200) -> None:
        self.script, self.default = list(script or []), default
        self.requests: list[dict] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with hook.lock:
                    hook.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    action = hook.script.pop(0) if hook.script else hook.default
                if action == "hang":
                    hook.release.wait(10)
                    return
                with contextlib.suppress(OSError):
                    self.send_response(action)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=s3cret"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.thread.join(5)
        self.server.server_close()


@pytest.fixture
def hooks() -> Iterator:
    made: list[Hook] = []

    def make(script=None, default=200) -> Hook:
        made.append(Hook(script, default))
        return made[-1]

    yield make
    for h in made:
        h.close()


@pytest.fixture
def sender() -> Iterator:
    made: list[WebhookSender] = []

    def make(**cfg) -> WebhookSender:
        made.append(WebhookSender(WebhookConfig(**{**FAST, **cfg}), rng=random.Random(1)))
        return made[-1]

    yield make
    for s in made:
        s.stop()
        s.join(5)


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def test_delivery_posts_the_event_as_json(hooks, sender):
    hook, ws = hooks(), sender()
    ws.start()
    ev = event(1, snapshot=b"\xff\xd8jpeg")
    assert ws.send(hook.url, ev)
    wait_until(lambda: ws.stats()["delivered"] == 1, timeout=5)
    [req] = hook.requests
    assert req["path"] == "/hook?token=s3cret"
    assert req["headers"]["Content-Type"] == "application/json"
    body = json.loads(req["body"])
    assert body["event"] == to_wire(ev) and body["event"]["snapshot"] is True
    assert base64.b64decode(body["snapshot_jpeg_base64"]) == b"\xff\xd8jpeg"
    assert ws.stats() == {"delivered": 1, "failed": 0, "retried": 0, "dropped_full": 0, "abandoned": 0,
                          "refused": 0, "queued": 0, "urls": 1}


def test_no_snapshot_key_without_a_snapshot():
    body = json.loads(delivery_body(event(2)))
    assert "snapshot_jpeg_base64" not in body and body["event"]["snapshot"] is False


def test_server_errors_are_retried_until_delivered(hooks, sender):
    hook, ws = hooks(script=[500, 503]), sender()
    ws.start()
    ws.send(hook.url, event(1))
    wait_until(lambda: ws.stats()["delivered"] == 1, timeout=5)
    assert hook.count() == 3
    assert ws.stats()["retried"] == 2 and ws.stats()["failed"] == 0
    assert len({r["body"] for r in hook.requests}) == 1  # the same body each attempt


def test_retries_are_bounded(hooks, sender):
    hook, ws = hooks(default=500), sender(retries=3)
    ws.start()
    ws.send(hook.url, event(1))
    wait_until(lambda: ws.stats()["failed"] == 1, timeout=5)
    assert hook.count() == 4 and ws.stats()["retried"] == 3 and ws.stats()["delivered"] == 0


def test_client_errors_are_not_retried(hooks, sender):
    hook, ws = hooks(default=404), sender()
    ws.start()
    ws.send(hook.url, event(1))
    ws.send(hook.url, event(2))
    wait_until(lambda: ws.stats()["failed"] == 2, timeout=5)
    assert hook.count() == 2 and ws.stats()["retried"] == 0


def test_a_hanging_webhook_blocks_neither_the_caller_nor_other_webhooks(hooks, sender):
    stuck, good, ws = hooks(default="hang"), hooks(), sender(timeout_s=0.2, retries=1)
    ws.start()
    t = time.monotonic()
    for i in range(5):
        assert ws.send(stuck.url, event(i))
    assert time.monotonic() - t < 0.1  # enqueue never waits for the network
    wait_until(lambda: stuck.count() >= 1, timeout=5)
    ws.send(good.url, event(99))
    wait_until(lambda: ws.stats()["delivered"] == 1, timeout=1.0)  # stuck's backlog takes 5 x 2 x 0.2 s
    wait_until(lambda: ws.stats()["failed"] >= 1, timeout=5)
    first = [r for r in stuck.requests if json.loads(r["body"])["event"]["id"] == "ev0"]
    assert len(first) == 2  # one attempt and one retry, then it gave up


def test_a_dead_port_fails_after_bounded_retries(sender):
    ws = sender(retries=2)
    ws.start()
    ws.send(dead_url(), event(1))
    wait_until(lambda: ws.stats()["failed"] == 1, timeout=5)
    assert ws.stats()["retried"] == 2 and ws.stats()["delivered"] == 0


def test_a_full_queue_drops_the_oldest(hooks, sender):
    hook, ws = hooks(), sender(queue_size=2)
    for i in range(5):  # not started yet: everything waits in the queue
        ws.send(hook.url, event(i))
    assert ws.stats()["dropped_full"] == 3 and ws.stats()["queued"] == 2
    ws.start()
    wait_until(lambda: ws.stats()["delivered"] == 2, timeout=5)
    assert [json.loads(r["body"])["event"]["id"] for r in hook.requests] == ["ev3", "ev4"]


def test_stop_returns_promptly_even_with_a_request_in_flight(hooks, sender):
    stuck, ws = hooks(default="hang"), sender(timeout_s=30, retries=4, backoff_s=30, backoff_max_s=30)
    ws.start()
    ws.send(stuck.url, event(1))
    ws.send(stuck.url, event(2))
    wait_until(lambda: stuck.count() == 1, timeout=5)
    t = time.monotonic()
    ws.stop()
    ws.join(5)
    assert time.monotonic() - t < 2.0
    assert not any(th.name.startswith("webhook-") for th in threading.enumerate())
    assert ws.stats()["abandoned"] == 2 and ws.stats()["delivered"] == 0
    assert not ws.send(stuck.url, event(3)) and ws.stats()["refused"] == 1


def test_stop_during_backoff_is_prompt(sender):
    ws = sender(retries=4, backoff_s=30, backoff_max_s=30)
    ws.start()
    ws.send(dead_url(), event(1))
    wait_until(lambda: ws.stats()["retried"] == 1, timeout=5)  # now waiting 15-30 s before retrying
    t = time.monotonic()
    ws.stop()
    ws.join(5)
    assert time.monotonic() - t < 1.0 and ws.stats()["abandoned"] == 1


def test_urls_are_bounded_and_checked(hooks, sender):
    ws = sender(max_urls=1)
    hook = hooks()
    assert ws.send(hook.url, event(1))
    assert not ws.send(hook.url + "&other", event(2))
    assert ws.stats()["refused"] == 1 and ws.stats()["urls"] == 1
    with pytest.raises(ValueError):
        sender().send("ftp://example.com/x", event(3))


def test_config_is_validated():
    with pytest.raises(ValueError):
        WebhookConfig(queue_size=0)
    with pytest.raises(ValueError):
        WebhookConfig(timeout_s=0)
