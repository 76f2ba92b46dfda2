"""The master's one MQTT connection, as a Component: it sends what waits in the outbox and hands
incoming commands on.

Design. One thread of our own runs paho-mqtt's `loop(timeout)` (no `loop_start`), so the loop, every
callback and every publish happen on it, and stop is a flag checked every 50 ms. Each connection gets
a fresh paho client: the outbox, not paho, holds every message until the broker acknowledges it, so
when a connection drops the messages in flight simply wait in the outbox again and go out on the next
one (paho's own resend queue is thrown away with its client, so nothing is sent twice by both).

* At most `window` messages are in flight at once; the rest wait in the outbox, bounded.
* Connecting: TCP (and TLS with the configured CA, client certificate and key) with a 3 s timeout;
  the last will is `<prefix>/available` = offline, retained; the first message on a connection is
  `online`, retained. The session is persistent (clean_session false) under a stable client id, so
  the broker keeps our subscriptions, and QoS 1 commands sent while we were away, across our restarts
  and its own (with its persistence on).
* Refused or unreachable: one clear log line per new reason (repeats every minute at most), then
  attempts back off from 0.5 s, doubling, jittered, capped at `reconnect_max_s` (30 s).
* Stopping: up to `flush_s` to send what waits, then `offline` (retained) and a clean DISCONNECT,
  which tells the broker not to publish the will.

Nothing here is ever waited on by the master's results, events or webhooks: they only put messages
in the outbox.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from common.runtime import Component
from master.mqtt.config import MqttSettings
from master.mqtt.outbox import Outbox, backoff_s
from master.mqtt.topics import AVAILABLE, NOT_AVAILABLE

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3.0  # TCP + TLS, then again for the broker's CONNACK
LOOP_S = 0.05  # one paho loop pass: how soon a new message or a stop is noticed
WINDOW = 32  # messages in flight at once
FLUSH_S = 2.0  # at stop, how long waiting messages may still go out
REPEAT_LOG_S = 60.0  # the same failure is logged again at most this often


@dataclass
class _Connection:
    """What one connection has seen: the CONNACK, the mids in flight, whether it has dropped."""

    result: Any = None  # paho's ReasonCode from CONNACK
    session_present: bool = False
    mids: dict[int, int] = field(default_factory=dict)  # paho mid -> outbox key
    early: set[int] = field(default_factory=set)  # mids acknowledged before publish() returned (QoS 0)
    lost: str = ""  # why it dropped ("" while it stands)


class MqttClient(Component):
    """The connection to the broker; see the module docstring."""

    thread_name = "mqtt"

    def __init__(self, settings: MqttSettings, outbox: Outbox, *, available_topic: str,
                 on_connect: Callable[[], None] | None = None,
                 on_message: Callable[[str, bytes], None] | None = None,
                 subscriptions: Callable[[], Sequence[tuple[str, int]]] = lambda: (),
                 unsubscriptions: Callable[[], Sequence[str]] = lambda: (),
                 window: int = WINDOW, flush_s: float = FLUSH_S, rand: Callable[[], float] = random.random) -> None:
        super().__init__()
        self.settings, self.outbox, self.available_topic = settings, outbox, available_topic
        self._on_connect, self._on_message = on_connect, on_message
        self._subscriptions, self._unsubscriptions = subscriptions, unsubscriptions
        self.window, self.flush_s, self._rand = window, flush_s, rand
        self.connected = threading.Event()
        self._conn = _Connection()
        self.counters = {"connects": 0, "failures": 0, "drops": 0}
        self.last_error = ""
        self._logged: tuple[str, float] = ("", 0.0)

    # ----- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Check the TLS files load (a bad one stops the master at start, not forever in the loop), then
        start the thread."""
        _close(self._new_client())
        super().start()

    def run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                failures = 0 if self._one_connection() else failures + 1
            except Exception:  # a surprise inside paho must cost this connection, not the master
                failures += 1
                self.connected.clear()
                self.outbox.requeue(time.monotonic())
                log.exception("mqtt: the connection to %s failed unexpectedly", self.settings.where)
            if self._stop.is_set():
                break
            self._stop.wait(backoff_s(max(failures, 1), self._rand(), cap_s=self.settings.reconnect_max_s))

    def stats(self) -> dict[str, Any]:
        return {"connected": self.connected.is_set(), **self.counters, "last_error": self.last_error}

    # ----- one connection ----------------------------------------------------------------------------

    def _new_client(self) -> paho.Client:
        s = self.settings
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=s.client_id, clean_session=False,
                             protocol=paho.MQTTv311, reconnect_on_failure=False)
        client.connect_timeout = CONNECT_TIMEOUT_S
        client.max_inflight_messages_set(self.window + 1)  # our window, plus `online` or `offline`
        if s.username:
            client.username_pw_set(s.username, s.password or None)
        if s.tls:
            client.tls_set(ca_certs=s.ca_file or None, certfile=s.cert_file or None, keyfile=s.key_file or None,
                           cert_reqs=ssl.CERT_REQUIRED)
        client.will_set(self.available_topic, NOT_AVAILABLE, qos=1, retain=True)
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_publish = self._published
        client.on_message = self._message
        return client

    def _one_connection(self) -> bool:
        """Connect, serve until the connection drops or we stop; True if the broker accepted us."""
        self._conn = conn = _Connection()
        client = self._new_client()
        try:
            client.connect(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s)
        except (OSError, ValueError) as e:  # refused, unreachable, TLS handshake, bad host name
            _close(client)
            self._failed(f"cannot connect: {e}", "warning")
            return False
        if not self._await_connack(client, conn):
            return False
        self._begin(client, conn)
        try:
            self._serve(client, conn)
        finally:
            self.connected.clear()
            back = self.outbox.requeue(time.monotonic(), replay=not self._stop.is_set())
        if conn.lost and not self._stop.is_set():
            self.counters["drops"] += 1
            self._failed(f"lost the connection ({conn.lost}); {back} message(s) in flight wait again, "
                         f"{self.outbox.waiting()} in all", "warning")
        return True

    def _await_connack(self, client: paho.Client, conn: _Connection) -> bool:
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while conn.result is None and not conn.lost and time.monotonic() < deadline and not self._stop.is_set():
            if client.loop(LOOP_S) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        if conn.result is not None and not conn.result.is_failure:
            return True
        if conn.result is not None:
            hint = " (check [mqtt] username and password_file)" if "password" in str(conn.result).lower() or \
                "authori" in str(conn.result).lower() else ""
            self._failed(f"the broker refused the connection: {conn.result}{hint}", "error")
        elif not self._stop.is_set():
            self._failed(f"no answer to CONNECT ({conn.lost or 'timed out'})", "warning")
        _close(client)
        return False

    def _begin(self, client: paho.Client, conn: _Connection) -> None:
        """A new connection: `online`, subscriptions, then tell the bridge (it republishes its state)."""
        self.counters["connects"] += 1
        self.last_error = ""
        self._logged = ("", 0.0)
        log.info("mqtt: connected to %s as %s (%s); %d message(s) waiting", self.settings.where,
                 self.settings.client_id, "session resumed" if conn.session_present else "new session",
                 self.outbox.waiting())
        client.publish(self.available_topic, AVAILABLE, qos=1, retain=True)
        unsubscribe = list(self._unsubscriptions())
        if unsubscribe:
            client.unsubscribe(unsubscribe)
        subscribe = list(self._subscriptions())
        if subscribe:
            client.subscribe(subscribe)
        self.connected.set()
        if self._on_connect is not None:
            self._on_connect()

    def _serve(self, client: paho.Client, conn: _Connection) -> None:
        while not self._stop.is_set():
            self._pump(client, conn)
            if client.loop(LOOP_S) != MQTTErrorCode.MQTT_ERR_SUCCESS or conn.lost:
                conn.lost = conn.lost or "the socket closed"
                _close(client)
                return
        self._goodbye(client, conn)

    def _pump(self, client: paho.Client, conn: _Connection) -> None:
        """Hand paho the oldest waiting messages while the window has room."""
        room = self.window - len(conn.mids)
        if room <= 0:
            return
        for key, msg in self.outbox.take(room):
            try:
                info = client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
            except ValueError as e:  # a message paho will never take (a topic too long): it would fail forever
                log.warning("mqtt: cannot publish to %.80s: %s; dropped", msg.topic, e)
                self.outbox.refused(key)
                continue
            if info.mid in conn.early:
                conn.early.discard(info.mid)
                self.outbox.sent(key, time.monotonic())
            else:
                conn.mids[info.mid] = key  # in flight until acknowledged, or until the connection drops
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:  # the connection is going: the rest wait for the next
                conn.lost = conn.lost or paho.error_string(info.rc)
                return

    def _goodbye(self, client: paho.Client, conn: _Connection) -> None:
        """Stopping: send what waits (for at most flush_s), then `offline`, then DISCONNECT."""
        deadline = time.monotonic() + self.flush_s
        while (self.outbox.waiting() or conn.mids) and not conn.lost and time.monotonic() < deadline:
            self._pump(client, conn)
            client.loop(LOOP_S)
        info = client.publish(self.available_topic, NOT_AVAILABLE, qos=1, retain=True)
        deadline = time.monotonic() + 1.0
        while info.mid not in conn.early and not conn.lost and time.monotonic() < deadline:
            client.loop(LOOP_S)
        client.disconnect()
        client.loop(LOOP_S)
        _close(client)
        log.info("mqtt: disconnected from %s; %d message(s) left unsent", self.settings.where,
                 self.outbox.waiting() + len(conn.mids))

    # ----- paho callbacks (on our thread, inside loop()) ------------------------------------------

    def _connected(self, _client: Any, _userdata: Any, flags: Any, reason: Any, _props: Any) -> None:
        self._conn.result = reason
        self._conn.session_present = bool(getattr(flags, "session_present", False))

    def _disconnected(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self._conn.lost = str(reason) or "disconnected"

    def _published(self, _client: Any, _userdata: Any, mid: int, _reason: Any, _props: Any) -> None:
        key = self._conn.mids.pop(mid, None)
        if key is None:
            self._conn.early.add(mid)
        else:
            self.outbox.sent(key, time.monotonic())

    def _message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        if self._on_message is not None:
            self._on_message(msg.topic, bytes(msg.payload))

    def _failed(self, reason: str, level: str) -> None:
        """Log a failure once per new reason (again at most every REPEAT_LOG_S)."""
        self.counters["failures"] += 1
        self.last_error = reason
        now = time.monotonic()
        last, at = self._logged
        if reason != last or now - at >= REPEAT_LOG_S:
            self._logged = (reason, now)
            getattr(log, level)("mqtt: broker %s: %s; trying again with backoff (up to %.0f s)", self.settings.where,
                                reason, self.settings.reconnect_max_s)
        else:
            log.debug("mqtt: broker %s: %s", self.settings.where, reason)


def _close(client: paho.Client) -> None:
    """Close a client's socket and its wake-up socket pair now, rather than whenever it is collected
    (paho's own `__del__` does the same; a client is made per connection, so this keeps fds steady)."""
    reset = getattr(client, "_reset_sockets", None)
    if reset is not None:
        reset()
