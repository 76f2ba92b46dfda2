"""Every MQTT topic and payload the master publishes, and Home Assistant's discovery configs: pure.

Names. Camera, zone and line names in framehive.toml are already lowercase letters, digits, - and _;
labels are COCO names, some with spaces ("traffic light"). `segment()` turns any name into one topic
level of those characters (anything else becomes _), which is also what Home Assistant accepts in a
discovery topic's node and object ids. A label whose segment is a word the camera's own topics use
(events, snapshot, zones, lines, detect) becomes label_<word>, so no two topics mean two things.

Topics, with P the prefix and C a camera (docs/MQTT.md has a payload example for each):

    P/available                       online / offline, retained; offline is also the last will
    P/events  and  P/C/events         one JSON per event entry (start, update, end), QoS 1, not retained
    P/C/<label>                       tracked objects of that label in view now
    P/C/zones/<zone>/<label>          objects of the label in the zone now
    P/C/lines/<line>/<dir>/<label>    crossings counted since the counts began (get_counts)
    P/C/snapshot                      the latest event snapshot, JPEG bytes
    P/C/detect/state, P/C/detect/set  detection ON / OFF, and the command to change it
    P/reload/set, P/reload/state      reload the config file, and what came of it (JSON)
    P/stats                           compact health JSON

Unique ids are framehive_<node>_<object id>, where node is the cluster's `node_id` (by default its
address and port, so the same master gives the same ids after a restart) and the object id names the
camera and what the entity shows; the discovery topic is <discovery prefix>/<component>/framehive_<node>/
<object id>/config. An entity goes away when an empty retained message replaces its config.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from common.errors import PipelineSpecError
from common.pipeline import parse_pipeline
from master.alerts.events import Event, to_wire

AVAILABLE, NOT_AVAILABLE = "online", "offline"
ON, OFF = "ON", "OFF"
RELOAD_PAYLOAD = "RELOAD"
RESERVED = frozenset({"events", "snapshot", "zones", "lines", "detect"})
MAX_SEGMENT = 64
# `objects` without labels detects these (worker/detectors: DEFAULT_OBJECTS); roles do not import each other
OBJECTS_DEFAULT = ("person", "bicycle", "car", "motorcycle", "bus", "truck", "cat", "dog", "bird")
PERSON_STAGES = ("person", "person-ssd", "person-hog")
_NOT_SEGMENT = re.compile(r"[^a-z0-9_-]+")
_BAD_PREFIX = re.compile(r"[+#\x00]")


def segment(name: str) -> str:
    """`name` as one topic level: lowercase letters, digits, - and _ (runs of anything else become one _)."""
    s = _NOT_SEGMENT.sub("_", str(name).strip().lower()).strip("_")
    return s[:MAX_SEGMENT] or "_"


def label_segment(label: str) -> str:
    """A label's topic level; one that would read as a camera's own topic gets `label_` before it."""
    s = segment(label)
    return f"label_{s}" if s in RESERVED else s


def check_prefix(prefix: str, what: str = "prefix") -> str:
    """A topic prefix (one or more levels, e.g. `framehive` or `home/framehive`); ValueError says why not."""
    if not prefix or prefix.startswith(("/", "$")) or prefix.endswith("/") or "//" in prefix:
        raise ValueError(f"{what} must be topic levels joined by '/', not starting with '$' or '/', got {prefix!r}")
    if _BAD_PREFIX.search(prefix) or len(prefix.encode()) > 512:
        raise ValueError(f"{what} must not contain '+', '#' or NUL (at most 512 bytes), got {prefix!r}")
    return prefix


def default_node_id(host: str, port: int) -> str:
    """The cluster's id in unique ids when none is configured: the master's address and port (its host
    name when it binds every address), so it stays the same across restarts."""
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return segment(f"{host}_{port}")


@dataclass(frozen=True)
class CameraInfo:
    """What MQTT needs to know of a camera: its name, port, the labels it reports, its zones and lines."""

    name: str
    port: int
    labels: tuple[str, ...] = ()
    zones: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (zone, labels it keeps; empty: the camera's)
    lines: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = ()  # (line, directions, labels)

    def zone_labels(self, labels: tuple[str, ...]) -> tuple[str, ...]:
        return labels or self.labels


def pipeline_labels(spec: str) -> tuple[str, ...]:
    """The labels a pipeline's detectors report (`objects` without labels: its default set; an ONNX
    model's are unknown until seen)."""
    try:
        stages = parse_pipeline(spec)
    except PipelineSpecError:
        return ()
    labels: list[str] = []
    for stage in stages:
        if stage.name in PERSON_STAGES:
            labels.append("person")
        elif stage.name == "face":
            labels.append("face")
        elif stage.name == "objects":
            given = stage.args[0]
            labels += [p.strip().replace("_", " ") for p in given.split("+") if p.strip()] if given \
                else OBJECTS_DEFAULT
    return tuple(dict.fromkeys(labels))


