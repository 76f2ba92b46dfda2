"""The task store: task states, leases with fencing tokens, fair scheduling and result rings.

Pure and thread-safe: no sockets, no threads of its own, no clock reads; what must survive a
restart goes to an injected journal (master/core/journal.py), called under the store's lock. Every call that
depends on time takes `now` (seconds since the Unix epoch, as a float).

    PENDING --request--> IN PROGRESS --complete--> COMPLETED (result stored, record forgotten)
       ^                     |  lease expired / failed (attempts left) / released
       +---------------------+
                             |  lease expired / failed, no attempts left --> FAILED (error result stored)
"""

from __future__ import annotations

import itertools
import random
import secrets
import threading
from collections import Counter, deque
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass, field, replace
from typing import Any

from common.errors import QueueFull, StaleLease, UnknownTask
from common.results import Result, ResultStatus
from common.tasks import SEQ_WIRE_MASK, Detection, Lease, Outcome, Task, TaskKind, TaskSpec, TaskState
from master.core.journal import NullJournal, Restored
from master.core.timing import frame_stages

NS = 1_000_000_000


@dataclass(frozen=True)
class StoreConfig:
    """Limits and timings of the task store."""

    lease_s: float = 10.0  # a lease not renewed or completed within this is requeued
    max_hold_s: float = 120.0  # renewals never keep one task leased longer than this
    max_attempts: int = 3  # leases per task before it is FAILED
    max_worker_deaths: int = 2  # a task held by this many workers that died is quarantined (FAILED, not retried)
    max_pending_per_port: int = 8  # live frames waiting per camera; the oldest is dropped beyond
    max_frame_age_s: float = 30.0  # a live frame older than this (since received) is never handed out
    max_tasks: int = 20_000  # pending + in progress, all kinds
    max_bytes: int = 512 * 2**20  # payload bytes held (pending + in progress): live frames give way, tiles wait
    max_ports: int = 1024
    results_per_port: int = 1000  # ring size behind get_results
    retry_backoff_s: float = 0.5  # a failed tile waits ~this, doubling per attempt (with jitter), before a retry
    retry_backoff_max_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("lease_s", "max_hold_s", "max_frame_age_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("max_attempts", "max_pending_per_port", "max_tasks", "max_ports", "results_per_port",
                     "max_worker_deaths", "max_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


@dataclass
class _Record:
    task: Task
    state: TaskState = TaskState.PENDING
    attempts: int = 0
    token: str = ""
    worker: str = ""
    deadline: float = 0.0
    first_leased: float = 0.0
    leased_at: float = 0.0
    not_before: float = 0.0  # a retried tile is not handed out before this (backoff)
    deaths: int = 0  # workers that died while holding it

    @property
    def spec(self) -> TaskSpec:
        return self.task.spec

    @property
    def lane(self) -> Hashable:
        spec = self.task.spec
        return ("job", spec.job_id) if spec.kind is TaskKind.TILE else ("port", spec.port)


TRACK_LOOKBACK = 256  # stored results searched for the frame the tracker releases (its window holds 64)


@dataclass
class _Ring:
    """Recent results of one port, each with a cursor that only grows."""

    size: int
    items: deque = field(default_factory=deque)
    last: int = 0

    def append(self, result: Result) -> int:
        self.last += 1
        self.items.append((self.last, result))
        if len(self.items) > self.size:
            self.items.popleft()
        return self.last

    def since(self, cursor: int, limit: int) -> tuple[list[Result], int, int]:
        """Results after `cursor`, the cursor to pass next time, and how many were evicted unread.

        A cursor from the future (the master restarted) reads from the oldest result kept.
        """
        cursor = 0 if cursor > self.last else max(cursor, 0)
        first = self.items[0][0] if self.items else self.last + 1
        start = max(cursor + 1, first)
        chunk = [r for _, r in itertools.islice(self.items, start - first, start - first + limit)]
        nxt = chunk[-1].cursor if chunk else self.last
        return chunk, nxt, start - cursor - 1


class TaskStore:
    """All tasks, leases and results of one master."""

    def __init__(self, config: StoreConfig | None = None, *,
                 token_factory: Callable[[], str] = lambda: secrets.token_hex(8),
                 id_prefix: str | None = None, rng: random.Random | None = None,
                 journal: NullJournal | None = None) -> None:
        self.config = config or StoreConfig()
        self._token = token_factory
        self._rng = rng or random.Random()
        self._prefix = id_prefix if id_prefix is not None else secrets.token_hex(3)
        self._next_id = 0
        self._lock = threading.Lock()
        self._tasks: dict[str, _Record] = {}
        # worker -> ids of the tasks it holds: heartbeats renew, reclaim and expire a worker's leases
        # without scanning every queued frame under the lock (a heartbeat per worker per second)
        self._leased_by: dict[str, dict[str, None]] = {}
        self._leased_n = 0  # tasks in progress: what the store holds beyond them is waiting
        self._bytes = 0  # payload bytes of the tasks in _tasks
        self._job_seen: dict[str, float] = {}  # when each file job last added or took tiles
        self._lanes: dict[Hashable, deque[str]] = {}
        self._turn: deque[Hashable] = deque()  # lanes with pending tasks, in serving order
        self._in_turn: set[Hashable] = set()  # the same lanes, to ask "is it there?" in O(1) with 1,000 cameras
        self._rings: dict[int, _Ring] = {}
        self._latest: dict[int, tuple[Result, bytes]] = {}  # newest processed frame per port
        self._job_results: dict[str, deque[tuple[Result, bytes]]] = {}  # finished tiles per job
        self.counters: Counter[str] = Counter()
        self.port_counters: dict[int, Counter[str]] = {}
        self.journal = journal or NullJournal()  # what survives a restart (master/core/journal.py)
        self.camera_names: dict[int, str] = {}  # port -> name from the cluster file (set on load and reload)
        self.incarnation = self.journal.incarnation()  # which numbering of result cursors this is
        self._restore(self.journal.restore())

    def _restore(self, saved: Restored) -> None:
        """Take back what a journal kept: tiles queue again, finished tiles wait, rings keep their cursors."""
        with self._lock:
            for task in saved.tiles:
                rec = _Record(task)
                self._tasks[task.id] = rec
                self._bytes += len(task.payload)
                self._lanes.setdefault(rec.lane, deque()).append(task.id)
                self._ready(rec.lane)
            for job_id, result, image in saved.job_results:
                self._job_results.setdefault(job_id, deque()).append((result, image))
            for port, results in saved.results.items():
                ring = _Ring(self.config.results_per_port)
                for r in results[-ring.size:]:
                    ring.items.append((r.cursor, r))
                ring.last = results[-1].cursor if results else 0
                self._rings[port] = ring
                self.port_counters.setdefault(port, Counter())
            self.counters["restored_tiles"] += len(saved.tiles)

    # ----- producers -------------------------------------------------------------------------

    def add(self, spec: TaskSpec, payload: bytes, now: float) -> str:
        """Queue a task; return its id. Live frames beyond the per-port cap push out the oldest.

        A frame the receiver decided not to detect (meta "skip": reason) is not queued: it goes
        straight to the results as status "skipped", so users still see every frame.
        """
        with self._lock:
            skip = str(spec.meta.get("skip", "")) if spec.kind is TaskKind.FRAME else ""
            self._admit(spec, queued=not skip)
            self._next_id += 1
            task = Task(f"{self._prefix}-{self._next_id:x}", spec, b"" if skip else bytes(payload), int(now * NS))
            rec = _Record(task)
            if skip:
                self._store_result(rec, Outcome(task.id, ""), "", ResultStatus.SKIPPED, now)
                self._count(spec.port, "added")
                self._count(spec.port, "skipped")
                return task.id
            lane = self._lanes.setdefault(rec.lane, deque())
            if spec.kind is TaskKind.FRAME:
                while len(lane) >= self.config.max_pending_per_port:
                    self._drop(lane.popleft(), "dropped_overflow")
            self._make_room(spec, len(task.payload))
            self._tasks[task.id] = rec
            self._bytes += len(task.payload)
            if spec.kind is TaskKind.TILE:
                self._job_seen[spec.job_id] = now
            lane.append(task.id)
            self._ready(rec.lane)
            self._count(spec.port, "added")
            if spec.kind is TaskKind.TILE:
                self.journal.tile_added(task)
            return task.id

    def _make_room(self, spec: TaskSpec, size: int) -> None:
        """Keep payload bytes under max_bytes: a live frame makes room by dropping the oldest waiting
        frames of any camera (counted dropped_bytes); a tile, or a frame when no frame is waiting, is
        refused with QueueFull (the job server backs off and retries: back-pressure)."""
        while self._bytes + size > self.config.max_bytes and spec.kind is TaskKind.FRAME:
            heads = [(self._tasks[lane[0]].task.queued_ns, key) for key, lane in self._lanes.items()
                     if key[0] == "port" and lane and lane[0] in self._tasks]
            if not heads:
                break
            self._drop(self._lanes[min(heads)[1]].popleft(), "dropped_bytes")
        if self._bytes + size > self.config.max_bytes:
            self.counters["rejected_bytes"] += 1
            raise QueueFull(f"the master holds {self._bytes >> 20} MiB of payloads (max "
                            f"{self.config.max_bytes >> 20} MiB): try again when workers have caught up")

    def _admit(self, spec: TaskSpec, *, queued: bool = True) -> None:
        if spec.port not in self.port_counters and len(self.port_counters) >= self.config.max_ports:
            raise QueueFull(f"too many ports (max {self.config.max_ports})")
        if not queued:
            return
        lane_full = spec.kind is TaskKind.FRAME and len(
            self._lanes.get(("port", spec.port), ())) >= self.config.max_pending_per_port
        if len(self._tasks) >= self.config.max_tasks and not lane_full:
            self.counters["rejected_full"] += 1
            raise QueueFull(f"the master holds {len(self._tasks)} tasks (max {self.config.max_tasks})")

    # ----- workers -----------------------------------------------------------------------------

    def request(self, worker: str, max_n: int, now: float) -> list[Lease]:
        """Lease up to `max_n` pending tasks to `worker`, one lane at a time in turn."""
        leases: list[Lease] = []
        with self._lock:
            idle = 0  # lanes in a row that had nothing to hand out now (all backing off)
            while len(leases) < max_n and self._turn and idle < len(self._turn):
                lane_key = self._turn.popleft()
                rec = self._next_in_lane(lane_key, now)
                if self._lanes.get(lane_key):
                    self._turn.append(lane_key)
                else:
                    self._in_turn.discard(lane_key)
                if rec is None:
                    idle += 1
                else:
                    idle = 0
                    leases.append(self._lease(rec, worker, now))
        return leases

    def _next_in_lane(self, lane_key: Hashable, now: float) -> _Record | None:
        lane = self._lanes.get(lane_key)
        for _ in range(len(lane) if lane else 0):
            rec = self._tasks[lane.popleft()]
            if rec.spec.kind is TaskKind.FRAME and now - self._received_s(rec) > self.config.max_frame_age_s:
                self._drop(rec.task.id, "dropped_stale")
                continue
            if rec.not_before > now:  # backing off: let the rest of the lane go first
                lane.append(rec.task.id)
                continue
            return rec
        return None

    @staticmethod
    def _received_s(rec: _Record) -> float:
        return (rec.spec.received_ns or rec.task.queued_ns) / NS

    def _lease(self, rec: _Record, worker: str, now: float) -> Lease:
        rec.state, rec.worker, rec.token = TaskState.IN_PROGRESS, worker, self._token()
        rec.attempts += 1
        rec.deadline = now + self.config.lease_s
        rec.first_leased = rec.first_leased or now
        rec.leased_at = now
        self._leased_by.setdefault(worker, {})[rec.task.id] = None
        self._leased_n += 1
        self.counters["leased"] += 1
        return Lease(rec.task, rec.token, self.config.lease_s, rec.attempts)

    def complete(self, task_id: str, token: str, outcome: Outcome, worker: str, now: float) -> Result:
        """Store a worker's result; a stale or unknown lease raises and stores nothing."""
        with self._lock:
            rec = self._leased(task_id, token)
            self._forget(task_id)
            status = ResultStatus.ERROR if outcome.error else ResultStatus.OK
            result = self._store_result(rec, outcome, worker, status, now)
            self._count(rec.spec.port, "completed")
            if status is ResultStatus.OK and rec.spec.kind is TaskKind.FRAME:
                self._latest[rec.spec.port] = (result, rec.task.payload)
            return result

    def leased_payload(self, task_id: str, token: str) -> bytes | None:
        """The payload of a task leased with `token` (None when the lease is not current)."""
        with self._lock:
            rec = self._tasks.get(task_id)
            ok = rec is not None and rec.state is TaskState.IN_PROGRESS and rec.token == token
            return rec.task.payload if ok else None

    def attach_tracks(self, port: int, seq: int, detections: tuple[Detection, ...]) -> bool:
        """Give a stored frame result its detections with track ids (the tracker releases frames in capture
        order, shortly after they are stored); False when the result has left the ring meanwhile."""
        with self._lock:
            ring = self._rings.get(port)
            if ring is None:
                return False
            for i in range(len(ring.items) - 1, max(-1, len(ring.items) - 1 - TRACK_LOOKBACK), -1):
                cursor, r = ring.items[i]
                if r.seq == seq:
                    if len(r.detections) != len(detections):
                        return False
                    ring.items[i] = (cursor, replace(r, detections=detections))
                    self.journal.result_updated(port, cursor, ring.items[i][1])  # a restart keeps the ids
                    latest = self._latest.get(port)
                    if latest is not None and latest[0].seq == seq:
                        self._latest[port] = (ring.items[i][1], latest[1])
                    return True
        return False

    def latest(self, port: int) -> tuple[Result, bytes] | None:
        """The newest processed frame of a port: its result and its JPEG."""
        with self._lock:
            return self._latest.get(port)

    def fail(self, task_id: str, token: str, error: str, now: float) -> TaskState:
        """A worker could not finish a task: requeue it, or fail it when attempts are used up."""
        with self._lock:
            rec = self._leased(task_id, token)
            self.counters["worker_failures"] += 1
            return self._retry_or_fail(rec, error, now)

    def release(self, task_id: str, token: str) -> None:
        """Hand a leased task back unprocessed (worker shutting down); the attempt is not counted."""
        with self._lock:
            rec = self._leased(task_id, token)
            rec.attempts -= 1
            self._requeue(rec)
            self.counters["released"] += 1

    def renew(self, worker: str, now: float, held: Collection[str] | None = None) -> int:
        """Extend the leases `worker` holds (all, or those in `held`), up to max_hold_s per task."""
        n = 0
        with self._lock:
            for rec in self._held_by(worker):
                if held is None or rec.task.id in held:
                    rec.deadline = min(now + self.config.lease_s, rec.first_leased + self.config.max_hold_s)
                    n += 1
        return n

    def reclaim(self, worker: str, held: Collection[str], now: float, grace_s: float) -> int:
        """Requeue leases of `worker` that it says it does not hold (the reply carrying them was lost),
        once they are older than `grace_s` (a reply may still be on its way). No attempt is counted."""
        n = 0
        with self._lock:
            for rec in self._held_by(worker):
                if rec.task.id not in held and now - rec.leased_at > grace_s:
                    rec.attempts -= 1
                    self._requeue(rec)
                    self.counters["leases_lost"] += 1
                    n += 1
        return n

    def expire(self, now: float, *, worker: str | None = None, died: bool = False) -> int:
        """Requeue (or fail) leases past their deadline, or every lease of `worker`. `died`: that
        worker went silent holding them, so each is suspect (see `_after_death`)."""
        n = 0
        with self._lock:
            held = self._held_by(worker) if worker is not None else sorted(
                (r for w in self._leased_by for r in self._held_by(w)), key=lambda r: r.leased_at)
            for rec in held:
                if worker is not None or rec.deadline <= now:
                    self.counters["lease_expired"] += 1
                    if died:
                        self._after_death(rec, now)
                    else:
                        self._retry_or_fail(rec, f"lease expired on worker {rec.worker!r}", now)
                    n += 1
        return n

    def _after_death(self, rec: _Record, now: float) -> None:
        """A task whose worker died holding it may be what killed it (an image that crashes a decoder):
        it runs last in its lane, and after `max_worker_deaths` deaths it is failed, not retried, so
        one poison task cannot take down the whole pool."""
        rec.deaths += 1
        if rec.deaths < self.config.max_worker_deaths and rec.attempts < self.config.max_attempts:
            self._requeue(rec, back=True)
            self.counters["retried"] += 1
            return
        self._forget(rec.task.id)
        self.counters["quarantined"] += 1
        error = (f"quarantined: {rec.deaths} workers died while holding this task (last {rec.worker!r}); "
                 "not retried, in case it is what kills them")
        self._store_result(rec, Outcome(rec.task.id, rec.token, error=error), rec.worker, ResultStatus.FAILED, now)
        self._count(rec.spec.port, "failed")

    def _leased(self, task_id: str, token: str) -> _Record:
        rec = self._tasks.get(task_id)
        if rec is None:
            self.counters["stale_completions"] += 1
            raise UnknownTask(f"task {task_id!r} is unknown or already finished")
        if rec.state is not TaskState.IN_PROGRESS or not secrets.compare_digest(rec.token, token):
            self.counters["stale_completions"] += 1
            raise StaleLease(f"lease token for task {task_id!r} is stale (the task was requeued)")
        return rec

    def _retry_or_fail(self, rec: _Record, error: str, now: float) -> TaskState:
        if rec.attempts < self.config.max_attempts:
            if rec.spec.kind is TaskKind.TILE:  # live frames retry at once: they go stale; tiles can wait
                cap = min(self.config.retry_backoff_max_s, self.config.retry_backoff_s * 2 ** (rec.attempts - 1))
                rec.not_before = now + self._rng.uniform(cap / 2, cap)
            self._requeue(rec)
            self.counters["retried"] += 1
            return TaskState.PENDING
        self._forget(rec.task.id)
        self._store_result(rec, Outcome(rec.task.id, rec.token, error=f"failed after {rec.attempts} "
                                        f"attempts: {error}"), rec.worker, ResultStatus.FAILED, now)
        self._count(rec.spec.port, "failed")
        return TaskState.FAILED

    def _held_by(self, worker: str) -> list[_Record]:
        """The records `worker` holds in progress, oldest lease first (a copy: callers may requeue them)."""
        return [self._tasks[t] for t in self._leased_by.get(worker, ())]

    def _unlease(self, rec: _Record) -> None:
        """Take a task out of its worker's holdings: it was finished, dropped or requeued."""
        if rec.state is TaskState.IN_PROGRESS:
            held = self._leased_by.get(rec.worker)
            if held is not None and rec.task.id in held:
                del held[rec.task.id]
                self._leased_n -= 1
                if not held:
                    del self._leased_by[rec.worker]

    def _requeue(self, rec: _Record, *, back: bool = False) -> None:
        self._unlease(rec)
        rec.state, rec.token, rec.worker = TaskState.PENDING, "", ""
        lane = self._lanes.setdefault(rec.lane, deque())
        if back:
            lane.append(rec.task.id)
        else:
            lane.appendleft(rec.task.id)
        # A requeued frame was already accepted and started once: keep it (a crashed worker must not
        # turn into a lost result) and let the cap take the newest waiting frame instead.
        if rec.spec.kind is TaskKind.FRAME and len(lane) > self.config.max_pending_per_port:
            self._drop(lane.pop(), "dropped_overflow")
        self._ready(rec.lane)

    def _ready(self, lane_key: Hashable) -> None:
        if lane_key not in self._in_turn:
            self._in_turn.add(lane_key)
            self._turn.append(lane_key)

    def _drop(self, task_id: str, reason: str) -> None:
        rec = self._forget(task_id)
        self._count(rec.spec.port, reason)

    def _forget(self, task_id: str) -> _Record:
        """Take a task out of the store, and its payload out of the byte count."""
        rec = self._tasks.pop(task_id)
        self._unlease(rec)
        self._bytes -= len(rec.task.payload)
        return rec

    def _count(self, port: int, what: str) -> None:
        self.counters[what] += 1
        self.port_counters.setdefault(port, Counter())[what] += 1

    # ----- results -----------------------------------------------------------------------------

    def _store_result(self, rec: _Record, o: Outcome, worker: str, status: ResultStatus, now: float) -> Result:
        spec = rec.spec
        tile = spec.kind is TaskKind.TILE
        ring = None if tile else self._rings.setdefault(spec.port, _Ring(self.config.results_per_port))
        motion = spec.meta.get("motion")
        # values as they read on the wire (scores to 4 places, timings to 3): rules see what users get
        result = Result(
            cursor=ring.last + 1 if ring else 0, task_id=rec.task.id, port=spec.port,
            seq=spec.seq & SEQ_WIRE_MASK, kind=spec.kind, pipeline=spec.pipeline,
            status=status, error=o.error, worker=worker, attempts=rec.attempts,
            detections=tuple(Detection(d.label, round(float(d.score), 4), tuple(d.box)) for d in o.detections),
            timings_ms={k: round(v, 3) for k, v in o.timings_ms.items()},
            captured_at=spec.captured_ns / NS, received_at=self._received_s(rec),
            queued_at=rec.task.queued_ns / NS, completed_at=now,
            latency_ms=round((now - spec.captured_ns / NS) * 1000.0, 3),
            stages_ms=frame_stages(captured_ns=spec.captured_ns, received_ns=spec.received_ns, meta=spec.meta,
                                   queued_ns=rec.task.queued_ns, leased_at=rec.leased_at,
                                   started_ns=o.started_ns, finished_ns=o.finished_ns, stored_at=now),
            job_id=spec.job_id,
            motion=float(motion) if isinstance(motion, (int, float)) else None,
            skip_reason=str(spec.meta.get("skip", "")) if status is ResultStatus.SKIPPED else "",
            meta=dict(spec.meta) if tile else {},
            camera="" if tile else self.camera_names.get(spec.port, ""),
        )
        if tile:  # file-job tiles go to their job's queue (with the output image), not a camera's ring
            self._job_results.setdefault(spec.job_id, deque()).append((result, o.image))
            self.journal.tile_done(rec.task.id, spec.job_id, result, o.image)
        else:
            ring.append(result)
            self.journal.result_stored(spec.port, result.cursor, result, ring.size)
        return result

    def take_job_results(self, job_id: str, max_n: int, now: float | None = None) -> list[tuple[Result, bytes]]:
        """Remove and return up to `max_n` finished tiles of a job (ok, error or failed), oldest first."""
        with self._lock:
            if now is not None:
                self._job_seen[job_id] = now
            queue = self._job_results.get(job_id)
            out = [queue.popleft() for _ in range(min(max_n, len(queue)))] if queue else []
            if queue is not None and not queue:
                del self._job_results[job_id]
            return out  # still in the journal until acknowledged: a reply lost with a crashed master is sent again

    def ack_job_results(self, task_ids: list[str]) -> None:
        """The job server has these finished tiles (it names them in its next take): forget them for good."""
        with self._lock:
            self.journal.job_results_taken(list(task_ids))

    def resync_journal(self, now: float) -> bool:
        """A journal that could not write catches up with what this store holds (when it is due: see
        SqliteJournal.resync); True when it just became durable again."""
        with self._lock:
            if not self.journal.resync_due(now):
                return False
            tiles = [r.task for r in self._tasks.values() if r.spec.kind is TaskKind.TILE]
            done = [(job, result, image) for job, queue in self._job_results.items() for result, image in queue]
            results = {port: [r for _, r in ring.items] for port, ring in self._rings.items()}
            return self.journal.resync(tiles, done, results, self.config.results_per_port, now)

    def expire_jobs(self, now: float, idle_s: float) -> list[tuple[str, int]]:
        """Cancel file jobs whose job server has neither added nor taken a tile for `idle_s` (its receiver
        died mid-job): their queued tiles and finished ones would otherwise be kept for ever. Returns
        (job id, tiles dropped) of each. A job first seen here (restored from the journal) starts its
        clock now."""
        with self._lock:
            known = {key[1] for key in self._lanes if key[0] == "job"} | set(self._job_results)
            for job_id in known - self._job_seen.keys():
                self._job_seen[job_id] = now
            stale = [j for j, at in self._job_seen.items() if now - at > idle_s]
        out = []
        for job_id in stale:
            out.append((job_id, self.cancel_job(job_id)))
            self.counters["jobs_expired"] += 1
        return out

    def cancel_job(self, job_id: str) -> int:
        """Forget a job: its pending tiles, its finished tiles; leased ones are fenced off. Returns tasks dropped."""
        with self._lock:
            self._job_seen.pop(job_id, None)
            self._job_results.pop(job_id, None)
            doomed = [t for t, r in self._tasks.items() if r.spec.kind is TaskKind.TILE and r.spec.job_id == job_id]
            for task_id in doomed:
                self._drop(task_id, "cancelled")
            self._lanes.pop(("job", job_id), None)
            if ("job", job_id) in self._in_turn:
                self._in_turn.discard(("job", job_id))
                self._turn.remove(("job", job_id))
            self.journal.job_cancelled(job_id)
            return len(doomed)

    def results(self, port: int, since: int, limit: int, incarnation: str = "") -> dict[str, Any]:
        """Results of `port` after cursor `since`: {"results", "next", "missed", "incarnation"}.

        Cursors belong to one incarnation of the results (a master restarted without --state-dir starts
        a new one, counting from 1 again). A reader that names the incarnation its cursor came from and
        finds another is read from the start, with `restarted` true: it never skips the new results
        its old cursor number would have passed over."""
        restarted = bool(incarnation) and incarnation != self.incarnation
        since = 0 if restarted else since
        with self._lock:
            ring = self._rings.get(port)
            if ring is None:
                page = {"results": [], "next": max(0, since), "missed": 0}
            else:
                chunk, nxt, missed = ring.since(since, limit)
                page = {"results": chunk, "next": nxt, "missed": missed}
        return {**page, "incarnation": self.incarnation, **({"restarted": True} if restarted else {})}

    # ----- introspection -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Counts by state, totals and per-port counters."""
        with self._lock:
            states = Counter(r.state.value for r in self._tasks.values())
            pending_by_port = Counter(r.spec.port for r in self._tasks.values() if r.state is TaskState.PENDING)
            ports = {
                str(p): {**c, "pending": pending_by_port.get(p, 0),
                         "results": self._rings[p].last if p in self._rings else 0}
                for p, c in self.port_counters.items()
            }
            return {"pending": states.get(TaskState.PENDING.value, 0),
                    "in_progress": states.get(TaskState.IN_PROGRESS.value, 0),
                    "payload_bytes": self._bytes, "max_payload_bytes": self.config.max_bytes,
                    "counters": dict(self.counters), "ports": ports}

    def waiting(self) -> int:
        """Tasks queued and not leased (a retried tile still backing off counts): the backlog."""
        with self._lock:
            return len(self._tasks) - self._leased_n

    def state_of(self, task_id: str) -> TaskState | None:
        """The state of a task still held (None once completed, failed or dropped)."""
        with self._lock:
            rec = self._tasks.get(task_id)
            return rec.state if rec else None
