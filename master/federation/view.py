"""One view over several masters: their dashboard documents and counts merged, each master's health.

Pure: the documents come in (what each master's `GET /api/v1/dashboard` and `/api/v1/counts` last
returned, and when), the merged documents go out. Decisions:

* **A camera is a master's.** Every camera, worker and event is tagged with its master's name; a
  camera's key is `master/port` (two masters may use the same port numbers on different hosts), and
  its pictures, snapshots and clips are fetched through `/m/<master>/...`, which the server proxies.
* **A master that stops answering loses only its cameras, and says so.** Its last document is kept:
  its cameras stay on the page marked `unreachable` with their last numbers (and the age of that
  data), its workers are left out (they may serve the others), and `masters` says which is down,
  since when and why. A master never seen has no cameras to show, only its error.
* **Totals** (queue, tiles) are sums over the masters that answer; the throughput chart sums each
  master's rates second by second.
* **Camera names are unique across the cluster** (one config file names them); a name two masters
  both claim is reported in `clashes` and served from the first master listed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

RECENT_EVENTS = 20


@dataclass
class MasterState:
    """What the view knows of one master."""

    name: str
    url: str
    dashboard: dict[str, Any] | None = None  # its last document
    counts: dict[str, Any] = field(default_factory=dict)
    seen_at: float | None = None  # when it last answered (the view's clock)
    error: str = ""  # why the last poll failed ("" when it answered)
    down_since: float | None = None

    def answered(self, dashboard: dict[str, Any], counts: dict[str, Any], now: float) -> None:
        self.dashboard, self.counts, self.seen_at, self.error, self.down_since = dashboard, counts, now, "", None

    def failed(self, error: str, now: float) -> None:
        self.error = error[:300]
        if self.down_since is None:
            self.down_since = now

    @property
    def up(self) -> bool:
        return self.seen_at is not None and not self.error


def cameras_of(masters: Sequence[MasterState]) -> dict[str, tuple[MasterState, int]]:
    """Camera name -> (its master, its port), first master first for a name two claim."""
    out: dict[str, tuple[MasterState, int]] = {}
    for m in masters:
        for c in (m.dashboard or {}).get("cameras", []):
            if c.get("name") and c["name"] not in out:
                out[c["name"]] = (m, int(c["port"]))
    return out


def merge_dashboards(masters: Sequence[MasterState], now: float) -> dict[str, Any]:
    """The dashboard document of the whole federation (the page reads it like a master's)."""
    cameras: list[dict[str, Any]] = []
    workers: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    jobs: list[dict[str, Any]] = []
    queue: dict[str, float] = {}
    tiles: dict[str, float] = {}
    rates: dict[int, dict[str, float]] = {}
    durable, total_events = True, 0
    claimed: dict[str, str] = {}
    clashes: list[str] = []
    for m in masters:
        doc = m.dashboard
        if doc is None:
            continue
        base = f"/m/{m.name}"
        for c in doc.get("cameras", []):
            name = c.get("name") or ""
            if name:
                if name in claimed and claimed[name] != m.name:
                    clashes.append(f"camera {name!r} is on masters {claimed[name]} and {m.name}")
                claimed.setdefault(name, m.name)
            cameras.append({**c, "master": m.name, "key": f"{m.name}/{c['port']}",
                            "frame_url": f"{base}/ports/{c['port']}/latest.jpg", "unreachable": not m.up,
                            **({"data_age_s": round(now - m.seen_at, 1)} if not m.up and m.seen_at else {})})
        if not m.up:
            continue
        durable = durable and bool(doc.get("durable", True))
        workers += [{**w, "master": m.name} for w in doc.get("workers", [])]
        evs = doc.get("events", {})
        total_events += int(evs.get("total", 0))
        events += [{**e, "master": m.name, "base": base} for e in evs.get("recent", [])]
        jobs += [{**j, "master": m.name} for j in doc.get("jobs", [])]
        _add(queue, doc.get("queue", {}))
        _add(tiles, doc.get("tiles", {}))
        for point in doc.get("throughput", []):
            _add(rates.setdefault(round(float(point.get("t", 0))), {}), {k: v for k, v in point.items() if k != "t"})
    events.sort(key=lambda e: float(e.get("fired_at", 0.0)), reverse=True)
    return {
        "now": now, "federation": True, "durable": durable,
        "uptime_s": max((float((m.dashboard or {}).get("uptime_s", 0.0)) for m in masters if m.up), default=0.0),
        "queue": queue, "cameras": sorted(cameras, key=lambda c: (c.get("name") or "", c["key"])),
        "workers": workers, "events": {"total": total_events, "recent": events[:RECENT_EVENTS]},
        "throughput": [{"t": float(t), **v} for t, v in sorted(rates.items())],
        "jobs": jobs, "tiles": tiles, "masters": [health(m, now) for m in masters], "clashes": clashes,
    }


def health(m: MasterState, now: float) -> dict[str, Any]:
    """One master's line: up or down, since when, its cameras and workers."""
    doc = m.dashboard or {}
    return {"name": m.name, "url": m.url, "state": "up" if m.up else "down", "error": m.error,
            "last_seen_s": None if m.seen_at is None else round(now - m.seen_at, 1),
            "down_for_s": None if m.down_since is None else round(now - m.down_since, 1),
            "cameras": sorted(c.get("name") or str(c["port"]) for c in doc.get("cameras", [])),
            "workers_alive": sum(1 for w in doc.get("workers", []) if w.get("state") != "dead") if m.up else 0}


def merge_counts(masters: Sequence[MasterState]) -> dict[str, Any]:
    """Every camera's counts, from the master that has it, tagged with that master (and `stale` when
    it does not answer: the numbers are its last ones)."""
    out: dict[str, Any] = {}
    for m in masters:
        for camera, c in m.counts.items():
            if camera not in out:
                out[camera] = {**c, "master": m.name, **({} if m.up else {"stale": True})}
    return out


def _add(total: dict[str, float], more: Mapping[str, Any]) -> None:
    for k, v in more.items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            total[k] = total.get(k, 0) + v