def camera_info(spec: Any) -> CameraInfo:
    """A CameraInfo from a config file's CameraSpec (master/clusterfile.py)."""
    zones = tuple((z.name, tuple(z.labels)) for z in spec.zones)
    lines = tuple((ln.name, tuple(ln.directions), tuple(ln.labels)) for ln in spec.lines)
    extra = [label for _, labels in zones for label in labels] + [label for *_, labels in lines for label in labels]
    labels = tuple(dict.fromkeys([*pipeline_labels(spec.pipeline), *extra]))
    return CameraInfo(spec.name, spec.port, labels, zones, lines)


class Topics:
    """The topic names of one master: its prefix, Home Assistant's discovery prefix, its node id."""

    def __init__(self, prefix: str = "framehive", *, discovery_prefix: str = "homeassistant",
                 node_id: str = "framehive") -> None:
        self.prefix = check_prefix(prefix)
        self.discovery_prefix = check_prefix(discovery_prefix, "discovery_prefix")
        self.node_id = segment(node_id)
        self.node = f"framehive_{self.node_id}"  # the discovery topics' node level and the unique ids' start

    @property
    def available(self) -> str:
        return f"{self.prefix}/available"

    @property
    def events(self) -> str:
        return f"{self.prefix}/events"

    @property
    def stats(self) -> str:
        return f"{self.prefix}/stats"

    @property
    def reload_set(self) -> str:
        return f"{self.prefix}/reload/set"

    @property
    def reload_state(self) -> str:
        return f"{self.prefix}/reload/state"

    @property
    def detect_set_filter(self) -> str:
        return f"{self.prefix}/+/detect/set"

    @property
    def discovery_filter(self) -> str:
        """Every discovery config of this node (read back at connect to remove leftovers)."""
        return f"{self.discovery_prefix}/+/{self.node}/+/config"

    @property
    def ha_status(self) -> str:
        """Where Home Assistant says `online` when it starts (its birth message)."""
        return f"{self.discovery_prefix}/status"

    def camera(self, camera: str) -> str:
        return f"{self.prefix}/{segment(camera)}"

    def camera_events(self, camera: str) -> str:
        return f"{self.camera(camera)}/events"

    def label(self, camera: str, label: str) -> str:
        return f"{self.camera(camera)}/{label_segment(label)}"

    def zone(self, camera: str, zone: str, label: str) -> str:
        return f"{self.camera(camera)}/zones/{segment(zone)}/{label_segment(label)}"

    def line(self, camera: str, line: str, direction: str, label: str) -> str:
        return f"{self.camera(camera)}/lines/{segment(line)}/{segment(direction)}/{label_segment(label)}"

    def snapshot(self, camera: str) -> str:
        return f"{self.camera(camera)}/snapshot"

    def detect_state(self, camera: str) -> str:
        return f"{self.camera(camera)}/detect/state"

    def detect_set(self, camera: str) -> str:
        return f"{self.camera(camera)}/detect/set"

    def discovery(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node}/{object_id}/config"

    def is_discovery(self, topic: str) -> bool:
        parts = topic.split("/")
        base = self.discovery_prefix.split("/")
        return (len(parts) == len(base) + 4 and parts[:len(base)] == base and parts[len(base) + 1] == self.node
                and parts[-1] == "config")

    def command(self, topic: str) -> tuple[str, str] | None:
        """("detect", camera segment) or ("reload", "") for a command topic, else None."""
        if topic == self.reload_set:
            return "reload", ""
        head = f"{self.prefix}/"
        if topic.startswith(head) and topic.endswith("/detect/set"):
            camera = topic[len(head):-len("/detect/set")]
            if camera and "/" not in camera:
                return "detect", camera
        return None


# ----- payloads ----------------------------------------------------------------------------------

