"""MQTT against a real mosquitto the test starts on a free port, with an in-process master whose porch
camera is walked past a line and into a zone (tests/unit/test_behaviours_in_master.py: Porch).

Topics and payloads, retained state equal to the master's counts, Home Assistant discovery configs
that pass the documented rules, commands behind a password file and an ACL, TLS with client
certificates, a wrong password refused with one clear line while the master goes on, entities removed
when a camera leaves (by a reload, and across a restart), the bounded outbox while the broker is down,
and broker restarts (SIGTERM under load, SIGKILL) with no QoS 1 event lost.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from cluster.mqttbroker import MosquittoBroker, make_certificates
from common.tasks import Detection
from master.alerts.events import Event
from master.core.cameras import Cameras
from master.mqtt.bridge import build
from master.mqtt.config import settings
from tests.conftest import wait_until
from tests.hadiscovery import problems
from tests.mqttsub import Subscriber
from tests.unit.test_behaviours_in_master import CONFIG, Porch

YARD = '''
[cameras.yard]
source = "synthetic"
port = 5001
pipeline = "objects:car"
'''
NODE = "homeassistant/{}/framehive_test/{}/config"


class MqttMaster:
    """The porch master with its MQTT connection and bridge running; a context manager."""

    def __init__(self, folder: Path, broker: MosquittoBroker, config: str = CONFIG, **values: object) -> None:
        self.porch = Porch()
        self.path = folder / "framehive.toml"
        self.path.write_text(config)
        self.svc = self.porch.svc
        self.svc.cameras = Cameras(str(self.path), self.svc.apply_cluster)
        self.settings = settings({"url": broker.url, "node_id": "test", "stats_interval_s": 1, **values},
                                 master_host="127.0.0.1", master_port=8000)
        self.client, self.bridge = build(self.svc, self.settings, version="test")

    def __enter__(self) -> MqttMaster:
        self.client.start()
        self.bridge.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bridge.stop()
        self.client.stop()
        assert self.bridge.join(5) and self.client.join(8)

    def walk_past(self) -> None:
        """In from the left across the gate line (out), 3 s in the steps zone (dwell), back out (in)."""
        self.porch.walk(5, 0.2)
        self.porch.walk(30, 0.75)
        self.porch.walk(40, 0.1)
        self.porch.walk(20, 0.1)


def events_on(sub: Subscriber, topic: str) -> list[dict]:
    return [m.json() for m in sub.on(topic)]


@pytest.fixture
def broker(tmp_path):
    with MosquittoBroker(folder=tmp_path / "broker") as b:
        yield b


def test_events_counts_snapshot_stats_and_discovery_reach_the_broker(tmp_path, broker):
    with Subscriber(broker.port, ["framehive/#", "homeassistant/#"]) as sub, MqttMaster(tmp_path, broker) as m:
        wait_until(m.client.connected.is_set, 10)
        wait_until(lambda: sub.latest("framehive/porch/lines/gate/in/person") == b"0", 10)
        m.walk_past()
        counts = m.svc.counts()["porch"]
        assert counts["lines"]["gate"] == {"in": {"person": 1}, "out": {"person": 1}}
        dwell = wait_until(lambda: (e := events_on(sub, "framehive/porch/events")) and len(e) >= 2 and e, 10)
        assert [(e["phase"], e["kind"], e["rule"]) for e in dwell] == [("start", "dwell", "loiter"),
                                                                      ("end", "dwell", "loiter")]
        assert dwell[0]["id"] == dwell[1]["id"] and dwell[0]["camera"] == "porch" and dwell[0]["track_id"] > 0
        assert events_on(sub, "framehive/events") == dwell
        assert all(msg.qos == 1 and not msg.retain for msg in sub.on("framehive/porch/events"))
        assert sub.latest("framehive/porch/snapshot")[:2] == b"\xff\xd8"  # the start's snapshot, a JPEG
        wait_until(lambda: sub.latest("framehive/porch/lines/gate/in/person") == b"1", 5)
        stats = wait_until(lambda: (s := sub.latest("framehive/stats")) and json.loads(s)["cameras"] and json.loads(s))
        assert stats["cameras"]["porch"]["port"] == 5000 and stats["workers"] == 1 and stats["mqtt"]["connected"]

        # a newcomer gets the retained state at once, equal to get_counts
        wanted = {NODE.format("binary_sensor", "porch_person_detected"), NODE.format("sensor", "porch_person_count"),
                  NODE.format("sensor", "porch_zone_steps_person"), NODE.format("sensor", "porch_line_gate_in_person"),
                  NODE.format("camera", "porch_snapshot"), NODE.format("binary_sensor", "status")}
        with Subscriber(broker.port, ["framehive/#", "homeassistant/#"]) as late:
            # each filter's retained messages come after its own subscription: wait for both
            wait_until(lambda: late.latest("framehive/porch/zones/steps/person") is not None
                       and all(late.latest(t) is not None for t in wanted), 10)
            retained = {msg.topic: msg.payload for msg in late.messages if msg.retain}
        assert retained["framehive/available"] == b"online"
        for direction, by_label in counts["lines"]["gate"].items():
            assert retained[f"framehive/porch/lines/gate/{direction}/person"] == str(by_label["person"]).encode()
        assert retained["framehive/porch/zones/steps/person"] == b"0"  # she left
        assert retained["framehive/porch/detect/state"] == b"ON"
        configs = {t: json.loads(p) for t, p in retained.items() if t.startswith("homeassistant/")}
        for topic, config in configs.items():
            assert problems(topic, config) == []
        assert wanted <= set(configs)
        assert configs[NODE.format("camera", "porch_snapshot")]["topic"] == "framehive/porch/snapshot"
        assert not any("/switch/" in t for t in configs), "no command entities while commands are off"
    assert sub.latest("framehive/available") == b"offline"  # said on a clean stop
    stats = m.client.outbox.stats()
    assert stats["dropped_events"] == 0 and stats["waiting"] == 0 and stats["in_flight"] == 0


ACL = """user master
topic readwrite framehive/#
topic readwrite homeassistant/#

