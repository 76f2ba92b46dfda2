"""Prometheus `/metrics` for the master, read from `MasterService.stats()` at scrape time.

Nothing is counted twice: the collector turns one stats snapshot into metric families on every
scrape, so the numbers are exactly those `get_stats` returns. `families(stats)` is pure (a dict in,
families out); `ServiceCollector` only calls it with a fresh snapshot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from common.jobproto import TILE_PORT

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # text/plain; version=0.0.4; charset=utf-8
P = "framehive_"

# The store's totals (stats()["counters"]) that have a metric of their own; any other key lands in
# framehive_task_events_total{event=...} so a counter added later is never lost.
STORE_COUNTERS: dict[str, tuple[str, str]] = {
    "added": ("tasks_added", "Tasks queued (live frames, skip records and file-job tiles)."),
    "leased": ("tasks_leased", "Leases handed to workers (a retried task is leased again)."),
    "completed": ("tasks_completed", "Tasks whose result was stored."),
    "failed": ("tasks_failed", "Tasks failed for good after their last attempt."),
    "retried": ("task_retries", "Tasks put back in the queue for another attempt."),
    "lease_expired": ("lease_expiries", "Leases that ran out and were requeued."),
    "leases_lost": ("leases_lost", "Leases a worker no longer listed in its heartbeat (reply lost)."),
    "released": ("tasks_released", "Leases handed back unprocessed by a stopping worker."),
    "stale_completions": ("stale_completions", "Completions refused: wrong token or lease already gone."),
    "worker_failures": ("worker_failures", "Tasks a worker reported it could not process."),
    "rejected_full": ("tasks_rejected_full", "Tasks refused because the store was full."),
    "quarantined": ("tasks_quarantined", "Tasks failed without retry: workers kept dying while holding them."),
}
TILE_EVENTS = ("added", "completed", "failed", "cancelled")  # file-job tile counters, shown on their own
# Per-port store counters that are not drops.
PORT_FLOWS = {"added": "frames_in", "completed": "frames_out", "failed": "frames_failed", "skipped": "frames_skipped"}
# Receiver per-port counters that are drops, with the reason label they get.
RECEIVER_DROPS = {"frames_incomplete": "incomplete", "malformed": "malformed", "refused": "refused",
                  "refused_image": "image_refused"}
RECEIVER_COUNTERS: dict[str, tuple[str, str]] = {
    "datagrams": ("receiver_datagrams", "Datagrams received."),
    "bytes": ("receiver_bytes", "Bytes received."),
    "frames_complete": ("receiver_frames", "Frames reassembled (or received whole over imagezmq)."),
    "forwarded": ("receiver_frames_forwarded", "Frames the master accepted from the receiver."),
    "socket_errors": ("receiver_socket_errors", "Socket errors while receiving."),
}


def camera_ports(ports: Mapping[str, Any]) -> dict[str, Any]:
    """The store's per-port counters of cameras only: file-job tiles are counted under TILE_PORT (0),
    which no camera has, and belong to no camera view."""
    return {p: c for p, c in ports.items() if str(p) != str(TILE_PORT)}


def tile_counters(ports: Mapping[str, Any]) -> dict[str, float]:
    """File-job tiles the master queued, completed, failed or cancelled (all jobs together)."""
    c = ports.get(str(TILE_PORT), {})
    return {k: float(c.get(k, 0)) for k in TILE_EVENTS}


def families(stats: Mapping[str, Any]) -> list[Metric]:
    """Every metric family for one `MasterService.stats()` snapshot."""
    out: list[Metric] = []
    out += _service(stats)
    out += _ports(camera_ports(stats.get("ports", {})), stats.get("sources", {}))
    out += [_tiles(stats.get("ports", {}))]
    out += _sources(stats.get("sources", {}))
    out.append(_crossings(stats.get("counts", {})))
    out += _zones(stats.get("counts", {}))
    out += _workers(stats.get("workers", []))
    out += _events(stats.get("events", {}))
    out += _latency(stats.get("latency", {}))
    out += _job_servers(stats.get("sources", {}))
    return out


def _job_servers(sources: Mapping[str, Any]) -> list[Metric]:
    """File-job servers, as each receiver reports them: job totals, and each running job's progress."""
    events = _counter("file_jobs", "File-job server events: accepted, delivered, disconnected, refused_<code>, ...",
                      ["source", "event"])
    running = _gauge("file_jobs_running", "File jobs in progress.", ["source"])
    frames = _gauge("file_job_frames", "Frames of a running file job: total (0 if unknown), in (decoded), "
                    "out (written).", ["source", "job", "stage"])
    fallback = _gauge("file_job_fallback_tiles", "Tiles of a running file job replaced by the original.",
                      ["source", "job"])
    for name, src in sorted(sources.items()):
        report = src.get("jobs")
        if not isinstance(report, Mapping):
            continue
        counters = report.get("counters")  # the receiver's word: anything well formed, checked here
        for event, n in sorted(counters.items() if isinstance(counters, Mapping) else []):
            events.add_metric([name, event], _f(n))
        listed = report.get("jobs")
        jobs = [j for j in (listed if isinstance(listed, list) else [])
                if isinstance(j, Mapping) and j.get("state") == "running"]
        running.add_metric([name], _f(len(jobs)))
        for j in jobs:
            for stage in ("total", "in", "out"):
                frames.add_metric([name, str(j.get("job_id")), stage], _f(j.get(f"frames_{stage}", 0)))
            fallback.add_metric([name, str(j.get("job_id"))], _f(j.get("fallback_tiles", 0)))
    return [events, running, frames, fallback]


