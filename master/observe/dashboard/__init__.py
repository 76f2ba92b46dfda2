"""The live dashboard: its JSON (`/api/v1/dashboard`) and its static files (`/`, `/dashboard/*`).

Everything is read from `MasterService` (stats, results rings, the event log) when the page asks;
the only state kept here is a short throughput history, sampled from the same counters at most
once a second while someone is watching. The page itself is three hand-written files in this
directory, served by the master: no CDN, no build step.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.results import Result, ResultStatus
from master.alerts.events import EVENTS_KEPT
from master.core.service import MasterService
from master.observe.metrics import camera_ports, tile_counters, worker_state

HERE = Path(__file__).resolve().parent
STATIC = {  # the only files served: name -> content type
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
RECENT_RESULTS = 30  # results per camera read for latency, stages and detections (fps is counted apart)
RECENT_EVENTS = 12  # event rows: one per event, however many entries (start, updates, end) it has
MOMENTS = frozenset({"detect", "exit", "cross"})  # event kinds without a duration
HISTORY_S = 300.0  # the chart's span
SAMPLE_EVERY_S = 1.0


def static_file(name: str) -> tuple[str, bytes] | None:
    """(content type, bytes) of one of the dashboard's files, or None for any other name."""
    ctype = STATIC.get(name)
    return (ctype, (HERE / name).read_bytes()) if ctype else None


class History:
    """Cluster totals sampled over the last few minutes; rates come from differences of samples."""

    def __init__(self, span_s: float = HISTORY_S, every_s: float = SAMPLE_EVERY_S) -> None:
        self.span_s, self.every_s = span_s, every_s
        self._samples: deque[tuple[float, dict[str, float]]] = deque()
        self._lock = threading.Lock()

    def observe(self, now: float, totals: Mapping[str, float]) -> None:
        """Keep a sample unless the last one is under `every_s` old; forget those older than the span."""
        with self._lock:
            if self._samples and now - self._samples[-1][0] < self.every_s:
                return
            self._samples.append((now, dict(totals)))
            while self._samples and now - self._samples[0][0] > self.span_s:
                self._samples.popleft()

    def rates(self) -> list[dict[str, float]]:
        """Per interval between samples: its end time `t` and each total's rate per second."""
        with self._lock:
            samples = list(self._samples)
        return [rates_between(a, b) for a, b in zip(samples, samples[1:])]


def rates_between(a: tuple[float, Mapping[str, float]], b: tuple[float, Mapping[str, float]]) -> dict[str, float]:
    """Rates per second from sample a to sample b (a counter that went back, a restart, counts as 0)."""
    dt = b[0] - a[0]
    out = {"t": round(b[0], 3)}
    for key, value in b[1].items():
        out[key] = round(max(0.0, value - a[1].get(key, 0.0)) / dt, 3) if dt > 0 else 0.0
    return out


def totals(stats: Mapping[str, Any]) -> dict[str, float]:
    """The cluster totals the chart draws: camera frames in, results out, frames dropped by the master
    (file-job tiles are left out: a job's burst of tiles is not camera traffic)."""
    ports = camera_ports(stats.get("ports", {})).values()
    return {"in": float(sum(p.get("added", 0) for p in ports)),
            "out": float(sum(p.get("completed", 0) for p in ports)),
            "dropped": float(sum(v for p in ports for k, v in p.items() if k.startswith("dropped_")))}


def camera(port: str, counters: Mapping[str, Any], recent: list[Result], now: float) -> dict[str, Any]:
    """One camera card from its store counters (with the master's `fps`, master/core/rates.py) and its newest
    results (oldest first)."""
    done = [r for r in recent if r.status is ResultStatus.OK]
    latencies = [float(r.latency_ms) for r in done[-10:]]
    last = recent[-1] if recent else None
    detections = [{"label": d.label, "score": round(float(d.score), 2), "seq": r.seq}
                  for r in reversed(done) for d in r.detections][:6]
    return {
        "port": int(port), "name": str(counters.get("camera", "")),
        "fps": round(float(counters.get("fps", 0.0)), 2),
        "latency_ms": round(statistics.median(latencies), 1) if latencies else None,
        "frames_in": int(counters.get("added", 0)), "frames_out": int(counters.get("completed", 0)),
        "dropped": int(sum(v for k, v in counters.items() if k.startswith("dropped_"))),
        "failed": int(counters.get("failed", 0)), "pending": int(counters.get("pending", 0)),
        "results": int(counters.get("results", 0)),
        "last_seq": last.seq if last else None,
        "last_age_s": round(now - float(last.completed_at), 1) if last else None,
        "detections": detections,
        "has_frame": bool(done),
        "stages_ms": stage_medians(done[-10:]),
    }


BAR_STAGES = ("network_in", "receiver", "to_master", "queue", "work", "dispatch")


