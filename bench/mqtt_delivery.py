"""How fast MQTT messages leave the master, and how soon it is back after its broker restarts.

Figure: QoS 1 messages per second from the outbox through the master's MQTT connection
(master/mqtt/client.py: a window of 32 in flight, its own loop thread) to a local mosquitto,
acknowledged by the broker, 300-byte payloads like an event's JSON. Baseline, same run and broker: a
bare paho client publishing the same messages with its own loop thread (`loop_start`) and the same
in-flight window. Also: the outbox alone (put, take, acknowledge, no I/O), and how long after the
broker is back the connection is up again, for a graceful restart (SIGTERM) and a kill (SIGKILL),
median of rounds with the broker down 0.5 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from bench import benchlib  # noqa: E402
from cluster.mqttbroker import MosquittoBroker  # noqa: E402
from master.mqtt.client import WINDOW, MqttClient  # noqa: E402
from master.mqtt.config import settings  # noqa: E402
from master.mqtt.outbox import Message, Outbox  # noqa: E402

PAYLOAD = b"x" * 300


def outbox_alone(n: int) -> float:
    """Messages per second through put/take/sent with no I/O."""
    box = Outbox(max_messages=n + 1)
    t0 = time.perf_counter()
    for i in range(n):
        box.put(Message("fh/events", PAYLOAD, qos=1))
        if i % WINDOW == WINDOW - 1:
            for key, _ in box.take(WINDOW):
                box.sent(key, 0.0)
    for key, _ in box.take(n):
        box.sent(key, 0.0)
    return n / (time.perf_counter() - t0)


def through_client(broker: MosquittoBroker, n: int) -> float:
    """Messages per second from the outbox to the broker's PUBACKs, through MqttClient."""
    box = Outbox(max_messages=n + 1, max_bytes=(n + 1) * len(PAYLOAD))
    client = MqttClient(settings({"url": broker.url, "node_id": "bench"}, master_host="127.0.0.1", master_port=1),
                        box, available_topic="fh/available")
    client.start()
    try:
        _wait(client.connected.is_set, 10)
        t0 = time.perf_counter()
        for _ in range(n):
            box.put(Message("fh/events", PAYLOAD, qos=1))
        _wait(lambda: box.stats()["delivered"] >= n, 120)
        return n / (time.perf_counter() - t0)
    finally:
        client.stop()
        client.join(10)


def bare_paho(broker: MosquittoBroker, n: int) -> float:
    """Messages per second with a bare paho client and loop_start, the same window."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare")
    c.max_inflight_messages_set(WINDOW)
    c.max_queued_messages_set(0)
    done = threading.Semaphore(0)
    c.on_publish = lambda *_: done.release()
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            c.publish("fh/events", PAYLOAD, qos=1)
        for _ in range(n):
            done.acquire(timeout=60)
        return n / (time.perf_counter() - t0)
    finally:
        c.disconnect()
        c.loop_stop()


def reconnect_s(broker: MosquittoBroker, rounds: int, *, kill: bool) -> float:
    """Median seconds from the broker accepting again to the master's connection being up."""
    client = MqttClient(settings({"url": broker.url, "node_id": "bench"}, master_host="127.0.0.1", master_port=1),
                        Outbox(), available_topic="fh/available")
    client.start()
    times = []
    try:
        for _ in range(rounds):
            _wait(client.connected.is_set, 30)
            broker.kill() if kill else broker.stop()
            _wait(lambda: not client.connected.is_set(), 10)
            time.sleep(0.5)  # down for a moment: the client tries and backs off meanwhile
            broker.start()
            t0 = time.perf_counter()
            _wait(client.connected.is_set, 60)
            times.append(time.perf_counter() - t0)
    finally:
        client.stop()
        client.join(10)
    return statistics.median(times)


def _wait(pred: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.002)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer messages and rounds")
    args = p.parse_args(argv)
    benchlib.setup_logging("WARNING")
    machine = benchlib.machine()
    n, rounds = (5_000, 3) if args.quick else (30_000, 5)
    with MosquittoBroker(folder=Path(tempfile.mkdtemp(prefix="bench-mqtt-"))) as broker:
        runs = [(through_client(broker, n), bare_paho(broker, n)) for _ in range(rounds)]
        ours, bare = (statistics.median(r[i] for r in runs) for i in range(2))
        restart, kill = reconnect_s(broker, rounds, kill=False), reconnect_s(broker, rounds, kill=True)
    result: dict[str, Any] = {
        "bench": "mqtt_delivery",
        "figure": {"messages_per_s": round(ours)},
        "baseline": {"messages_per_s": round(bare)},
        "ratio": benchlib.ratio(ours, bare),
        "ratio_of": "outbox + MqttClient / bare paho loop_start, QoS 1 acknowledged, same window (median of rounds)",
        "outbox_alone_messages_per_s": round(outbox_alone(n * 3)),
        "reconnect_after_restart_s": round(restart, 3),
        "reconnect_after_kill_s": round(kill, 3),
        "params": {"messages": n, "payload_bytes": len(PAYLOAD), "window": WINDOW, "rounds": rounds},
        "machine": benchlib.finish_machine(machine),
    }
    benchlib.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
