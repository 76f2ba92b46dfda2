"""Home Assistant's MQTT discovery rules as documented, for checking the configs the master publishes.

Written from Home Assistant's documentation of MQTT discovery and of the MQTT binary_sensor, sensor,
camera, switch and button platforms: the config topic's shape, each platform's required keys, the
allowed device and state classes, the device, availability and origin blocks, and the rule that an
entity with a device needs a unique_id. `problems()` returns every rule a config breaks, so a test
can show it fails on bad input as well as passing good input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

ID = re.compile(r"^[a-zA-Z0-9_-]+$")
REQUIRED = {"binary_sensor": ("state_topic",), "sensor": ("state_topic",), "camera": ("topic",),
            "switch": ("command_topic",), "button": ("command_topic",)}
COMMON = {"name", "unique_id", "device", "availability", "availability_topic", "availability_mode",
          "availability_template", "payload_available", "payload_not_available", "origin", "qos", "icon",
          "entity_category", "enabled_by_default", "json_attributes_topic", "json_attributes_template",
          "object_id", "default_entity_id", "encoding", "entity_picture"}
SPECIFIC = {
    "binary_sensor": {"state_topic", "value_template", "payload_on", "payload_off", "device_class", "expire_after",
                      "force_update", "off_delay"},
    "sensor": {"state_topic", "value_template", "device_class", "state_class", "unit_of_measurement",
               "expire_after", "force_update", "suggested_display_precision", "last_reset_value_template", "options"},
    "camera": {"topic", "image_encoding"},
    "switch": {"command_topic", "state_topic", "payload_on", "payload_off", "state_on", "state_off",
               "value_template", "command_template", "optimistic", "retain", "device_class"},
    "button": {"command_topic", "payload_press", "command_template", "retain", "device_class"},
}
BINARY_SENSOR_CLASSES = {
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door", "garage_door", "gas", "heat",
    "light", "lock", "moisture", "motion", "moving", "occupancy", "opening", "plug", "power", "presence", "problem",
    "running", "safety", "smoke", "sound", "tamper", "update", "vibration", "window"}
STATE_CLASSES = {"measurement", "total", "total_increasing"}
DEVICE_KEYS = {"identifiers", "connections", "name", "manufacturer", "model", "model_id", "sw_version", "hw_version",
               "serial_number", "suggested_area", "via_device", "configuration_url"}


def _topic_ok(topic: Any, *, publish: bool) -> bool:
    if not isinstance(topic, str) or not topic or "\x00" in topic or len(topic.encode()) > 65535:
        return False
    return not publish or ("+" not in topic and "#" not in topic)


def problems(topic: str, config: Mapping[str, Any], discovery_prefix: str = "homeassistant") -> list[str]:
    """Every documented rule `config`, published on `topic`, breaks ([] when it is fine)."""
    parts = topic.split("/")
    base = discovery_prefix.split("/")
    if parts[:len(base)] != base or parts[-1] != "config" or len(parts) not in (len(base) + 3, len(base) + 4):
        return [f"{topic}: not <prefix>/<component>/[<node_id>/]<object_id>/config"]
    component, ids = parts[len(base)], parts[len(base) + 1:-1]
    out = [f"{topic}: id {i!r} is not [a-zA-Z0-9_-]+" for i in ids if not ID.match(i)]
    if component not in REQUIRED:
        return [*out, f"{topic}: component {component!r} is not one checked here"]
    if not isinstance(config, Mapping):
        return [*out, f"{topic}: the payload is not a JSON object"]
    out += [f"{topic}: missing required {k}" for k in REQUIRED[component] if k not in config]
    unknown = set(config) - COMMON - SPECIFIC[component]
    out += [f"{topic}: unknown key {k}" for k in sorted(unknown)]
    for key in ("state_topic", "topic"):
        if key in config and not _topic_ok(config[key], publish=False):
            out.append(f"{topic}: {key} is not a valid topic")
    if "command_topic" in config and not _topic_ok(config["command_topic"], publish=True):
        out.append(f"{topic}: command_topic is not a valid publish topic")
    out += _device_problems(topic, config)
    out += _availability_problems(topic, config)
    if component == "binary_sensor" and config.get("device_class", "motion") not in BINARY_SENSOR_CLASSES:
        out.append(f"{topic}: device_class {config['device_class']!r} is not a binary_sensor class")
    if component == "sensor" and config.get("state_class", "measurement") not in STATE_CLASSES:
        out.append(f"{topic}: state_class {config['state_class']!r} is not one of {sorted(STATE_CLASSES)}")
    if config.get("qos", 0) not in (0, 1, 2):
        out.append(f"{topic}: qos must be 0, 1 or 2")
    if config.get("entity_category", "config") not in ("config", "diagnostic"):
        out.append(f"{topic}: entity_category must be config or diagnostic")
    origin = config.get("origin", {"name": ""})
    if not (isinstance(origin, Mapping) and isinstance(origin.get("name"), str)):
        out.append(f"{topic}: origin needs a name")
    return out


def _device_problems(topic: str, config: Mapping[str, Any]) -> list[str]:
    device = config.get("device")
    if device is None:
        return []
    out = []
    if not isinstance(config.get("unique_id"), str) or not config["unique_id"]:
        out.append(f"{topic}: an entity with a device needs a unique_id")
    if not isinstance(device, Mapping):
        return [*out, f"{topic}: device must be an object"]
    ids = device.get("identifiers")
    if not (device.get("connections") or (isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids))):
        out.append(f"{topic}: device needs identifiers (a list of strings) or connections")
    out += [f"{topic}: unknown device key {k}" for k in sorted(set(device) - DEVICE_KEYS)]
    return out


def _availability_problems(topic: str, config: Mapping[str, Any]) -> list[str]:
    if "availability" in config and "availability_topic" in config:
        return [f"{topic}: availability and availability_topic must not be used together"]
    items = config.get("availability", [])
    if not isinstance(items, list):
        return [f"{topic}: availability must be a list"]
    return [f"{topic}: availability entry without a valid topic" for a in items
            if not (isinstance(a, Mapping) and _topic_ok(a.get("topic"), publish=True))]