def stage_medians(results: list[Result]) -> list[dict[str, Any]]:
    """Where recent frames' time went: the median of each stage (master/core/timing.py), in pipeline order."""
    out = []
    for stage in BAR_STAGES:
        values = [float(r.stages_ms[stage]) for r in results if stage in r.stages_ms]
        if values:
            out.append({"stage": stage, "ms": round(max(0.0, statistics.median(values)), 1)})
    return out


def worker(w: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the workers table."""
    s = {k: v for k, v in (w.get("stats") or {}).items() if _number(v)}
    return {"id": w.get("worker_id", ""), "name": w.get("name", ""), "state": worker_state(w),
            "cpu_percent": s.get("cpu_percent"), "rss_mb": s.get("rss_mb"),
            "host_cpu_percent": s.get("host_cpu_percent"), "busy": s.get("busy", 0),
            "tasks_done": int(w.get("tasks_done", 0)), "tasks_failed": int(w.get("tasks_failed", 0)),
            "last_seen_s": w.get("last_seen_s"), **capability(w.get("capabilities") or {})}


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def capability(c: Mapping[str, Any]) -> dict[str, Any]:
    """A worker's device, runnable stages and measured ms per frame, for its row."""
    return {"device": c.get("device", ""), "stages": list(c.get("stages", [])), "stage_ms": dict(c.get("ms", {}))}


def overview(svc: MasterService, history: History, now: float | None = None) -> dict[str, Any]:
    """Everything the page shows, from one stats snapshot plus each camera's newest results."""
    now = time.time() if now is None else now
    stats = svc.stats()
    history.observe(now, totals(stats))
    cameras = []
    for port, counters in sorted(camera_ports(stats.get("ports", {})).items(), key=lambda kv: int(kv[0])):
        last = int(counters.get("results", 0))
        page = svc.results(int(port), max(0, last - RECENT_RESULTS), RECENT_RESULTS)
        card = camera(port, counters, page["results"], now)
        card["scene"] = svc.scene_view(int(port))
        cameras.append(card)
    entries = svc.get_events(0, EVENTS_KEPT)["events"]  # every entry the log keeps, oldest first
    c = stats.get("counters", {})
    return {
        "now": now, "uptime_s": stats.get("uptime_s", 0.0),
        "durable": bool(stats.get("journal", {}).get("durable", True)),
        "queue": {"pending": stats.get("pending", 0), "in_progress": stats.get("in_progress", 0),
                  "completed": c.get("completed", 0), "failed": c.get("failed", 0),
                  "retried": c.get("retried", 0), "lease_expired": c.get("lease_expired", 0)},
        "cameras": cameras,
        "workers": [worker(w) for w in stats.get("workers", [])],
        "events": {"total": stats.get("events", {}).get("total", 0), "recent": event_rows(entries)},
        "sources": {name: {"age_s": s.get("age_s")} for name, s in stats.get("sources", {}).items()},
        "throughput": history.rates(),
        "jobs": file_jobs(stats.get("sources", {})),
        "tiles": {k: int(v) for k, v in tile_counters(stats.get("ports", {})).items()},
    }


def file_jobs(sources: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Running and recent file jobs of every job server, as each receiver last reported them."""
    out = []
    for name, src in sorted(sources.items()):
        report = src.get("jobs")
        listed = report.get("jobs") if isinstance(report, Mapping) else None
        if isinstance(listed, list):  # the receiver's word: anything well formed, checked here
            out += [{**j, "source": name} for j in listed if isinstance(j, Mapping)]
    return sorted(out, key=lambda j: (j.get("state") != "running", -_number_or_0(j.get("started_at"))))


def _number_or_0(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def event_rows(entries: list[Mapping[str, Any]], limit: int = RECENT_EVENTS) -> list[dict[str, Any]]:
    """One row per event from event-log entries (oldest first), the newest `limit` events first (by their
    first entry): the latest entry of each, with `entries` (how many it has) and `state`: "ongoing"
    (started, not ended yet), "ended" or "moment" (a detect, exit or cross event: no duration)."""
    latest: dict[str, Mapping[str, Any]] = {}
    counts: dict[str, int] = {}
    for e in entries:  # a dict keeps the order of first insertion: the order the events started
        latest[e["id"]] = e
        counts[e["id"]] = counts.get(e["id"], 0) + 1
    rows = [{**e, "entries": counts[i], "state": event_state(e)} for i, e in latest.items()]
    return rows[::-1][:limit]


def event_state(e: Mapping[str, Any]) -> str:
    """"ongoing", "ended" or "moment" for the latest entry of an event."""
    if e.get("kind", "detect") in MOMENTS:
        return "moment"
    return "ended" if e.get("phase") == "end" else "ongoing"
