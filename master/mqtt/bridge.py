"""The master's state as MQTT messages, and MQTT commands to the master: a Component of its own.

What goes out, and when:

* every event entry (start, update, end), the moment the service logs it: an event listener that
  only builds the JSON and puts it in the outbox (on `<prefix>/events` and `<prefix>/<camera>/events`,
  QoS 1), with the snapshot of a start or update on `<prefix>/<camera>/snapshot` (retained);
* once a second (`STEP_S`), the retained state: per camera the tracked objects per label, each zone's
  occupancy, each line's counts, detection on or off (topics.camera_state). Only topics whose payload
  changed are sent; a topic that is gone (a camera left the config) gets an empty retained message,
  which deletes it at the broker;
* the health JSON every `stats_interval_s`;
* Home Assistant discovery configs on every (re)connect, when the cameras change (a reload: leavers'
  configs are removed) and when Home Assistant announces it started (`homeassistant/status` online).
  At connect the bridge also reads this node's retained configs back and removes those no camera has
  any more, so a camera removed while the master was down goes too;
* on every (re)connect, everything again (a broker restarted without persistence has lost it).

Commands, only with `commands = true` (subscribed then, unsubscribed otherwise): `<prefix>/<camera>/
detect/set` ON or OFF calls `service.set_detection` and answers on `<prefix>/<camera>/detect/state`;
`<prefix>/reload/set` reloads the config file and answers with its outcome (JSON) on
`<prefix>/reload/state`. They are carried out on this Component's thread, never on the connection's.
Who may send them is the broker's ACL's business (docs/MQTT.md).

A pass that fails is logged with its traceback and the next one runs: MQTT must never take the
master's results down with it.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable
from importlib import metadata
from typing import Any

from common.errors import BadRequest
from common.runtime import Component
from master.alerts.events import Event
from master.mqtt.client import MqttClient
from master.mqtt.config import MqttSettings
from master.mqtt.outbox import Message, Outbox
from master.mqtt.topics import (
    OFF,
    ON,
    CameraInfo,
    Discovery,
    Topics,
    camera_info,
    camera_state,
    dumps,
    event_payload,
    live_counts,
    segment,
    stats_payload,
)

log = logging.getLogger(__name__)

STEP_S = 1.0  # how often retained state is compared and its changes sent
MAX_INBOX = 1024  # incoming messages waiting for the bridge's thread; beyond, the oldest are dropped
TRUE_WORDS, FALSE_WORDS = (b"ON", b"1", b"TRUE"), (b"OFF", b"0", b"FALSE")


def _version() -> str:
    try:
        return metadata.version("framehive")
    except metadata.PackageNotFoundError:
        return ""


class MqttBridge(Component):
    """Turns the service's events, counts and health into outbox messages, and commands into calls."""

    thread_name = "mqtt-bridge"

    def __init__(self, service: Any, settings: MqttSettings, outbox: Outbox, *, topics: Topics | None = None,
                 version: str | None = None, step_s: float = STEP_S) -> None:
        super().__init__()
        self.service, self.settings, self.outbox = service, settings, outbox
        self.topics = topics or Topics(settings.prefix, discovery_prefix=settings.discovery_prefix,
                                       node_id=settings.node_id)
        self.discovery = Discovery(self.topics, commands=settings.commands,
                                   version=_version() if version is None else version)
        self.step_s = step_s
        self.client_stats: Callable[[], dict[str, Any]] = dict
        self.counters: Counter[str] = Counter()
        self._nudge = threading.Event()
        self._reconnected = threading.Event()
        self._inbox: deque[tuple[str, bytes]] = deque()
        self._inbox_lock = threading.Lock()
        self._cameras: list[CameraInfo] = []
        self._camera_key: Any = None
        self._desired: dict[str, bytes] = {}  # discovery config topic -> config, for the cameras now
        self._configs: dict[str, bytes] = {}  # ... as last published
        self._state: dict[str, bytes] = {}  # retained state topic -> payload, as last published
        self._snapshots: dict[str, bytes] = {}  # camera -> its latest event snapshot
        self._seen: dict[str, set[str]] = {}  # camera -> labels tracked at some point (their count stays, at 0)
        self._stats_due = 0.0

    # ----- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Learn the cameras, listen to the service's events, start the periodic thread."""
        self._refresh_cameras()
        self.service.event_listeners.append(self.on_event)
        super().start()

    def stop(self) -> None:
        if self.on_event in self.service.event_listeners:
            self.service.event_listeners.remove(self.on_event)
        super().stop()

    def _wake(self) -> None:
        self._nudge.set()

    def run(self) -> None:
        while not self._stop.is_set():
            self._nudge.clear()
            try:
                self.step(self.service.clock())
            except Exception:  # one bad pass must not stop MQTT, still less the master
                self.counters["failed_passes"] += 1
                log.exception("mqtt: a bridge pass failed")
            self._nudge.wait(self.step_s)

    # ----- called from other threads: only queue ---------------------------------------------------

    def on_event(self, event: Event) -> None:
        """An event entry from the service (on the thread that completed the frame): queue it."""
        payload = event_payload(event)
        self.outbox.put(Message(self.topics.events, payload, qos=1))
        if not event.camera:
            return
        self.outbox.put(Message(self.topics.camera_events(event.camera), payload, qos=1))
        if event.snapshot and event.phase in ("start", "update"):
            self._snapshots[event.camera] = event.snapshot
            self.outbox.put(self._state_message(self.topics.snapshot(event.camera), event.snapshot))

    def connected(self) -> None:
        """The client (re)connected: republish everything on the bridge's thread."""
        self._reconnected.set()
        self._nudge.set()

    def received(self, topic: str, payload: bytes) -> None:
        """A message from the broker (on the connection's thread): queue it for the bridge's."""
        with self._inbox_lock:
            if len(self._inbox) >= MAX_INBOX:
                self._inbox.popleft()
                self.counters["inbox_dropped"] += 1
            self._inbox.append((topic, payload))
        self._nudge.set()

    def subscriptions(self) -> list[tuple[str, int]]:
        """What the connection subscribes to: our retained discovery configs and Home Assistant's
        birth message (QoS 0: nothing is queued for us while away), and with commands on, the command
        topics (QoS 1)."""
        subs = [(self.topics.discovery_filter, 0), (self.topics.ha_status, 0)] if self.settings.discovery else []
        if self.settings.commands:
            subs += [(self.topics.detect_set_filter, 1), (self.topics.reload_set, 1)]
        return subs

    def unsubscriptions(self) -> list[str]:
        """Command topics when commands are off: a persistent session may still hold them from a life
        that had them on."""
        return [] if self.settings.commands else [self.topics.detect_set_filter, self.topics.reload_set]

    # ----- the periodic pass -----------------------------------------------------------------------

    def step(self, now: float) -> None:
        """Carry out commands, follow camera changes, send changed state, and stats when due."""
        self._handle_inbox()
        changed = self._refresh_cameras()
        full = self._reconnected.is_set()
        self._reconnected.clear()
        if self.settings.discovery and (full or changed):
            self._publish_discovery(full=full)
        if full:
            for camera, jpeg in list(self._snapshots.items()):
                self.outbox.put(self._state_message(self.topics.snapshot(camera), jpeg))
        self._publish_state(now, full=full)
        if full or now >= self._stats_due:
            self._publish_stats(now)
            self._stats_due = now + self.settings.stats_interval_s

    def _state_message(self, topic: str, payload: bytes) -> Message:
        return Message(topic, payload, qos=self.settings.qos, retain=self.settings.retain, latest_only=True)

    def _refresh_cameras(self) -> bool:
        """The cameras MQTT publishes (the config file's enabled ones); True when they changed."""
        cams = self.service.cameras
        names = dict(self.service.store.camera_names)
        key = (cams.generation if cams is not None else 0, tuple(sorted(names.items())))
        if key == self._camera_key:
            return False
        self._camera_key = key
        if cams is not None:
            infos = [camera_info(c) for c in cams.current.cameras.values() if c.enabled]
        else:
            infos = [CameraInfo(name, port) for port, name in sorted(names.items())]
        gone = {c.name for c in self._cameras} - {c.name for c in infos}
        for camera in gone:
            self._seen.pop(camera, None)
            if self._snapshots.pop(camera, None) is not None and self.settings.retain:
                self.outbox.put(self._state_message(self.topics.snapshot(camera), b""))
        self._cameras = infos
        if self.settings.discovery:
            self._desired = {t: dumps(c) for t, c in self.discovery.configs(infos).items()}
        return True

    def _publish_discovery(self, *, full: bool) -> None:
        """New and changed configs (all of them when `full`); removed ones replaced by empty messages."""
        for topic, config in self._desired.items():
            if full or self._configs.get(topic) != config:
                self.outbox.put(Message(topic, config, qos=1, retain=True, latest_only=True))
        for topic in set(self._configs) - set(self._desired):
            self.outbox.put(Message(topic, b"", qos=1, retain=True, latest_only=True))
            self.counters["entities_removed"] += 1
        self._configs = dict(self._desired)

    def _current_state(self, now: float) -> dict[str, bytes]:
        counts = self.service.counts()
        fps = self.service.fps.rates(now)
        state: dict[str, bytes] = {}
        for cam in self._cameras:
            live: dict[str, int] = {}
            if fps.get(cam.port, 0.0) > 0:  # a camera that sent nothing for 5 s has nothing in view
                try:
                    live = live_counts(self.service.tracks(cam.name)["tracks"])
                except BadRequest:  # its name is not in force yet (a reload under way)
                    live = {}
            seen = self._seen.setdefault(cam.name, set())
            seen.update(live)
            live = {**dict.fromkeys(sorted(seen), 0), **live}
            state.update(camera_state(self.topics, cam, live=live, counts=counts.get(cam.name),
                                      detection=cam.port not in self.service.detection_off))
        return state

    def _publish_state(self, now: float, *, full: bool) -> None:
        state = self._current_state(now)
        for topic, payload in state.items():
            if full or self._state.get(topic) != payload:
                self.outbox.put(self._state_message(topic, payload))
        if self.settings.retain:
            for topic in set(self._state) - set(state):
                self.outbox.put(self._state_message(topic, b""))
        self._state = state

    def _publish_stats(self, now: float) -> None:
        mqtt = {**self.outbox.stats(), **self.client_stats(), **self.counters}
        payload = stats_payload(self.service.stats(), dict(self.service.store.camera_names), now=now, mqtt=mqtt)
        self.outbox.put(self._state_message(self.topics.stats, payload))

    # ----- incoming ---------------------------------------------------------------------------------

    def _handle_inbox(self) -> None:
        with self._inbox_lock:
            batch = list(self._inbox)
            self._inbox.clear()
        reload_asked = False
        for topic, payload in batch:
            if self.topics.is_discovery(topic):
                self._leftover(topic, payload)
            elif topic == self.topics.ha_status:
                if payload.strip().lower() == b"online":
                    self._reconnected.set()
            elif self.settings.commands:
                command = self.topics.command(topic)
                if command is not None and command[0] == "reload":
                    reload_asked = True  # several in one pass: one reload, one answer
                elif command is not None:
                    self._detect(command[1], payload)
        if reload_asked:
            self._reload()

    def _leftover(self, topic: str, payload: bytes) -> None:
        """A retained config of this node read back: remove it when no camera has it any more."""
        if payload and topic not in self._desired:
            self.outbox.put(Message(topic, b"", qos=1, retain=True, latest_only=True))
            self.counters["entities_removed"] += 1
            log.info("mqtt: removing the discovery config %s (no camera has it now)", topic)

    def _detect(self, camera_segment: str, payload: bytes) -> None:
        cam = next((c for c in self._cameras if segment(c.name) == camera_segment), None)
        if cam is None:
            self.counters["commands_refused"] += 1
            log.warning("mqtt: detect command for %r refused: no such camera", camera_segment)
            return
        word = payload.strip().upper()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            try:
                self.service.set_detection(cam.name, word in TRUE_WORDS)
            except BadRequest as e:  # its name is not in force yet (a reload under way)
                self.counters["commands_refused"] += 1
                log.warning("mqtt: detect command for camera %s refused: %s", cam.name, e)
                return
            self.counters["commands"] += 1
            log.info("mqtt: command: camera %s detection %s", cam.name, "on" if word in TRUE_WORDS else "off")
        else:
            self.counters["commands_refused"] += 1
            log.warning("mqtt: detect command for camera %s refused: payload must be ON or OFF, got %r",
                        cam.name, payload[:32])
        topic = self.topics.detect_state(cam.name)
        self._state[topic] = (OFF if cam.port in self.service.detection_off else ON).encode()
        self.outbox.put(self._state_message(topic, self._state[topic]))

    def _reload(self) -> None:
        cams = self.service.cameras
        if cams is None:
            result: dict[str, Any] = {"ok": False, "error": "the master runs without a config file (--config)"}
        else:
            result = cams.reload()
        self.counters["commands"] += 1
        log.info("mqtt: command: reload: %s", f"generation {result['generation']}" if result["ok"] else result["error"])
        self.outbox.put(Message(self.topics.reload_state, dumps(result), qos=1))  # the next _refresh_cameras follows


def build(service: Any, settings: MqttSettings, *, version: str | None = None) -> tuple[MqttClient, MqttBridge]:
    """The master's MQTT parts around one outbox: the connection and the bridge (add both to the
    Supervisor, the connection first so it is stopped after the bridge and sends what the bridge left)."""
    outbox = Outbox(max_messages=settings.max_queued, max_bytes=max(1, int(settings.max_queued_mb * 2**20)))
    bridge = MqttBridge(service, settings, outbox, version=version)
    client = MqttClient(settings, outbox, available_topic=bridge.topics.available, on_connect=bridge.connected,
                        on_message=bridge.received, subscriptions=bridge.subscriptions,
                        unsubscriptions=bridge.unsubscriptions)
    bridge.client_stats = client.stats
    return client, bridge