def _latency(latency: Mapping[str, Any]) -> list[Metric]:
    """Per camera and stage duration histograms (master/core/timing.py), and capture-to-result latency."""
    bounds = latency.get("buckets_s", [])
    stages = latency.get("stages", {})
    stage = HistogramMetricFamily(P + "stage_duration_seconds",
                                  "Time a frame spent in each stage, per camera port. clocks=one-host: measured "
                                  "on one host's clock; cross-host: between two hosts, includes their clock offset.",
                                  labels=["port", "stage", "clocks"])
    e2e = HistogramMetricFamily(P + "end_to_end_latency_seconds",
                                "Capture on the camera host to result stored at the master (cross-host), per port.",
                                labels=["port"])
    for port, by_stage in sorted(latency.get("ports", {}).items()):
        for name, h in sorted(by_stage.items()):
            buckets = [(_le(b), float(c)) for b, c in zip(bounds, h["buckets"])] + [("+Inf", float(h["count"]))]
            if name == "end_to_end":
                e2e.add_metric([port], buckets, float(h["sum_s"]))
            else:
                stage.add_metric([port, name, stages.get(name, {}).get("clocks", "")], buckets, float(h["sum_s"]))
    return [stage, e2e]


def _f(value: Any) -> float:
    """A number from a report as a sample value; anything that is not a finite number counts as 0, so
    one odd entry never breaks the scrape."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return 0.0


def _le(bound: float) -> str:
    return repr(float(bound))


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(P + name, doc, labels=list(labels))


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(P + name, doc, labels=list(labels))


def _service(stats: Mapping[str, Any]) -> list[Metric]:
    uptime = _gauge("uptime_seconds", "Seconds since the master started.")
    uptime.add_metric([], _f(stats.get("uptime_s", 0.0)))
    tasks = _gauge("tasks", "Tasks held by the master, by state (pending is the queue depth).", ["state"])
    for state in ("pending", "in_progress"):
        tasks.add_metric([state], _f(stats.get(state, 0)))
    held = _gauge("payload_bytes", "Payload bytes the master holds for waiting and running tasks, and its cap.",
                  ["what"])
    held.add_metric(["held"], _f(stats.get("payload_bytes", 0)))
    held.add_metric(["max"], _f(stats.get("max_payload_bytes", 0)))
    journal = stats.get("journal", {})
    durable = _gauge("journal_durable", "1 when the --state-dir journal is being written (or there is none), "
                     "0 while its writes fail (a full disk): results and tiles are then in memory only.")
    durable.add_metric([], 1.0 if journal.get("durable", True) else 0.0)
    journal_errors = _counter("journal_write_errors", "Journal writes that failed (each is retried by the next).")
    journal_errors.add_metric([], _f(journal.get("write_errors", 0)))
    fams: list[Metric] = [uptime, tasks, held, durable, journal_errors]
    counters = dict(stats.get("counters", {}))
    for key, (name, doc) in STORE_COUNTERS.items():
        fam = _counter(name, doc)
        fam.add_metric([], _f(counters.pop(key, 0)))
        fams.append(fam)
    other = _counter("task_events", "Other task-store totals, by event.", ["event"])
    for key, value in sorted(counters.items()):
        if not key.startswith("dropped_") and key not in ("skipped", "cancelled"):
            other.add_metric([key], _f(value))
    rejected = _counter("rejected_requests", "HTTP/RPC requests refused, by reason.", ["reason"])
    for reason, n in sorted(stats.get("rejected_requests", {}).items()):
        rejected.add_metric([reason], _f(n))
    return [*fams, other, rejected]


def _ports(ports: Mapping[str, Any], sources: Mapping[str, Any]) -> list[Metric]:
    """Per camera port, labelled with the camera's name from the config file ("" without one)."""
    flows = {key: _counter(name, f"Per camera port: {key} in the master's store.", ["port", "camera"])
             for key, name in PORT_FLOWS.items()}
    depth = _gauge("queue_depth", "Live frames waiting for a worker, per camera port.", ["port", "camera"])
    results = _counter("results", "Results stored per camera port (ok, error, failed or skipped).",
                       ["port", "camera"])
    drops = _counter("frames_dropped", "Frames dropped, by where (receiver or master), camera port and reason.",
                     ["stage", "port", "camera", "reason"])
    names = {port: str(c.get("camera", "")) for port, c in ports.items()}
    for port, c in sorted(ports.items()):
        name = names[port]
        for key, fam in flows.items():
            fam.add_metric([port, name], _f(c.get(key, 0)))
        depth.add_metric([port, name], _f(c.get("pending", 0)))
        results.add_metric([port, name], _f(c.get("results", 0)))
        for key, value in sorted(c.items()):
            if key.startswith("dropped_"):
                drops.add_metric(["master", port, name, key.removeprefix("dropped_")], _f(value))
    for port, reason, value in _receiver_drops(sources):
        drops.add_metric(["receiver", port, names.get(port, ""), reason], _f(value))
    return [*flows.values(), depth, results, drops]