user ha
topic read framehive/#
topic write framehive/+/detect/set
topic write framehive/reload/set

user guest
topic read framehive/#
"""


def test_commands_obey_the_brokers_acl_and_answer(tmp_path):
    users = {"master": "m-secret", "ha": "h-secret", "guest": "g-secret"}
    (tmp_path / "mqtt.pw").write_text("m-secret\n")
    with MosquittoBroker(folder=tmp_path / "broker", users=users, acl=ACL) as broker, \
            MqttMaster(tmp_path, broker, CONFIG + YARD, commands=True, username="master",
                       password_file=str(tmp_path / "mqtt.pw")) as m, \
            Subscriber(broker.port, ["framehive/#"], username="ha", password="h-secret") as ha, \
            Subscriber(broker.port, ["framehive/#"], username="guest", password="g-secret") as guest:
        wait_until(lambda: ha.latest("framehive/porch/detect/state") == b"ON", 10)
        ha.publish("framehive/porch/detect/set", "OFF")
        wait_until(lambda: 5000 in m.svc.detection_off and ha.latest("framehive/porch/detect/state") == b"OFF", 5)
        guest.publish("framehive/porch/detect/set", "ON")  # the ACL lets a guest read, not command
        m.path.write_text(CONFIG)  # the yard camera leaves
        ha.publish("framehive/reload/set", "RELOAD")
        answer = wait_until(lambda: ha.on("framehive/reload/state"), 5)[0].json()
        assert answer["ok"] and answer["generation"] == 2 and answer["removed"] == ["yard"]
        assert 5000 in m.svc.detection_off, "the guest's command never reached the master"
        assert ha.latest("framehive/porch/detect/state") == b"OFF"
        ha.publish("framehive/porch/detect/set", "maybe")
        ha.publish("framehive/porch/detect/set", "on")
        wait_until(lambda: 5000 not in m.svc.detection_off and ha.latest("framehive/porch/detect/state") == b"ON", 5)
        assert m.bridge.counters["commands_refused"] == 1
        wait_until(lambda: ha.latest("framehive/yard/car") == b"", 5)  # the leaver's retained state is deleted


def test_reload_and_restart_remove_the_entities_of_cameras_that_left(tmp_path, broker):
    with Subscriber(broker.port, ["homeassistant/#"]) as sub:
        with MqttMaster(tmp_path, broker, CONFIG + YARD) as m:
            yard = NODE.format("binary_sensor", "yard_car_detected")
            wait_until(lambda: sub.latest(yard), 10)
            first = {t: json.loads(p)["unique_id"] for t, p in sub.retained.items() if p}
            m.path.write_text(CONFIG)
            assert m.svc.cameras.reload()["removed"] == ["yard"]
            wait_until(lambda: sub.latest(yard) == b"", 5)
            assert sub.latest(NODE.format("camera", "yard_snapshot")) == b""
            assert sub.latest(NODE.format("camera", "porch_snapshot"))
        # the yard comes back while the master is down, then leaves again before its next start
        with MqttMaster(tmp_path, broker, CONFIG + YARD):
            wait_until(lambda: sub.latest(yard), 10)
        with MqttMaster(tmp_path, broker, CONFIG) as m:
            wait_until(lambda: sub.latest(yard) == b"", 10)  # read back at connect and removed
            assert m.bridge.counters["entities_removed"] >= 1
    with Subscriber(broker.port, ["homeassistant/#"]) as late:
        wait_until(lambda: late.latest(NODE.format("camera", "porch_snapshot")), 5)
        again = {t: json.loads(p)["unique_id"] for t, p in late.retained.items() if p}
    assert not any("yard" in t for t in again)
    assert {t: u for t, u in first.items() if "yard" not in t} == again, "unique ids stay the same across restarts"


def test_tls_with_a_ca_and_client_certificates(tmp_path):
    tls = make_certificates(tmp_path / "tls")
    with MosquittoBroker(folder=tmp_path / "broker", tls=tls, require_certificate=True) as broker, \
            Subscriber(broker.port, ["framehive/#"], tls=tls) as sub, \
            MqttMaster(tmp_path, broker, ca_file=str(tls.ca), cert_file=str(tls.client_cert),
                       key_file=str(tls.client_key)) as m:
        assert m.settings.tls and broker.url.startswith("mqtts://")
        wait_until(m.client.connected.is_set, 10)
        m.walk_past()
        wait_until(lambda: len(sub.on("framehive/porch/events")) >= 2, 10)


def test_a_wrong_password_is_refused_with_one_clear_line_and_the_master_goes_on(tmp_path, caplog):
    (tmp_path / "mqtt.pw").write_text("not-it\n")
    caplog.set_level(logging.INFO, logger="master.mqtt")
    with MosquittoBroker(folder=tmp_path / "broker", users={"master": "m-secret"}) as broker, \
            MqttMaster(tmp_path, broker, username="master", password_file=str(tmp_path / "mqtt.pw")) as m:
        wait_until(lambda: m.client.counters["failures"] >= 2, 10)
        m.walk_past()  # results, tracking, counts and events go on
        assert m.svc.counts()["porch"]["lines"]["gate"] == {"in": {"person": 1}, "out": {"person": 1}}
        assert [e["phase"] for e in m.porch.events()] == ["start", "end"]
        assert m.svc.results(5000, 0, 1000)["results"][-1].seq == m.porch.seq - 1
        wait_until(lambda: m.client.outbox.waiting() >= 4, 5)  # the events wait for a broker that takes them
        assert not m.client.connected.is_set()
    refused = [r for r in caplog.records if "refused the connection" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.ERROR, [r.getMessage() for r in caplog.records]
    assert "username and password_file" in refused[0].getMessage() and "not-it" not in caplog.text


def event(n: int) -> Event:
    return Event(f"ev-{n}", "cross", 5000, n, n, float(n), float(n), float(n), 1,
                 Detection("person", 0.9, (1, 2, 3, 4)), f"t{n}", kind="cross", camera="porch", phase="start",
                 track_id=n, place="gate", direction="in")


def test_no_qos1_event_is_lost_when_the_broker_restarts_or_is_killed_under_load(tmp_path, broker):
    topic = "framehive/porch/events"
    with Subscriber(broker.port, [topic], client_id="test-listener", persistent=True) as sub, \
            MqttMaster(tmp_path, broker) as m:
        wait_until(m.client.connected.is_set, 10)
        wait_until(lambda: (broker.folder / "db" / "mosquitto.db").exists(), 5)  # the listener's session is saved
        sent: list[int] = []

        def under_load(restart: Callable[[], None]) -> None:
            """~200 events a second while `restart` runs, until every one of them has arrived."""
            stop, connects = threading.Event(), m.client.counters["connects"]

            def produce() -> None:
                while not stop.wait(0.004):
                    sent.append(len(sent))
                    m.bridge.on_event(event(sent[-1]))
            producer = threading.Thread(target=produce)
            producer.start()
            try:
                wait_until(lambda: len(sub.on(topic)) >= len(sent) - 10 > 100, 10)
                restart()
                wait_until(lambda: m.client.counters["connects"] > connects
                           and len(sub.on(topic)) >= len(sent) - 50, 15)
            finally:
                stop.set()
                producer.join(5)
            wait_until(lambda: {m.json()["id"] for m in sub.on(topic)} >= {f"ev-{n}" for n in sent}, 15)

        under_load(broker.restart)  # SIGTERM with messages in flight both ways; persistence keeps the listener's
        under_load(lambda: broker.restart(kill=True))  # SIGKILL: as of its last autosave (1 s)
        # killed while nothing is on its way: what the master queues meanwhile goes out after the restart
        broker.kill()
        wait_until(lambda: not m.client.connected.is_set(), 5)
        for n in range(len(sent), len(sent) + 50):
            sent.append(n)
            m.bridge.on_event(event(n))
        broker.start()
        wait_until(lambda: {m.json()["id"] for m in sub.on(topic)} >= {f"ev-{n}" for n in sent}, 15)
    got = [msg.json()["id"] for msg in sub.on(topic)]
    assert set(got) == {f"ev-{n}" for n in sent}
    assert m.client.outbox.stats()["waiting"] == 0 and m.client.outbox.stats()["dropped_events"] == 0
    print(f"{len(sent)} events, {len(got) - len(set(got))} delivered twice (at least once), "
          f"outbox {m.client.outbox.stats()}")


def test_the_outbox_is_bounded_while_the_broker_is_down(tmp_path, broker):
    topic = "framehive/porch/events"
    with Subscriber(broker.port, [topic], client_id="test-bounded", persistent=True) as sub, \
            MqttMaster(tmp_path, broker, max_queued=50) as m:
        wait_until(m.client.connected.is_set, 10)
        broker.stop()
        wait_until(lambda: not m.client.connected.is_set(), 5)
        for n in range(80):
            m.bridge.on_event(event(n))
        assert m.client.outbox.stats()["dropped_events"] == 110  # two messages an event: the oldest 110 went
        broker.start()
        wait_until(lambda: len(sub.on(topic)) >= 25, 15)
        wait_until(lambda: m.client.outbox.waiting() == 0, 5)
    ids = [msg.json()["id"] for msg in sub.on(topic)]
    assert ids == [f"ev-{n}" for n in range(55, 80)]
