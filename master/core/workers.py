"""The worker registry: who is registered, when each was last heard from, what each reports.

Pure and thread-safe; `now` is passed in.
"""

from __future__ import annotations

import math
import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.errors import QueueFull

MAX_WORKERS = 1024
MAX_STAT_KEYS = 32
MAX_STAT_TEXT = 128
DEAD_FORGET_S = 600.0  # a dead worker is listed this long, then forgotten
MAX_CAPABILITY_STAGES = 32
MAX_STAGE_MS = 3_600_000.0  # an hour per frame: anything above is not a measurement
_STAGE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_DEVICE_NAME = re.compile(r"[a-z0-9-]{1,16}")


def clean_capabilities(raw: Any) -> dict[str, Any]:
    """A worker's capability report, reduced to what is well formed and bounded ({} when none is):
    stage names and a device that look like ours, and finite, non-negative ms figures."""
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, Any] = {}
    device, model = raw.get("device"), raw.get("model")
    if isinstance(device, str) and _DEVICE_NAME.fullmatch(device):
        out["device"] = device
    if isinstance(model, str) and len(model) <= 64:
        out["model"] = model
    stages = raw.get("stages")
    if isinstance(stages, list | tuple):
        out["stages"] = sorted({s for s in stages[:MAX_CAPABILITY_STAGES]
                                if isinstance(s, str) and _STAGE_NAME.fullmatch(s)})
    ms = raw.get("ms")
    if isinstance(ms, Mapping):
        out["ms"] = {k: round(float(v), 2) for k, v in list(ms.items())[:MAX_CAPABILITY_STAGES]
                     if isinstance(k, str) and _STAGE_NAME.fullmatch(k) and isinstance(v, int | float)
                     and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= MAX_STAGE_MS}
    return out


@dataclass
class WorkerInfo:
    """What the master knows of one worker."""

    worker_id: str
    name: str
    registered_at: float
    last_seen: float
    alive: bool = True
    tasks_done: int = 0
    tasks_failed: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    capabilities: dict[str, Any] = field(default_factory=dict)
    internal: bool = False  # the master's own helper (the Celery dispatcher): not listed as a worker


class WorkerRegistry:
    """Registered workers; a worker silent for `timeout_s` is declared dead once."""

    def __init__(self, timeout_s: float, *, instance: str | None = None) -> None:
        self.timeout_s = timeout_s
        # ids differ between master instances, so an id from before a restart is never mistaken for a new one
        self._instance = instance if instance is not None else secrets.token_hex(2)
        self._lock = threading.Lock()
        self._workers: dict[str, WorkerInfo] = {}
        self._serial = 0

    def register(self, name: str, now: float, *, internal: bool = False) -> str:
        """Add a worker and return its id (unique even when names repeat); an `internal` one leases
        like a worker but is left out of snapshots."""
        with self._lock:
            if len(self._workers) >= MAX_WORKERS:
                self._forget_dead()
                if len(self._workers) >= MAX_WORKERS:
                    raise QueueFull(f"{MAX_WORKERS} workers are registered and alive: no room for {name[:48]!r}")
            self._serial += 1
            worker_id = f"{name[:48]}#{self._instance}{self._serial}"
            self._workers[worker_id] = WorkerInfo(worker_id, name[:48], now, now, internal=internal)
            return worker_id

    def seen(self, worker_id: str, now: float, stats: Mapping[str, Any] | None = None) -> bool:
        """Record a sign of life; False when the id is unknown (the master restarted)."""
        with self._lock:
            info = self._workers.get(worker_id)
            if info is None:
                return False
            info.last_seen, info.alive = now, True
            if stats:
                info.stats = {str(k)[:32]: (v[:MAX_STAT_TEXT] if isinstance(v, str) else v)
                              for k, v in list(stats.items())[:MAX_STAT_KEYS]
                              if isinstance(v, int | float | str) and not isinstance(v, bool)
                              and (not isinstance(v, float) or math.isfinite(v))}
                if "capabilities" in stats:
                    info.capabilities = clean_capabilities(stats["capabilities"])
            return True

    def observe(self, worker_id: str, now: float, stats: Mapping[str, Any] | None = None, *,
                done: int = 0, failed: int = 0) -> None:
        """Record a worker this master does not lease to directly (a Celery worker seen through its
        results): added on first sight, then kept alive and tallied like a registered one."""
        with self._lock:
            if worker_id not in self._workers:
                if len(self._workers) >= MAX_WORKERS:
                    self._forget_dead()
                    if len(self._workers) >= MAX_WORKERS:
                        return
                self._workers[worker_id] = WorkerInfo(worker_id, worker_id[:48], now, now)
        self.seen(worker_id, now, stats)
        self.tally(worker_id, done, failed)

    def tally(self, worker_id: str, done: int, failed: int) -> None:
        """Add to a worker's task counts."""
        with self._lock:
            info = self._workers.get(worker_id)
            if info:
                info.tasks_done += done
                info.tasks_failed += failed

    def known(self, worker_id: str) -> bool:
        """Whether the id was handed out by this master."""
        with self._lock:
            return worker_id in self._workers

    def newly_dead(self, now: float) -> list[str]:
        """Workers that just crossed the silence timeout (each reported once)."""
        with self._lock:
            dead = [w for w in self._workers.values() if w.alive and now - w.last_seen > self.timeout_s]
            for w in dead:
                w.alive = False
            for w in [w for w in self._workers.values() if not w.alive and now - w.last_seen > DEAD_FORGET_S]:
                del self._workers[w.worker_id]
            return [w.worker_id for w in dead]

    def _forget_dead(self) -> None:
        for wid in [w.worker_id for w in self._workers.values() if not w.alive]:
            del self._workers[wid]

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        """Every worker as a wire-safe dict."""
        with self._lock:
            return [{"worker_id": w.worker_id, "name": w.name, "alive": w.alive,
                     "last_seen_s": round(now - w.last_seen, 3), "tasks_done": w.tasks_done,
                     "tasks_failed": w.tasks_failed, "stats": dict(w.stats),
                     "capabilities": {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
                                      for k, v in w.capabilities.items()}}
                    for w in self._workers.values() if not w.internal]
