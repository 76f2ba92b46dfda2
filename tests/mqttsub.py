"""A test's own MQTT client: subscribes and records every message, retained state by topic.

paho runs its network loop on its own thread (`loop_start`), which `close()` stops; with
`persistent=True` the session outlives a broker restart (clean_session false, a fixed client id,
QoS 1 subscriptions), so messages published while it was away are delivered when it is back.
"""

from __future__ import annotations

import json
import ssl
import threading
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import wait_until


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """Connects to 127.0.0.1:`port`, subscribes to `topics`, records messages; a context manager."""

    def __init__(self, port: int, topics: list[str], *, client_id: str = "", persistent: bool = False,
                 username: str = "", password: str = "", tls: Any = None) -> None:
        self.messages: list[Received] = []
        self.retained: dict[str, bytes] = {}  # the latest value of every topic (empty: deleted)
        self._lock = threading.Lock()
        self.connects = 0
        self.refused: list[str] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent)
        if username:
            self.client.username_pw_set(username, password or None)
        if tls is not None:
            self.client.tls_set(ca_certs=str(tls.ca), certfile=str(tls.client_cert), keyfile=str(tls.client_key),
                                cert_reqs=ssl.CERT_REQUIRED)
        self.client.reconnect_delay_set(0.05, 0.2)
        self.topics = topics
        self.client.on_connect = self._connected
        self.client.on_message = self._message
        self.port = port

    def __enter__(self) -> Subscriber:
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        wait_until(lambda: self.connects or self.refused, 10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _connected(self, client: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.refused.append(str(reason))
            return
        client.subscribe([(t, 1) for t in self.topics])
        self.connects += 1

    def _message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos))
            self.retained[msg.topic] = bytes(msg.payload)

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def latest(self, topic: str) -> bytes | None:
        with self._lock:
            return self.retained.get(topic)

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(5)