def dumps(value: Any) -> bytes:
    """Compact JSON, keys sorted (equal states give equal bytes, so unchanged ones are not sent again)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()


def event_payload(event: Event) -> bytes:
    """An event entry as published: its wire form (master.alerts.events.to_wire), snapshot as a flag."""
    return dumps(to_wire(event))


def number(n: int | float) -> bytes:
    return str(int(n)).encode()


def live_counts(tracks: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Tracked objects per label now: confirmed tracks, and those missed for a moment (lost, at most
    1.5 s before they are dropped), so a count does not flicker when the detector misses a frame."""
    counts: dict[str, int] = {}
    for t in tracks:
        if t.get("state") in ("confirmed", "lost"):
            counts[t["label"]] = counts.get(t["label"], 0) + 1
    return counts


def camera_state(topics: Topics, cam: CameraInfo, *, live: Mapping[str, int], counts: Mapping[str, Any] | None,
                 detection: bool) -> dict[str, bytes]:
    """Every retained state topic of a camera and its payload: objects per label now (the camera's
    labels and any in `live`), each zone's objects now, each line's crossings by direction and label
    (from service.counts()), and whether detection is on."""
    state = {topics.label(cam.name, label): number(live.get(label, 0)) for label in (*cam.labels, *live)}
    counts = counts or {}
    for zone, zone_labels in cam.zones:
        found = counts.get("zones", {}).get(zone, {})
        now = found.get("now", {})
        for label in (*cam.zone_labels(zone_labels), *found.get("entered", {}), *now):
            state[topics.zone(cam.name, zone, label)] = number(now.get(label, 0))
    for line, directions, line_labels in cam.lines:
        found = counts.get("lines", {}).get(line, {})
        for direction in directions:
            by_label = found.get(direction, {})
            for label in (*cam.zone_labels(line_labels), *by_label):
                state[topics.line(cam.name, line, direction, label)] = number(by_label.get(label, 0))
    state[topics.detect_state(cam.name)] = (ON if detection else OFF).encode()
    return state


def stats_payload(stats: Mapping[str, Any], names: Mapping[int, str], *, now: float,
                  mqtt: Mapping[str, Any] | None = None) -> bytes:
    """The compact health JSON: workers alive, the queue, per camera its frames per second, and MQTT's
    own delivery counters."""
    workers = stats.get("workers", [])
    cameras = {}
    for port, c in sorted(stats.get("ports", {}).items(), key=lambda kv: int(kv[0])):
        key = names.get(int(port), str(port))
        cameras[key] = {"port": int(port), "fps": round(float(c.get("fps", 0.0)), 2),
                        "pending": int(c.get("pending", 0)), "results": int(c.get("results", 0))}
    return dumps({"at": round(now, 3), "uptime_s": round(float(stats.get("uptime_s", 0.0)), 1),
                  "workers_alive": sum(1 for w in workers if w.get("alive")), "workers": len(workers),
                  "queue": {"pending": int(stats.get("pending", 0)), "in_progress": int(stats.get("in_progress", 0))},
                  "cameras": cameras, "events": int(stats.get("events", {}).get("total", 0)),
                  **({"mqtt": dict(mqtt)} if mqtt is not None else {})})


# ----- Home Assistant discovery ----------------------------------------------------------------

def _device_class(label: str) -> str:
    return "occupancy" if label == "person" else "motion"


