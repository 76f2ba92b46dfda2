"""MQTT end to end: a whole cluster (master with a [mqtt] table, receiver, worker, publisher) streams the
generated walkway clip (one dwell, one crossing each way; cluster/testdata.py) while the broker is
killed and started again. Every event the master logged reaches the camera's topic, the retained line
counts equal get_counts, Home Assistant finds the camera's entities, and the master stops cleanly.
"""

from __future__ import annotations

import json

import pytest

from cluster.local import LocalCluster, free_udp_ports, wait_for_log
from cluster.mqttbroker import MosquittoBroker
from cluster.testdata import walkway_camera, walkway_clip
from tests.conftest import wait_until
from tests.hadiscovery import problems
from tests.mqttsub import Subscriber

TOPIC = "fh/walkway/events"
NODE = "homeassistant/{}/framehive_e2e/{}/config"
ENTRIES = 6  # event entries the clip raises: the dwell's start and end, each crossing's start and end


def config(port: int, clip: str, broker_url: str) -> str:
    return f'''[receivers.hub]
ports = [{port}]

[mqtt]
url = "{broker_url}"
prefix = "fh"
node_id = "e2e"
stats_interval_s = 2
''' + walkway_camera(port, clip, cross=True)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("walkway") / "walkway.mp4"
    return str(path), walkway_clip(path)


def received(sub: Subscriber) -> set[tuple[str, str]]:
    return {(e["id"], e["phase"]) for e in (m.json() for m in sub.on(TOPIC))}


def test_a_streamed_clip_reaches_mqtt_through_a_broker_restart(tmp_path, clip):
    path, truth = clip
    [port] = free_udp_ports(1)
    with MosquittoBroker(folder=tmp_path / "broker") as broker, \
            Subscriber(broker.port, ["fh/#", "homeassistant/#"], client_id="e2e-listener", persistent=True) as sub:
        wait_until(lambda: (broker.folder / "db" / "mosquitto.db").exists(), 5)  # the listener's session is kept
        cfg = tmp_path / "framehive.toml"
        cfg.write_text(config(port, path, broker.url))
        with LocalCluster(log_dir=tmp_path / "logs") as cluster:
            master = cluster.start_master("--config", str(cfg))
            wait_until(lambda: sub.latest("fh/available") == b"online", 15)
            rx = cluster.spawn("hub", "receiver", "--name", "hub", "--master", cluster.master_url)
            wait_for_log(rx, "receiving UDP", 30)
            cluster.start_workers(1, "--threads", "1", "--preload", "person")
            pub = cluster.start_publisher(port, path, "--fps", "10")
            with cluster.client() as c:
                # the broker dies as the first event arrives, and stays down until the master has logged
                # another event (it waits in the master's outbox), then comes back
                wait_until(lambda: received(sub), 60)
                broker.kill()
                logged = len(c.call("get_events", 0, 100)["events"])
                wait_until(lambda: len(c.call("get_events", 0, 100)["events"]) > min(logged, ENTRIES - 1), 30)
                broker.start()
                wait_until(lambda: pub.popen.poll() is not None, 120)
                # the last crossing ends the clip's events; on a loaded machine the worker may lag behind
                wait_until(lambda: len(c.call("get_events", 0, 100)["events"]) >= ENTRIES, 120)
                counts = c.call("get_counts")["walkway"]["lines"]["exit"]
                events = c.call("get_events", 0, 100)["events"]
            crossings = truth["crossings"]
            assert counts == {"out": {"person": crossings["right"]}, "in": {"person": crossings["left"]}}
            assert [e["phase"] for e in events if e["rule"] == "loiter"] == ["start", "end"]
            assert sorted(e["direction"] for e in events if e["rule"] == "crossing" and e["phase"] == "start") == \
                ["in", "out"]
            logged = {(e["id"], e["phase"]) for e in events}
            wait_until(lambda: received(sub) >= logged, 30)  # every entry, those logged while the broker was down too
            for direction, by_label in counts.items():
                wait_until(lambda d=direction, n=by_label["person"]:
                           sub.latest(f"fh/walkway/lines/exit/{d}/person") == str(n).encode(), 10)
            assert "mqtt: connected" in master.log_text() and "lost the connection" in master.log_text()

        with Subscriber(broker.port, ["fh/#", "homeassistant/#"]) as late:  # what a newcomer finds retained
            wait_until(lambda: late.latest(NODE.format("camera", "walkway_snapshot")), 10)
            retained = {m.topic: m.payload for m in late.messages if m.retain}
    assert retained["fh/available"] == b"offline"  # the master said so as it stopped
    for direction, by_label in counts.items():
        assert retained[f"fh/walkway/lines/exit/{direction}/person"] == str(by_label["person"]).encode()
    assert retained["fh/walkway/snapshot"][:2] == b"\xff\xd8"
    configs = {t: json.loads(p) for t, p in retained.items() if t.startswith("homeassistant/") and p}
    for entity in (("binary_sensor", "walkway_person_detected"), ("sensor", "walkway_person_count"),
                   ("sensor", "walkway_zone_middle_person"), ("sensor", "walkway_line_exit_in_person"),
                   ("sensor", "walkway_line_exit_out_person"), ("camera", "walkway_snapshot")):
        assert NODE.format(*entity) in configs, entity
    assert all(problems(t, c) == [] for t, c in configs.items())
