"""The Celery backend: the master hands its tasks to Celery workers through Redis.

The task store stays the one source of truth. A dispatcher leases tasks from it like a worker
would (so per-camera fairness, newest-frame-wins, frame age limits, attempt caps and fencing all
still apply) and publishes each lease as a Celery task; a collector reads the finished tasks from
the Redis result backend and completes the leases. Results, events, file-job tiles and stats
therefore reach users through the same API whatever the backend.

Bounded: at most `in_flight` tasks are in Redis at once (frame bytes never pile up there), each
collected result is deleted, and a task Celery never answers for is failed back to the store after
`give_up_s` (so a Redis that lost its data costs a retry, not a hang). A late answer to a lease that
was given up carries a stale token and is refused by the store: never a duplicate result.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Celery, states

from common.celeryconf import QUEUES, TASK_NAMES, lease_message, outcome_from_result, settings
from common.errors import FramehiveError
from common.runtime import Component
from common.tasks import Lease, Outcome
from master.core.service import MasterService

log = logging.getLogger(__name__)

POLL_S = 0.004  # how often the collector looks for finished tasks while some are in flight
BACKOFF_MAX_S = 5.0


@dataclass
class _InFlight:
    lease: Lease
    sent_at: float  # monotonic


def redact(url: str) -> str:
    """A Redis URL without its password, for logs and stats."""
    return re.sub(r"//([^@/]*):[^@/]*@", r"//\1:***@", url)


class CeleryDispatcher(Component):
    """Moves leases from a MasterService to Celery and results back; two threads."""

    thread_name = "celery"

    def __init__(self, service: MasterService, redis_url: str, *, in_flight: int = 32,
                 visibility_s: float = 30.0, give_up_s: float | None = None) -> None:
        if not 1 <= in_flight <= 1024:
            raise ValueError(f"in_flight must be 1..1024, got {in_flight}")
        super().__init__()
        self.service = service
        self.url = redis_url
        self.app = Celery("framehive-master")
        self.app.conf.update(settings(redis_url, visibility_s=visibility_s))
        self.in_flight = in_flight
        # Celery redelivers a dead worker's task after the visibility timeout; give it that and a retry
        self.give_up_s = give_up_s if give_up_s is not None else 2 * visibility_s + 10
        self._pending: dict[str, _InFlight] = {}  # celery task id -> lease
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self.counters = {"sent": 0, "collected": 0, "failed": 0, "given_up": 0, "redis_errors": 0,
                         "bad_results": 0}
        self.redis_ok = True
        self.last_error = ""
        self.worker_id = ""

    # ----- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.worker_id = self.service.register_worker("celery-dispatcher", internal=True)["worker_id"]
        super().start()
        log.info("Celery backend: dispatching to %s (at most %d tasks in flight)", redact(self.url), self.in_flight)

    def loops(self) -> list[tuple[str, Callable[[], None]]]:
        return [("celery-send", self._send_loop), ("celery-collect", self._collect_loop)]

    def _wake(self) -> None:
        with self._room:
            self._room.notify_all()

    def close(self) -> None:
        self._release_all()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            n = len(self._pending)
        return {"name": "celery", "redis": redact(self.url), "redis_ok": self.redis_ok, "in_flight": n,
                "max_in_flight": self.in_flight, "last_error": self.last_error, **self.counters}

    # ----- sending -----------------------------------------------------------------------------

    def _send_loop(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            with self._room:
                while len(self._pending) >= self.in_flight and not self._stop.is_set():
                    self._room.wait(0.5)
                room = self.in_flight - len(self._pending)
            if self._stop.is_set():
                return
            try:  # (the collector heartbeats for both threads, once a heartbeat period)
                leases = self.service.request_tasks(self.worker_id, room, wait_s=0.5)
            except FramehiveError as e:
                log.warning("Celery dispatcher could not lease tasks: %s", e)
                self._stop.wait(0.5)
                continue
            sent = self._publish(leases)
            if sent < len(leases):
                backoff = min(BACKOFF_MAX_S, max(0.25, backoff * 2))
                self._stop.wait(backoff)
            else:
                backoff = 0.0

    def _publish(self, leases: list[Lease]) -> int:
        """Send leases to Celery; those that cannot be sent go back to the store. Returns how many went."""
        for i, lease in enumerate(leases):
            kind = lease.task.spec.kind
            celery_id = f"fh-{lease.task.id}-{lease.token}"
            with self._lock:
                self._pending[celery_id] = _InFlight(lease, time.monotonic())
            try:
                self.app.send_task(TASK_NAMES[kind], args=lease_message(lease), task_id=celery_id,
                                   queue=QUEUES[kind])
            except Exception as e:  # kombu/redis raise many types for "Redis is not there"
                with self._lock:
                    self._pending.pop(celery_id, None)
                self._redis_down("publish", e)
                back = [(x.task.id, x.token) for x in leases[i:]]
                self.service.release(self.worker_id, back)
                return i
            self.counters["sent"] += 1
        if leases:
            self._redis_up()
        return len(leases)

    def _heartbeat(self) -> None:
        """Keep the dispatcher's leases alive while Celery works on them (and the dispatcher registered)."""
        with self._lock:
            held = [x.lease.task.id for x in self._pending.values()]
        reply = self.service.heartbeat(self.worker_id, {"role": "celery-dispatcher", "in_flight": len(held)},
                                       held)
        if not reply.get("known", True):
            self.worker_id = self.service.register_worker("celery-dispatcher", internal=True)["worker_id"]

    # ----- collecting --------------------------------------------------------------------------

    def _collect_loop(self) -> None:
        backoff = 0.0
        last_beat = 0.0
        while not self._stop.is_set():
            with self._lock:
                ids = list(self._pending)
            if time.monotonic() - last_beat > self.service.config.heartbeat_s:
                last_beat = time.monotonic()
                self._heartbeat()
                self._give_up_overdue()
            if not ids:
                self._stop.wait(0.05)
                continue
            try:
                ready = list(self.app.backend.get_many(ids, interval=0, max_iterations=1, timeout=None))
            except Exception as e:
                self._redis_down("collect", e)
                backoff = min(BACKOFF_MAX_S, max(0.25, backoff * 2))
                self._stop.wait(backoff)
                continue
            backoff = 0.0
            self._redis_up()
            if ready:
                self._finish(ready)
            else:
                self._stop.wait(POLL_S)

    def _finish(self, ready: list[tuple[str, dict[str, Any]]]) -> None:
        done: list[str] = []
        by_worker: dict[str, list[Outcome]] = {}
        for celery_id, meta in ready:
            with self._room:
                entry = self._pending.pop(celery_id, None)
                self._room.notify()
            done.append(celery_id)
            if entry is None:
                continue
            lease = entry.lease
            if meta.get("status") != states.SUCCESS:
                self.counters["failed"] += 1
                error = f"Celery task {meta.get('status')}: {str(meta.get('result'))[:300]}"
                self._fail(lease, error)
                continue
            try:
                outcome, worker, stats = outcome_from_result(meta.get("result"))
            except FramehiveError as e:
                self.counters["bad_results"] += 1
                self._fail(lease, f"malformed Celery result: {e}")
                continue
            self.service.workers.observe(worker, self.service.clock(), stats)
            by_worker.setdefault(worker, []).append(outcome)
        for worker, outcomes in by_worker.items():  # one store pass per worker; results name the Celery worker
            reply = self.service.complete(worker, outcomes)
            self.counters["collected"] += len(reply["accepted"])
            for r in reply["rejected"]:
                log.info("Celery result for %s refused: %s", r["task_id"], r["reason"])
        try:
            self.app.backend.client.delete(*[self.app.backend.get_key_for_task(i) for i in done])
        except Exception as e:  # they expire on their own (result_expires)
            log.debug("could not delete collected results: %s", e)

    def _fail(self, lease: Lease, error: str) -> None:
        try:
            state = self.service.fail(self.worker_id, lease.task.id, lease.token, error)
            log.warning("task %s failed on Celery (%s): now %s", lease.task.id, error, state)
        except FramehiveError as e:
            log.info("task %s failure not recorded: %s", lease.task.id, e)

    def _give_up_overdue(self) -> None:
        """Fail back leases Celery has had for too long (lost with a Redis restart, or a worker loop)."""
        now = time.monotonic()
        with self._room:
            overdue = [(k, v) for k, v in self._pending.items() if now - v.sent_at > self.give_up_s]
            for k, _ in overdue:
                del self._pending[k]
            if overdue:
                self._room.notify_all()
        for _, entry in overdue:
            self.counters["given_up"] += 1
            self._fail(entry.lease, f"no answer from Celery in {self.give_up_s:.0f}s")

    def _release_all(self) -> None:
        with self._lock:
            items = [(x.lease.task.id, x.lease.token) for x in self._pending.values()]
            self._pending.clear()
        if items:
            self.service.release(self.worker_id, items)

    # ----- Redis health ------------------------------------------------------------------------

    def _redis_down(self, what: str, e: Exception) -> None:
        with self._lock:  # both threads come here
            self.counters["redis_errors"] += 1
        self.last_error = f"{what}: {type(e).__name__}: {e}"[:300]
        if self.redis_ok:
            log.error("Celery backend: Redis at %s unreachable (%s); tasks wait in the master until it is back",
                      redact(self.url), self.last_error)
        self.redis_ok = False

    def _redis_up(self) -> None:
        if not self.redis_ok:
            log.info("Celery backend: Redis at %s reachable again", redact(self.url))
        self.redis_ok = True
