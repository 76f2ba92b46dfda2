"""The master's behaviour behind every transport: the store, the registry, long polls, the monitor.

Both the XML-RPC facade and the binary task API call these methods; neither holds logic of its own.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from common.errors import BadRequest, FramehiveError, QueueFull, TaskError, UnknownWorker
from common.imageinfo import MAX_IMAGE_PIXELS
from common.jpeginfo import jpeg_size
from common.results import Result, ResultStatus
from common.runtime import Component
from common.tasks import SEQ_WIRE_MASK, Detection, Lease, Outcome, TaskKind, TaskSpec
from common.wiredata import REPORT, STATS, clean
from master.alerts.behaviours import Action, Scene, SceneStep
from master.alerts.events import Event, EventLog, annotate, new_event_ids, to_wire
from master.alerts.rules import Rule, RuleEngine
from master.alerts.webhooks import WebhookSender
from master.core.longpoll import WakeChannel
from master.core.rates import RateMeter
from master.core.store import StoreConfig, TaskStore
from master.core.timing import BUCKETS_S, STAGES, LatencyHistograms
from master.core.workers import WorkerRegistry
from master.tracking import TrackedFrame, TrackerHub

log = logging.getLogger(__name__)

MONITOR_INTERVAL_S = 0.25
MAX_WAIT_S = 5.0  # longest a request may long-poll for work
MAX_BATCH = 256  # most tasks one request may lease
MAX_RESULTS_PAGE = 1000
LOST_LEASE_GRACE_S = 3.0  # a lease younger than this may still be on its way to the worker


SOURCE_TTL_S = 60.0  # a receiver that has not reported for this long is left out of stats
SOURCE_SETTLED_REPORTS = 3  # a source that has reported this often is settled: a newcomer cannot push it out
MAX_SOURCES = 64
SOURCE_CLASH_S = 5.0  # two instances reporting under one name within this long are two live receivers
MAX_HELD_FRAMES = 4096  # frames waiting in the tracker's reorder windows, kept for zones, lines and snapshots
MAX_HELD_BYTES = 96 * 2**20  # ... and their bytes
COUNTS_SAVE_S = 10.0  # how often changed counts are written to the journal (with --state-dir)
TRACK_ID_BLOCK = 10_000  # track ids reserved in the journal at a time
TRACK_ID_MARGIN = 1_000  # reserve the next block while this many are left


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


@dataclass(frozen=True)
class ServiceConfig:
    """Timing of the service around the store."""

    store: StoreConfig = StoreConfig()
    heartbeat_s: float = 1.0  # how often workers are asked to heartbeat
    worker_timeout_s: float = 5.0  # a worker silent this long is dead; its leases are requeued
    rules: tuple[Rule, ...] = ()  # alert rules: results -> events
    max_image_pixels: int = MAX_IMAGE_PIXELS  # frames claiming more are never decoded here (snapshots, latest)
    job_idle_s: float = 300.0  # a file job nobody adds to or takes from for this long is cancelled


class MasterService(Component):
    """Everything the master does, callable from any thread; as a Component, its thread is the lease
    monitor (and its webhook senders start and stop with it)."""

    thread_name = "lease-monitor"

    def __init__(self, config: ServiceConfig | None = None, *, clock: Callable[[], float] = time.time,
                 store: TaskStore | None = None) -> None:
        super().__init__()
        self.config = config or ServiceConfig()
        self.clock = clock
        self.store = store or TaskStore(self.config.store)
        self.workers = WorkerRegistry(self.config.worker_timeout_s)
        self.sources: dict[str, dict[str, Any]] = {}  # receivers' own counters, by name
        self._sources_lock = threading.Lock()
        self.errors: Counter[str] = Counter()  # rejected requests by kind
        self._new_event_id = new_event_ids()
        detect = [r for r in self.config.rules if r.kind == "detect"]
        self.rules = RuleEngine(detect, id_factory=self._new_event_id) if detect else None
        self.events = EventLog()
        self._rules_by_name = {r.name: r for r in self.config.rules}
        self.latency = LatencyHistograms()  # per camera port and stage (master/core/timing.py)
        self.fps = RateMeter()  # frames finished per camera per second (master/core/rates.py)
        self.webhooks = WebhookSender()  # one lane per webhook URL, started when a rule first uses it
        # per camera, in capture order: every detection gets its track id, never one an earlier life of
        # this master (with --state-dir) handed out: ids are reserved in the journal ahead of use
        self._track_ids_reserved = self.store.journal.track_ids_reserved()
        self.tracker = TrackerHub(id_floor=self._track_ids_reserved)
        # port -> its camera's zones, lines, counts and behaviour rules (config file); fed in frame order
        self.scenes: dict[int, Scene] = {}
        self._scene_lock = threading.RLock()  # tracker output to scenes, one frame after another
        self._held: OrderedDict[tuple[int, int], bytes] = OrderedDict()  # (port, seq) -> JPEG, until tracked
        self._held_bytes = 0
        self._counts_saved_at = clock()
        self._counts_dirty = False
        self.clips: Any = None  # the event clip recorder and encoder (master.media), when a media dir is set
        # called with every event entry (start, update, end) as it is logged, e.g. to publish it by MQTT;
        # a listener must only queue: it runs on the thread that completed the frame
        self.event_listeners: list[Callable[[Event], None]] = []
        self.detection_off: set[int] = set()  # ports whose frames are stored as skipped ("disabled")
        self.stats_providers: dict[str, Callable[[], dict[str, Any]]] = {}  # more sections of stats(), e.g. mqtt
        self._reserve_track_ids()
        self.cameras: Any = None  # the cluster file (master.core.cameras.Cameras) when started with --config
        self.started_at = clock()
        self._work = WakeChannel()  # lease requests waiting for a task
        self._finished = WakeChannel()  # job servers waiting for a finished tile
        self.backend: Any = None  # a dispatcher to another engine (master.backends.celery), when one is used

    # ----- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the monitor thread that requeues expired leases and dead workers' tasks (and the webhook
        senders and clip encoder)."""
        super().start()
        if self.webhooks:
            self.webhooks.start()
        if self.clips is not None:
            self.clips.start()

    def stop(self) -> None:
        """Ask the monitor to stop and wake every long poll."""
        super().stop()
        if self.webhooks:
            self.webhooks.stop()
        if self.clips is not None:
            self.clips.stop()

    def _wake(self) -> None:
        self._signal()
        self._finished.signal()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the monitor thread and the webhook senders; True when all ended."""
        ended = super().join(timeout)
        if self.clips is not None:
            ended = self.clips.join(timeout) and ended
        if self.scenes:
            self.save_counts()
        return (self.webhooks.join(timeout) if self.webhooks else True) and ended

    def run(self) -> None:
        self._monitor_loop()

    def _monitor_loop(self) -> None:
        while not self._stop.wait(MONITOR_INTERVAL_S):
            try:
                self.monitor_once()
            except Exception:  # the monitor must outlive any one bad pass
                log.exception("lease monitor pass failed")

    def monitor_once(self) -> int:
        """One monitor pass: requeue expired leases and those of workers gone silent."""
        now = self.clock()
        n = self.store.expire(now)
        for worker in self.workers.newly_dead(now):
            lost = self.store.expire(now, worker=worker, died=True)
            log.warning("worker %s silent for %.1fs: requeued %d task(s)", worker,
                        self.config.worker_timeout_s, lost)
            n += lost
        with self._scene_lock:
            self._attach(self.tracker.poll(now))  # frames whose missing predecessors will not come
            for scene in list(self.scenes.values()):
                self._act(scene.tick(now), scene, None)
        if self.clips is not None:
            self.clips.poll(now)
        if self.store.resync_journal(now):  # durable again: what lives beside the store, too
            self.store.journal.reserve_track_ids(self._track_ids_reserved)
            self._counts_dirty = self._counts_dirty or bool(self.scenes)
        if self._counts_dirty and now - self._counts_saved_at >= COUNTS_SAVE_S:
            self.save_counts()
        for job_id, dropped in self.store.expire_jobs(now, self.config.job_idle_s):
            log.warning("file job %s: no job server has touched it for %.0f s (its receiver is gone?); "
                        "cancelled, %d tile(s) dropped", job_id, self.config.job_idle_s, dropped)
        if n:
            self._signal()
            self._finished.signal()  # a tile out of attempts is a finished (failed) tile
        return n

    def _signal(self, n: int | None = None) -> None:
        """Tasks to lease: wake `n` waiting lease requests (None: all)."""
        self._work.signal(n)

    # ----- producers ---------------------------------------------------------------------------

    def add_tasks(self, items: Iterable[tuple[TaskSpec, bytes]]) -> list[str]:
        """Queue tasks; return their ids. Raises QueueFull only if none could be queued."""
        ids: list[str] = []
        full: QueueFull | None = None
        now = self.clock()
        for spec, payload in items:
            if self.detection_off and spec.kind is TaskKind.FRAME and spec.port in self.detection_off \
                    and not spec.meta.get("skip"):
                spec = dataclasses.replace(spec, meta={**spec.meta, "skip": "disabled"})
            try:
                ids.append(self.store.add(spec, payload, now))
                if spec.kind is TaskKind.FRAME and spec.meta.get("skip"):  # stored at once as a skipped result
                    self.fps.observe(spec.port, now)
                    with self._scene_lock:
                        self._attach(self.tracker.skip(str(spec.port), spec.seq & SEQ_WIRE_MASK, now))
            except QueueFull as e:
                full = e
                ids.append("")
        if any(ids):
            self._signal(sum(1 for task_id in ids if task_id))
        elif full is not None:
            raise full
        return ids

    def report_source(self, name: str, counters: Mapping[str, Any]) -> None:
        """Keep a receiver's own counters (frames complete, malformed, ...) for stats. A report that is
        not well formed is refused whole (BadRequest); a source silent for SOURCE_TTL_S is forgotten,
        and when MAX_SOURCES report at once the stalest newcomer gives way, so names cannot pile up. A
        settled source (one that has reported SOURCE_SETTLED_REPORTS times) never gives way to a new name:
        a flood of made-up names only displaces each other, and when every slot is settled a new name is
        refused (counted `sources_full`) until one falls silent."""
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise BadRequest("a source name must be a string of 1..64 characters")
        if not isinstance(counters, Mapping):
            raise BadRequest("counters must be a struct")
        counters = clean(dict(counters), REPORT, what="counters")
        ports = counters.get("ports", {})
        if not isinstance(ports, dict) or not all(
                isinstance(c, dict) and all(_is_number(v) for v in c.values()) for c in ports.values()):
            raise BadRequest("counters.ports must map each port to {counter: number}")
        now = self.clock()
        with self._sources_lock:
            for stale in [k for k, v in self.sources.items() if now - v["at"] > SOURCE_TTL_S]:
                del self.sources[stale]
            if name not in self.sources and len(self.sources) >= MAX_SOURCES:
                newcomers = [k for k, v in self.sources.items() if v["reports"] < SOURCE_SETTLED_REPORTS]
                if not newcomers:
                    if self.errors["sources_full"] in (0, 9, 99) or self.errors["sources_full"] % 1000 == 999:
                        log.warning("%d sources report already: %r is left out of stats until one falls silent",
                                    MAX_SOURCES, name[:64])
                    self.errors["sources_full"] += 1
                    return
                del self.sources[min(newcomers, key=lambda k: self.sources[k]["at"])]
            before = self.sources.get(name)
            clashes = before["clashes"] if before else 0
            if before and self._is_clash(before, counters, now):
                clashes += 1
                if clashes in (1, 10, 100) or clashes % 1000 == 0:
                    log.warning("two receivers report as %r (instances %s and %s), so each overwrites the other's "
                                "stats: give each its own --name", name, before["counters"].get("instance"),
                                counters.get("instance"))
            self.sources[name] = {"at": now, "counters": counters, "clashes": clashes,
                                  "reports": (before["reports"] if before else 0) + 1}

    @staticmethod
    def _is_clash(before: Mapping[str, Any], counters: Mapping[str, Any], now: float) -> bool:
        """Whether a report comes from another live process than the last one under its name (one that
        reported moments ago: a restarted receiver's old instance has gone quiet)."""
        old, new = before["counters"].get("instance"), counters.get("instance")
        return bool(old and new and old != new and now - before["at"] < SOURCE_CLASH_S)

    # ----- tracking ----------------------------------------------------------------------------

    def _track(self, result: Result, payload: bytes | None) -> None:
        """Feed a stored frame result to its camera's tracker (a frame without detections to track is a
        gap it predicts across) and give the frames it releases their track ids; a camera with zones,
        lines or behaviour rules keeps the frame's JPEG until then, for sizes, snapshots and clips."""
        camera, now = str(result.port), self.clock()
        with self._scene_lock:
            if result.status is ResultStatus.OK:
                if payload and result.port in self.scenes:
                    self._hold(result.port, result.seq, payload)
                self._attach(self.tracker.offer(camera, result.seq, result.captured_at, result.detections, now))
            else:
                self._attach(self.tracker.skip(camera, result.seq, now))

    def _hold(self, port: int, seq: int, payload: bytes) -> None:
        old = self._held.pop((port, seq), None)
        self._held_bytes += len(payload) - (len(old) if old else 0)
        self._held[port, seq] = payload
        while len(self._held) > MAX_HELD_FRAMES or self._held_bytes > MAX_HELD_BYTES:
            _, dropped = self._held.popitem(last=False)
            self._held_bytes -= len(dropped)
            self.tracker.counters["frames_unheld"] += 1

    def _reserve_track_ids(self) -> None:
        """Keep the journal's reservation ahead of the ids the tracker hands out (a frame gives at most a
        few hundred), so a restart never hands out an id again."""
        if self.tracker.next_id + TRACK_ID_MARGIN > self._track_ids_reserved:
            self._track_ids_reserved = self.tracker.next_id + TRACK_ID_BLOCK
            self.store.journal.reserve_track_ids(self._track_ids_reserved)

    def _attach(self, frames: list[TrackedFrame]) -> None:
        """Tracked frames, in order: their track ids to the stored results, then to their camera's scene
        (zones, lines, behaviour events) and clip recorder. Called under _scene_lock."""
        self._reserve_track_ids()
        now = self.clock()
        for frame in frames:
            port = int(frame.camera)
            dets = tuple(Detection(d.label, d.score, d.box, d.track_id) for d in frame.detections)
            if any(d.track_id for d in dets):
                self.store.attach_tracks(port, frame.seq, dets)
            payload = self._held.pop((port, frame.seq), None)
            if payload is not None:
                self._held_bytes -= len(payload)
            scene = self.scenes.get(port)
            if scene is None:
                continue
            if self.clips is not None and payload is not None:
                self.clips.frame(scene.camera, frame.seq, frame.captured_at, payload, dets, now)
            step = scene.observe(frame, jpeg_size(payload) if payload else None, now)
            self._act(step, scene, (payload, dets))

    def _act(self, step: SceneStep, scene: Scene, frame: tuple[bytes | None, tuple[Detection, ...]] | None) -> None:
        """Log a scene step's crossings and zone changes, and carry out its event actions."""
        if step.crossings or step.changes:
            self._counts_dirty = True
        for c in step.crossings:
            log.info("camera %s: track %d (%s) crossed %s: %s", scene.camera, c.track_id, c.label, c.line,
                     c.direction)
        for action in step.actions:
            self._event_action(action, frame)

    def _event_action(self, action: Action, frame: tuple[bytes | None, tuple[Detection, ...]] | None) -> None:
        """A behaviour event starts, updates or ends: its snapshot, its clip, the log, its webhook."""
        event, now = action.event, self.clock()
        payload, dets = frame if frame is not None else (None, ())
        if action.highlight is not None and payload:
            snapshot = annotate(payload, dets, action.highlight, max_pixels=self.config.max_image_pixels)
            event = dataclasses.replace(event, snapshot=snapshot)
        if self.clips is not None:
            if action.phase == "start":
                event = dataclasses.replace(event, clip=self.clips.open(event, now))
            elif action.phase == "end":
                self.clips.end(event, now)
                best = self.events.snapshot(event.id)
                if best is not None:
                    self.clips.keep_snapshot(event, best)
        else:
            event = dataclasses.replace(event, clip="none")
        self.events.add(event)
        self._tell(event)
        rule = self._rule(event.rule)
        if action.phase != "update" and (rule is None or rule.log):
            what = f" of track {event.track_id}" if event.track_id else ""
            log.info("event %s %s: rule %r (%s%s%s) on camera %s%s, %s %.2f", event.id, action.phase, event.rule,
                     event.kind, f" {event.place}" if event.place else "",
                     f" {event.direction}" if event.direction else "", event.camera, what, event.best.label,
                     event.best.score)
        if rule is not None and rule.webhook and self.webhooks and action.phase != "update":
            self.webhooks.send(rule.webhook, event)

    def clip_done(self, event_id: str, state: str) -> None:
        """The clip of an event was written ("ready") or could not be ("failed")."""
        self.events.set_clip(event_id, state)

    def event(self, event_id: str) -> dict[str, Any] | None:
        """The latest state of an event still in the log (wire form), or None."""
        event = self.events.get(event_id)
        if event is None:
            return None
        return to_wire(event, snapshot=self.event_snapshot(event_id) is not None)

    def event_snapshot(self, event_id: str) -> bytes | None:
        """An event's annotated snapshot: from memory while it is recent, else from the media directory."""
        data = self.events.snapshot(event_id)
        if data is None and self.clips is not None:
            path = self.clips.media.find_snapshot(event_id)
            try:
                data = path.read_bytes() if path is not None else None
            except OSError:
                data = None
        return data

    def clip_path(self, event_id: str) -> Any:
        """The finished clip of an event (a Path), or None."""
        return self.clips.clip_path(event_id) if self.clips is not None else None

    def _provided_stats(self) -> dict[str, Any]:
        out = {}
        for name, provide in list(self.stats_providers.items()):
            try:
                out[name] = provide()
            except Exception as e:  # one part's read-out must not break the others
                log.warning("stats of %s failed: %s", name, e)
                out[name] = {"error": str(e)[:200]}
        return out

    def _tell(self, event: Event) -> None:
        for listener in list(self.event_listeners):
            try:
                listener(event)
            except Exception:  # a listener must never cost a result or an event
                log.exception("an event listener failed on event %s", event.id)

    def set_detection(self, camera: str, enabled: bool) -> dict[str, Any]:
        """Turn detection of a camera (by name or port) off or on again: while off, its frames are stored
        as skipped results ("disabled"), so users still see them arrive and no worker spends time on them."""
        port = self._port_of(camera)
        (self.detection_off.discard if enabled else self.detection_off.add)(port)
        log.info("camera %s: detection %s", self.store.camera_names.get(port, port), "on" if enabled else "off")
        return {"camera": self.store.camera_names.get(port, ""), "port": port, "detection": enabled}

    def _port_of(self, camera: str) -> int:
        names = {v: k for k, v in self.store.camera_names.items()}
        port = names.get(camera) or (int(camera) if camera.isdigit() else None)
        if port is None:
            raise BadRequest(f"no camera {camera!r}: give a camera's name or port")
        return port

    def _rule(self, name: str) -> Rule | None:
        return self._rules_by_name.get(name)

    def counts(self) -> dict[str, Any]:
        """Per camera with lines or zones: line crossings since start (totals and per hour) by direction and
        label; per zone the objects in it now, the peak, and the entries."""
        with self._scene_lock:
            return {scene.camera: scene.counts() for _, scene in sorted(self.scenes.items())}

    def scene_view(self, port: int) -> dict[str, Any] | None:
        """What the dashboard draws on a camera's frame: its zones and lines (frame fractions) with their
        counts, and its live tracks (pixel boxes on a frame of `size`); None for a camera without any."""
        with self._scene_lock:
            scene = self.scenes.get(port)
            if scene is None:
                return None
            counts = scene.counts()
            tracks = [{"id": t.track_id, "label": t.label, "box": list(t.box), "state": t.state.value,
                       "zones": scene.zones_of(t.track_id)} for t in self.tracker.tracks(str(port))
                      if t.state.value != "tentative"]
            return {"size": list(scene.size) if scene.size else None,
                    "zones": [{"name": z.name, "points": [list(p) for p in z.points], **counts["zones"][z.name]}
                              for z in scene.zones.zones],
                    "lines": [{"name": ln.name, "a": list(ln.a), "b": list(ln.b), "directions": list(ln.directions),
                               "counts": {d: sum(counts["lines"][ln.name].get(d, {}).values()) for d in ln.directions}}
                              for ln in scene.lines.lines],
                    "tracks": tracks}

    def save_counts(self) -> None:
        """Write every camera's counts to the journal (with --state-dir), for the next life of the master."""
        with self._scene_lock:
            state = {scene.camera: scene.save() for scene in self.scenes.values()}
            self._counts_dirty, self._counts_saved_at = False, self.clock()
        self.store.journal.save_state("counts", state)

    def tracks(self, camera: str) -> dict[str, Any]:
        """A camera's live tracks (by its name or port): id, label, box, first/last seen, state."""
        port = self._port_of(camera)
        with self._scene_lock:
            scene = self.scenes.get(port)
            tracks = [{"track_id": t.track_id, "label": t.label, "box": list(t.box), "first_seen": t.first_seen,
                       "last_seen": t.last_seen, "state": t.state.value, "hits": t.hits,
                       "velocity": [round(v, 2) for v in t.velocity],
                       "zones": scene.zones_of(t.track_id) if scene else []} for t in self.tracker.tracks(str(port))]
        return {"camera": self.store.camera_names.get(port, ""), "port": port, "tracks": tracks}

    def apply_cluster(self, cluster: Any) -> None:
        """A cluster file took effect: camera names for results and stats, its zones, lines and behaviour
        rules (a camera whose lines and zones did not change keeps their counts and state), and its
        "detect" rules (with those of --rules) for the next frame."""
        self.store.camera_names = cluster.camera_names()
        rules = [*self.config.rules, *cluster.rules]
        saved = self._saved_counts() if not self.scenes else {}
        with self._scene_lock:
            scenes: dict[int, Scene] = {}
            for cam in cluster.cameras.values():
                if not (cam.enabled and (cam.lines or cam.zones)):
                    continue
                scene = Scene(cam.port, cam.name, cam.lines, cam.zones, rules, self._new_event_id)
                old = self.scenes.get(cam.port)
                if old is not None and old.camera == cam.name:
                    self._act(SceneStep(actions=scene.carry_over(old)), old, None)
                elif cam.name in saved:
                    self._restore_counts(scene, saved[cam.name])
                scenes[cam.port] = scene
            for port, old in self.scenes.items():  # a camera gone (or renamed): its lasting events end now
                if port not in scenes or scenes[port].camera != old.camera:
                    self._act(SceneStep(actions=old.end_all(self.clock())), old, None)
            self.scenes = scenes
            self._rules_by_name = {r.name: r for r in rules}
        detect = [r for r in rules if r.kind == "detect"]
        self.rules = RuleEngine(detect, id_factory=self._new_event_id) if detect else None

    def _saved_counts(self) -> dict[str, Any]:
        try:
            saved = self.store.journal.load_state("counts")
        except Exception as e:  # a journal that cannot be read must not keep the master from starting
            log.warning("cannot read the kept counts: %s", e)
            return {}
        return saved if isinstance(saved, dict) else {}

    def _restore_counts(self, scene: Scene, saved: Any) -> None:
        try:
            scene.restore(saved)
        except ValueError as e:
            log.warning("%s: starting its counts afresh", e)

    # ----- workers -----------------------------------------------------------------------------

    def register_worker(self, name: str, *, internal: bool = False) -> dict[str, Any]:
        """Register a worker; tell it its id and the timings it must keep."""
        worker_id = self.workers.register(name, self.clock(), internal=internal)
        log.info("worker %s registered", worker_id)
        return {"worker_id": worker_id, "lease_s": self.config.store.lease_s,
                "heartbeat_s": self.config.heartbeat_s}

    def heartbeat(self, worker_id: str, stats: Mapping[str, Any] | None = None,
                  held: Collection[str] | None = None) -> dict[str, Any]:
        """A worker is alive: renew its leases (those it lists in `held`, when it lists them; the
        others are requeued). `known` False means register again."""
        stats = clean(stats, STATS, what="stats") if stats is not None else None
        return self._beat(worker_id, stats, held, self.clock())

    def heartbeats(self, beats: Iterable[tuple[str, Mapping[str, Any] | None, Collection[str] | None]],
                   shared: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Heartbeats of many workers in one call (the pull loops of one process, worker/group.py): the
        `shared` stats (the process's) are cleaned once, each beat's own (its counts) go on top; one reply
        per beat, in order. Cheaper than one request per worker: K loops cost one request a period."""
        now = self.clock()
        base = clean(shared, STATS, what="stats") if shared is not None else None
        replies = []
        for worker_id, own, held in beats:
            stats = {**(base or {}), **clean(own, STATS, what="beat stats")} if own else base
            replies.append(self._beat(worker_id, stats, held, now))
        return replies

    def _beat(self, worker_id: str, stats: Mapping[str, Any] | None, held: Collection[str] | None,
              now: float) -> dict[str, Any]:
        if not self.workers.seen(worker_id, now, stats):
            return {"known": False, "renewed": 0}
        lost = 0
        if held is not None:
            held = set(held)
            lost = self.store.reclaim(worker_id, held, now, grace_s=LOST_LEASE_GRACE_S)
            if lost:
                self._signal(lost)
        return {"known": True, "renewed": self.store.renew(worker_id, now, held), "reclaimed": lost}

    def request_tasks(self, worker_id: str, max_n: int, wait_s: float = 0.0) -> list[Lease]:
        """Lease up to `max_n` tasks, waiting up to `wait_s` for one to arrive."""
        max_n = max(1, min(int(max_n), MAX_BATCH))
        deadline = time.monotonic() + max(0.0, min(float(wait_s), MAX_WAIT_S))
        if not self.workers.seen(worker_id, self.clock()):
            raise UnknownWorker(f"unknown worker_id {worker_id!r}: call register_worker first")
        return self._work.poll(lambda: self.store.request(worker_id, max_n, self.clock()), deadline, self._stop)

    def backlog(self) -> int:
        """Tasks waiting for a worker (told with every lease reply: a worker that knows others wait
        behind it may hold a second slow task and report both in one request)."""
        return self.store.waiting()

    def complete(self, worker_id: str, outcomes: Iterable[Outcome]) -> dict[str, list]:
        """Store outcomes; stale or unknown leases are rejected one by one, never stored twice."""
        accepted: list[str] = []
        rejected: list[dict[str, str]] = []
        tiles = 0
        for o in outcomes:
            payload = self.store.leased_payload(o.task_id, o.token) if self.rules or self.scenes else None
            try:
                result = self.store.complete(o.task_id, o.token, o, worker_id, self.clock())
                accepted.append(o.task_id)
            except TaskError as e:
                rejected.append({"task_id": o.task_id, "reason": str(e)})
                continue
            tiles += result.kind is TaskKind.TILE
            if result.kind is TaskKind.FRAME:
                self.fps.observe(result.port, result.completed_at)
                self._track(result, payload)
            if result.status is ResultStatus.OK and result.kind is TaskKind.FRAME:
                self.latency.observe(result.port, result.stages_ms)
            if self.rules:
                self._apply_rules(result, payload)
        self.workers.tally(worker_id, len(accepted), 0)
        if tiles:
            self._finished.signal()  # a job server may be waiting for these tiles
        return {"accepted": accepted, "rejected": rejected}

    def fail(self, worker_id: str, task_id: str, token: str, error: str) -> str:
        """A worker could not process a task; it is retried or failed. Returns the new state."""
        state = self.store.fail(task_id, token, error, self.clock())
        self.workers.tally(worker_id, 0, 1)
        self._signal(1)
        self._finished.signal()  # out of attempts, a tile is finished (failed)
        return state.value

    def release(self, worker_id: str, items: Iterable[tuple[str, str]]) -> int:
        """Hand back unprocessed leases (a worker stopping); returns how many were taken back."""
        n = 0
        for task_id, token in items:
            try:
                self.store.release(task_id, token)
                n += 1
            except FramehiveError as e:
                log.info("worker %s released %s too late: %s", worker_id, task_id, e)
        if n:
            self._signal(n)
        return n

    def _apply_rules(self, result: Result, payload: bytes | None) -> None:
        """Turn a result into events: snapshot, event log, log line, webhook."""
        assert self.rules is not None
        size = jpeg_size(payload) if payload else None
        for event in self.rules.observe(result, self.clock(), size):
            rule = self.rules.rule(event.rule)
            if payload and rule is not None:
                # the snapshot is the frame that completed the streak: report that frame's best match, so
                # the event's box is where the person is in the picture users get
                highlight = rule.matching(result.detections, size)
                here = max(highlight, key=lambda d: d.score)
                snapshot = annotate(payload, result.detections, highlight, max_pixels=self.config.max_image_pixels)
                event = dataclasses.replace(event, snapshot=snapshot, task_id=result.task_id, best=here)
            self.events.add(event)
            self._tell(event)
            if rule is None or rule.log:
                d = event.best
                log.info("event %s: rule %r on port %d, %s %.2f at %s (frames %d-%d)", event.id, event.rule,
                         event.port, d.label, d.score, list(d.box), event.first_seq, event.last_seq)
            if rule is not None and rule.webhook and self.webhooks:
                self.webhooks.send(rule.webhook, event)

    # ----- users -------------------------------------------------------------------------------

    def results(self, port: int, since: int, limit: int, incarnation: str = "") -> dict[str, Any]:
        """A page of results for one camera port (see TaskStore.results for `incarnation`)."""
        return self.store.results(port, since, max(1, min(limit, MAX_RESULTS_PAGE)), incarnation)

    def take_job_results(self, job_id: str, max_n: int, wait_s: float = 0.0,
                         ack: Collection[str] = ()) -> list[tuple[Result, bytes]]:
        """Finished tiles of a file job (removed as they are taken), waiting up to `wait_s` for one."""
        max_n = max(1, min(int(max_n), MAX_BATCH))
        deadline = time.monotonic() + max(0.0, min(float(wait_s), MAX_WAIT_S))
        if ack:
            self.store.ack_job_results(list(ack))
        return self._finished.poll(lambda: self.store.take_job_results(job_id, max_n, self.clock()), deadline,
                                   self._stop)

    def cancel_job(self, job_id: str) -> int:
        """Drop everything of a file job (its client went away); returns tasks dropped."""
        n = self.store.cancel_job(job_id)
        log.info("job %s cancelled: %d task(s) dropped", job_id, n)
        return n

    def get_events(self, since: int, limit: int) -> dict[str, Any]:
        """A page of events: {events, next, missed}."""
        return self.events.since(since, max(1, min(limit, MAX_RESULTS_PAGE)))

    def latest_frame(self, port: int) -> bytes | None:
        """The newest processed frame of a camera with its detections drawn (JPEG), if any."""
        latest = self.store.latest(port)
        return annotate(latest[1], latest[0].detections, max_pixels=self.config.max_image_pixels) if latest else None

    def _sources_snapshot(self, now: float) -> dict[str, Any]:
        with self._sources_lock:
            return {k: {**v["counters"], "age_s": round(now - v["at"], 3), "name_clashes": v["clashes"]}
                    for k, v in self.sources.items()
                    if now - v["at"] <= SOURCE_TTL_S}

    def stats(self) -> dict[str, Any]:
        """A wire-safe snapshot of the whole master."""
        now = self.clock()
        snap = self.store.snapshot()
        fps = self.fps.rates(now)
        names = self.store.camera_names
        snap["ports"] = {p: {**c, "fps": fps.get(int(p), 0.0), **({"camera": names[int(p)]} if int(p) in names else {})}
                         for p, c in snap["ports"].items()}
        return {**snap, "uptime_s": round(now - self.started_at, 3), "workers": self.workers.snapshot(now),
                "sources": self._sources_snapshot(now),
                "rejected_requests": dict(self.errors),
                "latency": {"buckets_s": list(BUCKETS_S), "ports": self.latency.snapshot(),
                            "stages": {k: {"what": v[0], "clocks": v[1]} for k, v in STAGES.items()}},
                "backend": self.backend.stats() if self.backend is not None else {"name": "builtin"},
                "journal": {"enabled": self.store.journal.enabled, "durable": self.store.journal.durable,
                            "write_errors": self.store.journal.write_errors,
                            "last_error": self.store.journal.last_error},
                "config": self.cameras.stats() if self.cameras is not None else {},
                "tracking": {"next_id": self.tracker.next_id, **dict(self.tracker.counters)},
                "counts": self.counts(),
                "media": self.clips.stats() if self.clips is not None else {},
                **self._provided_stats(),
                "events": {"total": len(self.events), "rules": self.rules.stats() if self.rules else {},
                           "webhooks": self.webhooks.stats() if self.webhooks else {}}}