def _crossings(counts: Mapping[str, Any]) -> Metric:
    fam = _counter("line_crossings", "Tracks that crossed a counting line, by camera, line, direction and label.",
                   ["camera", "line", "direction", "label"])
    for camera, c in sorted(counts.items()):
        for line, directions in sorted(c.get("lines", {}).items()):
            for direction, labels in sorted(directions.items()):
                for label, n in sorted(labels.items()):
                    fam.add_metric([camera, line, direction, label], _f(n))
    return fam


def _zones(counts: Mapping[str, Any]) -> list[Metric]:
    now = _gauge("zone_objects", "Tracked objects in a zone now, by camera, zone and label.",
                 ["camera", "zone", "label"])
    peak = _gauge("zone_objects_peak", "The most tracked objects that were in a zone at once since the counts "
                  "began, by camera, zone and label.", ["camera", "zone", "label"])
    entered = _counter("zone_entries", "Tracks that entered a zone, by camera, zone and label.",
                       ["camera", "zone", "label"])
    for camera, c in sorted(counts.items()):
        for zone, z in sorted(c.get("zones", {}).items()):
            labels = set(z.get("peak", {})) | set(z.get("now", {}))
            for label in sorted(labels):  # a label seen once is reported at 0 when the zone empties
                now.add_metric([camera, zone, label], _f(z.get("now", {}).get(label, 0)))
                peak.add_metric([camera, zone, label], _f(z.get("peak", {}).get(label, 0)))
            for label, n in sorted(z.get("entered", {}).items()):
                entered.add_metric([camera, zone, label], _f(n))
    return [now, peak, entered]


def _tiles(ports: Mapping[str, Any]) -> Metric:
    tiles = _counter("file_job_tiles", "File-job tiles on the master, all jobs together, by event: added, "
                     "completed, failed (after the last attempt), cancelled (their job ended first).", ["event"])
    for event, n in tile_counters(ports).items():
        tiles.add_metric([event], n)
    return tiles


