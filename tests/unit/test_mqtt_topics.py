"""MQTT names and payloads (master/mqtt/topics.py) and Home Assistant discovery configs, checked
against Home Assistant's documented discovery rules (tests/hadiscovery.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.tasks import Detection
from master.alerts.events import Event, to_wire
from master.clusterfile import parse
from master.mqtt.topics import (
    CameraInfo,
    Discovery,
    Topics,
    camera_info,
    camera_state,
    check_prefix,
    default_node_id,
    event_payload,
    label_segment,
    live_counts,
    pipeline_labels,
    segment,
    stats_payload,
)
from tests.hadiscovery import problems

CONFIG = '''[cameras.front-door]
source = "synthetic"
pipeline = "objects:car+traffic_light"
[cameras.front-door.zones.steps]
points = [[0.5, 0.5], [1.0, 0.5], [1.0, 1.0]]
labels = ["person"]
[cameras.front-door.lines.gate]
a = [0.25, 0.0]
b = [0.25, 1.0]
directions = ["in", "out"]
[cameras.yard]
source = "synthetic"
'''


@given(st.text(max_size=80))
def test_a_segment_is_always_one_topic_level_home_assistant_accepts(name):
    s = segment(name)
    assert s and len(s) <= 64 and all(c.isascii() and (c.isalnum() or c in "_-") for c in s)
    assert s == s.lower() and "/" not in s and "+" not in s and "#" not in s
    assert segment(s) == s  # stable: a segment's segment is itself


def test_names_become_topic_levels():
    assert segment("front-door") == "front-door"
    assert segment("Traffic Light") == "traffic_light"
    assert segment("a/b+c#") == "a_b_c"
    assert segment("") == "_"
    assert label_segment("events") == "label_events" and label_segment("person") == "person"


@pytest.mark.parametrize("bad", ["", "/a", "a/", "a//b", "a/+", "a/#", "$SYS"])
def test_a_bad_prefix_is_refused(bad):
    with pytest.raises(ValueError):
        check_prefix(bad)


def test_every_topic_of_a_camera():
    t = Topics("home/fh", discovery_prefix="ha", node_id="hall_8000")
    assert t.available == "home/fh/available" and t.events == "home/fh/events" and t.stats == "home/fh/stats"
    assert t.camera_events("front-door") == "home/fh/front-door/events"
    assert t.label("front-door", "traffic light") == "home/fh/front-door/traffic_light"
    assert t.zone("front-door", "steps", "person") == "home/fh/front-door/zones/steps/person"
    assert t.line("front-door", "gate", "in", "person") == "home/fh/front-door/lines/gate/in/person"
    assert t.snapshot("front-door") == "home/fh/front-door/snapshot"
    assert t.discovery("sensor", "x_count") == "ha/sensor/framehive_hall_8000/x_count/config"
    assert t.is_discovery("ha/sensor/framehive_hall_8000/x_count/config")
    assert not t.is_discovery("ha/sensor/framehive_other/x_count/config")
    assert t.command("home/fh/front-door/detect/set") == ("detect", "front-door")
    assert t.command("home/fh/reload/set") == ("reload", "")
    assert t.command("home/fh/a/b/detect/set") is None and t.command("home/fh/front-door/events") is None


def test_the_node_id_is_stable_and_names_the_master():
    assert default_node_id("127.0.0.1", 8000) == default_node_id("127.0.0.1", 8000) == "127_0_0_1_8000"
    assert default_node_id("::1", 8000) == "1_8000"
    assert default_node_id("0.0.0.0", 8000) != "0_0_0_0_8000"  # the host's name, not a wildcard


def test_labels_come_from_the_pipeline_zones_and_lines():
    assert pipeline_labels("person") == ("person",)
    assert pipeline_labels("objects:car+traffic_light:0.4,face") == ("car", "traffic light", "face")
    assert pipeline_labels("objects")[:3] == ("person", "bicycle", "car")
    assert pipeline_labels("canny") == ()
    cam = camera_info(parse(CONFIG).cameras["front-door"])
    assert cam.labels == ("car", "traffic light", "person")
    assert cam.zones == (("steps", ("person",)),) and cam.lines == (("gate", ("in", "out"), ()),)


def test_an_event_is_published_as_its_wire_form():
    event = Event("ev-1", "loiter", 5000, 1, 9, 10.0, 10.9, 11.0, 9, Detection("person", 0.9, (1, 2, 3, 4)), "t1",
                  snapshot=b"\xff\xd8jpeg", kind="dwell", camera="porch", phase="start", track_id=7, place="steps")
    wire = json.loads(event_payload(event))
    assert wire == json.loads(json.dumps(to_wire(event)))
    assert wire["phase"] == "start" and wire["snapshot"] is True and wire["track_id"] == 7


def test_state_of_a_camera_matches_its_counts():
    t = Topics()
    cam = camera_info(parse(CONFIG).cameras["front-door"])
    counts = {"lines": {"gate": {"in": {"person": 3}, "out": {"car": 1}}},
              "zones": {"steps": {"now": {"person": 2}, "entered": {"person": 5}}}}
    live = live_counts([{"label": "person", "state": "confirmed"}, {"label": "person", "state": "lost"},
                        {"label": "car", "state": "tentative"}])
    assert live == {"person": 2}
    state = camera_state(t, cam, live=live, counts=counts, detection=False)
    assert state["framehive/front-door/person"] == b"2" and state["framehive/front-door/car"] == b"0"
    assert state["framehive/front-door/traffic_light"] == b"0"
    assert state["framehive/front-door/zones/steps/person"] == b"2"
    assert state["framehive/front-door/lines/gate/in/person"] == b"3"
    assert state["framehive/front-door/lines/gate/out/car"] == b"1"
    assert state["framehive/front-door/lines/gate/in/car"] == b"0"  # every label of the camera, from 0
    assert state["framehive/front-door/detect/state"] == b"OFF"
    empty = camera_state(t, cam, live={}, counts=None, detection=True)
    assert set(empty) <= set(state) and empty["framehive/front-door/zones/steps/person"] == b"0"


def test_stats_are_compact_and_name_cameras():
    stats = {"workers": [{"alive": True}, {"alive": False}], "pending": 3, "in_progress": 1, "uptime_s": 12.34,
             "ports": {"5000": {"fps": 9.87, "pending": 2, "results": 40}, "5001": {"fps": 0.0}},
             "events": {"total": 4}}
    doc = json.loads(stats_payload(stats, {5000: "hall"}, now=100.0, mqtt={"waiting": 0}))
    assert doc["workers_alive"] == 1 and doc["workers"] == 2 and doc["queue"] == {"pending": 3, "in_progress": 1}
    assert doc["cameras"]["hall"] == {"port": 5000, "fps": 9.87, "pending": 2, "results": 40}
    assert doc["cameras"]["5001"]["fps"] == 0.0 and doc["events"] == 4 and doc["mqtt"] == {"waiting": 0}


def all_configs(commands: bool = True) -> dict:
    cams = [camera_info(c) for c in parse(CONFIG).cameras.values()]
    return Discovery(Topics(node_id="hall_8000"), commands=commands, version="1.0").configs(cams)


def test_discovery_configs_follow_home_assistants_documented_schema():
    configs = all_configs()
    assert configs
    found = [p for topic, config in configs.items() for p in problems(topic, json.loads(json.dumps(config)))]
    assert found == []
    uids = [c["unique_id"] for c in configs.values()]
    assert len(uids) == len(set(uids)), "unique ids are unique"
    assert all(u.startswith("framehive_hall_8000_") for u in uids)


def test_discovery_has_the_entities_a_camera_needs():
    configs = all_configs()
    base = "homeassistant/{}/framehive_hall_8000/{}/config"
    person = configs[base.format("binary_sensor", "front-door_person_detected")]
    assert person["device_class"] == "occupancy" and person["state_topic"] == "framehive/front-door/person"
    assert configs[base.format("binary_sensor", "front-door_car_detected")]["device_class"] == "motion"
    assert configs[base.format("sensor", "front-door_traffic_light_count")]["state_class"] == "measurement"
    assert configs[base.format("sensor", "front-door_zone_steps_person")]["state_topic"] == \
        "framehive/front-door/zones/steps/person"
    assert configs[base.format("sensor", "front-door_line_gate_out_car")]["state_class"] == "total_increasing"
    assert configs[base.format("camera", "yard_snapshot")]["topic"] == "framehive/yard/snapshot"
    switch = configs[base.format("switch", "yard_detection")]
    assert switch["command_topic"] == "framehive/yard/detect/set"
    assert switch["state_topic"] == "framehive/yard/detect/state"
    assert configs[base.format("binary_sensor", "status")]["state_topic"] == "framehive/available"
    assert configs[base.format("button", "reload")]["command_topic"] == "framehive/reload/set"
    cam_device = person["device"]
    assert cam_device["identifiers"] == ["framehive_hall_8000_front-door"] and cam_device["via_device"] == \
        "framehive_hall_8000"
    assert person["availability"] == [{"topic": "framehive/available", "payload_available": "online",
                                       "payload_not_available": "offline"}]
    no_commands = all_configs(commands=False)
    assert not any("/switch/" in t or "/button/" in t for t in no_commands)


def test_unique_ids_are_the_same_after_a_restart():
    assert all_configs() == all_configs()
    assert [c["unique_id"] for c in all_configs().values()] == [c["unique_id"] for c in all_configs().values()]


@pytest.mark.parametrize("topic,config,expect", [
    ("homeassistant/sensor/n/o/config", {"name": "x"}, "missing required state_topic"),
    ("homeassistant/camera/n/o/config", {"state_topic": "a"}, "missing required topic"),
    ("homeassistant/binary_sensor/n/o/config", {"state_topic": "a", "device_class": "person"}, "device_class"),
    ("homeassistant/sensor/n/o/config", {"state_topic": "a", "device": {"identifiers": ["d"]}}, "needs a unique_id"),
    ("homeassistant/sensor/n/o/config", {"state_topic": "a", "unique_id": "u", "device": {"name": "d"}}, "identifiers"),
    ("homeassistant/sensor/n/o.p/config", {"state_topic": "a"}, "is not [a-zA-Z0-9_-]+"),
    ("homeassistant/switch/n/o/config", {"command_topic": "a/+"}, "valid publish topic"),
    ("homeassistant/sensor/n/o/config", {"state_topic": "a", "stat_class": "measurement"}, "unknown key"),
    ("homeassistant/sensor/n/o/config", {"state_topic": "a", "state_class": "count"}, "state_class"),
    ("homeassistant/sensor/o/config/x", {"state_topic": "a"}, "not <prefix>"),
])
def test_the_schema_check_can_fail(topic, config, expect):
    assert any(expect in p for p in problems(topic, config)), problems(topic, config)


def test_a_camera_without_zones_or_labels_still_has_a_snapshot():
    configs = Discovery(Topics()).camera(CameraInfo("porch", 5000))
    assert [t.split("/")[1] for t, _ in configs] == ["camera"]