class Discovery:
    """Home Assistant discovery configs (topic -> config dict) for a cluster and its cameras.

    Per camera (one HA device each, linked to the cluster's device): a binary_sensor per label (on
    while at least one is tracked; occupancy for people, motion for the rest), a sensor per label
    with the count, one per zone and label (objects in it now), one per line, direction and label
    (crossings, total_increasing), a camera with the latest event snapshot, and with commands on, a
    switch turning detection on and off. The cluster's device: its status (connectivity, from the
    availability topic), workers alive and queued frames (from the stats topic), and with commands on
    a button to reload the config file. Every entity but the status follows the availability topic.
    """

    def __init__(self, topics: Topics, *, commands: bool = False, version: str = "") -> None:
        self.topics, self.commands, self.version = topics, commands, version

    def uid(self, object_id: str) -> str:
        return f"{self.topics.node}_{object_id}"

    @property
    def cluster_device(self) -> dict[str, Any]:
        version = {"sw_version": self.version} if self.version else {}
        return {"identifiers": [self.topics.node], "name": f"framehive {self.topics.node_id}",
                "manufacturer": "framehive", "model": "cluster", **version}

    def camera_device(self, camera: str) -> dict[str, Any]:
        return {"identifiers": [self.uid(segment(camera))], "name": camera, "manufacturer": "framehive",
                "model": "camera", "via_device": self.topics.node}

    def _entity(self, component: str, object_id: str, device: dict[str, Any], body: dict[str, Any],
                *, available: bool = True) -> tuple[str, dict[str, Any]]:
        config = {"unique_id": self.uid(object_id), "device": device, "qos": 1,
                  "origin": {"name": "framehive", **({"sw_version": self.version} if self.version else {})}, **body}
        if available:
            config["availability"] = [{"topic": self.topics.available, "payload_available": AVAILABLE,
                                       "payload_not_available": NOT_AVAILABLE}]
        return self.topics.discovery(component, object_id), config

    def configs(self, cameras: Iterable[CameraInfo]) -> dict[str, dict[str, Any]]:
        """Every config topic of the cluster and `cameras`, with its config."""
        out = dict(self.cluster())
        for cam in cameras:
            out.update(self.camera(cam))
        return out

    def cluster(self) -> list[tuple[str, dict[str, Any]]]:
        t, dev = self.topics, self.cluster_device
        items = [
            self._entity("binary_sensor", "status", dev, {
                "name": "status", "state_topic": t.available, "payload_on": AVAILABLE, "payload_off": NOT_AVAILABLE,
                "device_class": "connectivity", "entity_category": "diagnostic"}, available=False),
            self._entity("sensor", "workers_alive", dev, {
                "name": "workers alive", "state_topic": t.stats, "value_template": "{{ value_json.workers_alive }}",
                "state_class": "measurement", "icon": "mdi:server"}),
            self._entity("sensor", "queue", dev, {
                "name": "frames queued", "state_topic": t.stats, "value_template": "{{ value_json.queue.pending }}",
                "state_class": "measurement", "icon": "mdi:tray-full"}),
        ]
        if self.commands:
            items.append(self._entity("button", "reload", dev, {
                "name": "reload config", "command_topic": t.reload_set, "payload_press": RELOAD_PAYLOAD,
                "entity_category": "config"}))
        return items

    def camera(self, cam: CameraInfo) -> list[tuple[str, dict[str, Any]]]:
        t, dev, c = self.topics, self.camera_device(cam.name), segment(cam.name)
        items = []
        for label in cam.labels:
            ls = label_segment(label)
            items.append(self._entity("binary_sensor", f"{c}_{ls}_detected", dev, {
                "name": label, "state_topic": t.label(cam.name, label), "payload_on": ON, "payload_off": OFF,
                "value_template": "{{ 'ON' if (value | int(0)) > 0 else 'OFF' }}",
                "device_class": _device_class(label)}))
            items.append(self._entity("sensor", f"{c}_{ls}_count", dev, {
                "name": f"{label} count", "state_topic": t.label(cam.name, label), "state_class": "measurement",
                "icon": "mdi:counter"}))
        for zone, labels in cam.zones:
            for label in cam.zone_labels(labels):
                items.append(self._entity("sensor", f"{c}_zone_{segment(zone)}_{label_segment(label)}", dev, {
                    "name": f"{zone} {label}", "state_topic": t.zone(cam.name, zone, label),
                    "state_class": "measurement", "icon": "mdi:vector-square"}))
        for line, directions, labels in cam.lines:
            for direction in directions:
                for label in cam.zone_labels(labels):
                    oid = f"{c}_line_{segment(line)}_{segment(direction)}_{label_segment(label)}"
                    items.append(self._entity("sensor", oid, dev, {
                        "name": f"{line} {direction} {label}", "state_topic": t.line(cam.name, line, direction, label),
                        "state_class": "total_increasing", "icon": "mdi:counter"}))
        items.append(self._entity("camera", f"{c}_snapshot", dev, {"name": "snapshot", "topic": t.snapshot(cam.name)}))
        if self.commands:
            items.append(self._entity("switch", f"{c}_detection", dev, {
                "name": "detection", "command_topic": t.detect_set(cam.name), "state_topic": t.detect_state(cam.name),
                "payload_on": ON, "payload_off": OFF, "entity_category": "config"}))
        return items