def _receiver_drops(sources: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    """(port, reason, count) summed over every receiver."""
    total: dict[tuple[str, str], float] = {}
    for src in sources.values():
        for port, c in _source_ports(src).items():
            for key, value in c.items():
                reason = RECEIVER_DROPS.get(key) or _prefixed(key, ("dropped_", "skipped_"))
                if reason:
                    total[port, reason] = total.get((port, reason), 0.0) + _f(value)
    return [(p, r, v) for (p, r), v in sorted(total.items())]


def _prefixed(key: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        if key.startswith(prefix):
            return key.removeprefix(prefix)
    return ""


def _source_ports(src: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    ports = src.get("ports", {})
    return {str(p): c for p, c in ports.items() if isinstance(c, Mapping)} if isinstance(ports, Mapping) else {}


def _sources(sources: Mapping[str, Any]) -> list[Metric]:
    age = _gauge("source_report_age_seconds", "Seconds since a receiver last reported its counters.", ["source"])
    clashes = _counter("source_name_clashes", "Reports from another live receiver under the same name (give each "
                       "receiver its own --name).", ["source"])
    fams = {key: _counter(name, doc, ["source", "port"]) for key, (name, doc) in RECEIVER_COUNTERS.items()}
    for name, src in sorted(sources.items()):
        age.add_metric([name], _f(src.get("age_s", 0.0)))
        clashes.add_metric([name], _f(src.get("name_clashes", 0)))
        for port, c in sorted(_source_ports(src).items()):
            for key, fam in fams.items():
                if key in c:
                    fam.add_metric([name, port], _f(c[key]))
    return [age, clashes, *fams.values()]


def _workers(workers: list[Mapping[str, Any]]) -> list[Metric]:
    states = _gauge("workers", "Registered workers by state: busy (has a task in hand), idle, dead.", ["state"])
    count = {"busy": 0, "idle": 0, "dead": 0}
    done = _counter("worker_tasks_done", "Tasks a worker completed, as the master counted them.", ["worker"])
    failed = _counter("worker_tasks_failed", "Tasks a worker reported failed.", ["worker"])
    seen = _gauge("worker_last_seen_seconds", "Seconds since the worker's last request.", ["worker"])
    busy = _gauge("worker_busy_tasks", "Tasks in hand, from the worker's last heartbeat.", ["worker"])
    cpu = _gauge("worker_cpu_ratio", "CPU used by the worker process (1.0 = one core), last heartbeat.", ["worker"])
    rss = _gauge("worker_resident_memory_bytes", "Resident memory of the worker process, last heartbeat.",
                 ["worker"])
    refused = _counter("worker_images_refused", "Frames a worker refused unread: their header claims too many "
                       "pixels.", ["worker"])
    stage = _gauge("worker_stage_seconds", "Moving average of one stage's time per frame on the worker.",
                   ["worker", "stage", "device"])
    for w in workers:
        caps = w.get("capabilities") or {}
        refused.add_metric([str(w.get("worker_id", ""))], _f((w.get("stats") or {}).get("images_refused", 0)))
        for name, ms in (caps.get("ms") or {}).items():
            stage.add_metric([str(w.get("worker_id", "")), name, caps.get("device", "")], _f(ms) / 1000.0)
        wid, s = str(w.get("worker_id", "")), w.get("stats") or {}
        count[worker_state(w)] += 1
        done.add_metric([wid], _f(w.get("tasks_done", 0)))
        failed.add_metric([wid], _f(w.get("tasks_failed", 0)))
        seen.add_metric([wid], _f(w.get("last_seen_s", 0.0)))
        busy.add_metric([wid], _f(s.get("busy", 0)))
        if "cpu_percent" in s:
            cpu.add_metric([wid], _f(s["cpu_percent"]) / 100.0)
        if "rss_mb" in s:
            rss.add_metric([wid], _f(s["rss_mb"]) * 2**20)
    for state, n in count.items():
        states.add_metric([state], _f(n))
    return [states, done, failed, seen, busy, cpu, rss, refused, stage]


def worker_state(w: Mapping[str, Any]) -> str:
    """busy, idle or dead, from one worker's stats entry."""
    if not w.get("alive"):
        return "dead"
    return "busy" if (w.get("stats") or {}).get("busy", 0) else "idle"


def _events(events: Mapping[str, Any]) -> list[Metric]:
    kept = _gauge("events_retained", "Events held in the master's event log.")
    kept.add_metric([], float(events.get("total", 0)))
    fired = _counter("events_fired", "Events fired, by rule.", ["rule"])
    matches = _counter("rule_matches", "Results that matched a rule, by rule.", ["rule"])
    quiet = _counter("events_suppressed", "Events held back by a rule's cooldown, by rule.", ["rule"])
    for rule, c in sorted(events.get("rules", {}).items()):
        fired.add_metric([rule], float(c.get("events", 0)))
        matches.add_metric([rule], float(c.get("matches", 0)))
        quiet.add_metric([rule], float(c.get("suppressed_cooldown", 0)))
    hooks = _counter("webhooks", "Webhook deliveries by outcome.", ["outcome"])
    queued = _gauge("webhooks_queued", "Webhook deliveries waiting to be sent.")
    wh = dict(events.get("webhooks", {}))
    queued.add_metric([], float(wh.pop("queued", 0)))
    wh.pop("urls", None)
    for outcome, n in sorted(wh.items()):
        hooks.add_metric([outcome], float(n))
    return [kept, fired, matches, quiet, hooks, queued]


class ServiceCollector:
    """A prometheus-client collector: one `stats()` call per scrape."""

    def __init__(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        yield from families(self._stats())


def registry_for(stats: Callable[[], Mapping[str, Any]]) -> CollectorRegistry:
    """A registry of its own: the service's metrics and the standard process_* ones of this process."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(stats))
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The text exposition format (0.0.4) of a registry."""
    return generate_latest(registry)
