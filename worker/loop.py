"""The pull loop: register, lease tasks, run their pipelines, report, heartbeat, back off, stop cleanly."""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from common.auth import TOKEN_ENV
from common.config import MasterLink
from common.errors import BadRequest, MasterUnavailable, QueueFull, Unauthorized
from common.masterclient import MasterClient
from common.runtime import Component, give_up
from common.tasks import Lease, Outcome, TaskKind
from worker.capability import Capabilities
from worker.execute import execute, process_stats
from worker.pipeline import StageCache, init_pool_process, run_task

log = logging.getLogger(__name__)

NS = 1_000_000_000
REPORT_RETRY_S = 30.0  # how long a batch's results are retried while the master is unreachable
REPORT_RETRY_STOPPING_S = 5.0
# A task that took this long is reported at once, before the rest of its batch: its camera should not
# wait for another frame's detector. Cheap tasks wait and share one request.
EARLY_REPORT_S = 0.02
MAX_LOOPS = 256  # pull loops one process may run (each holds one connection to the master)


@dataclass(frozen=True)
class WorkerConfig:
    """How one worker process pulls work."""

    master_url: str = "http://127.0.0.1:8000"
    token: str | None = None  # presented to the master; None: it wants none
    name: str = ""
    batch: int = 2  # tasks leased per request: small keeps cameras fair and leases short
    wait_s: float = 1.0  # long poll: how long the master may hold a lease request open
    backoff_min_s: float = 0.1
    backoff_max_s: float = 5.0
    timeout_s: float = 10.0
    processes: int = 0  # > 1: run a batch's tasks in a local pool of this many processes
    loops: int = 1  # > 1: this many pull loops in one process, each its own worker (worker/group.py)

    def __post_init__(self) -> None:
        MasterLink(self.master_url, self.token)  # checks the URL
        if not 1 <= self.batch <= 256:
            raise ValueError(f"batch must be 1..256, got {self.batch}")
        if not 0 <= self.wait_s <= 5:
            raise ValueError(f"wait_s must be 0..5, got {self.wait_s}")
        if not 0 <= self.processes <= 64:
            raise ValueError(f"processes must be 0..64, got {self.processes}")
        if not 1 <= self.loops <= MAX_LOOPS:
            raise ValueError(f"loops must be 1..{MAX_LOOPS}, got {self.loops}")
        if self.loops > 1 and self.processes > 1:
            raise ValueError("loops and processes do not mix: loops are for stages that wait, a process pool "
                             "for stages that compute")
        if not 0 < self.backoff_min_s <= self.backoff_max_s:
            raise ValueError("backoff_min_s must be > 0 and <= backoff_max_s")


class Backoff:
    """Exponential backoff with full jitter, reset on success."""

    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi, self.n = lo, hi, 0

    def next(self) -> float:
        self.n += 1
        return random.uniform(self.lo, min(self.hi, self.lo * 2 ** self.n))

    def reset(self) -> None:
        self.n = 0


class Worker(Component):
    """One pull-based worker: a Component with two threads (the pull loop and the heartbeat), or
    `run_once()` in tests."""

    thread_name = "worker"

    def __init__(self, config: WorkerConfig, *, stages: StageCache | None = None,
                 capabilities: Capabilities | None = None) -> None:
        super().__init__()
        self.config = config
        self.name = config.name or f"{socket.gethostname()}-{os.getpid()}"
        self.stages = stages or StageCache()
        self.capabilities = capabilities or Capabilities(self.stages.env)
        self.client = MasterClient(config.master_url, timeout_s=config.timeout_s, token=config.token)
        self.worker_id = ""
        self.heartbeat_s = 1.0
        self.done = 0
        self.failed = 0
        self.busy = False
        self._reregister = threading.Event()
        self._backoff = Backoff(config.backoff_min_s, config.backoff_max_s)
        self._master_down = False
        self._next: list[Lease] = []  # leases that came back with the last report
        self._held: frozenset[str] = frozenset()  # task ids in hand, told to the master by heartbeats
        self._slow = False  # the last task took EARLY_REPORT_S or more
        # The seed's local pool: CPU-heavy stages of one batch run in parallel processes, same pipeline.
        env = self.stages.env
        self._pool = ProcessPoolExecutor(config.processes, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=init_pool_process,
                                         initargs=(env.device, env.threads, env.model_dir, env.max_image_pixels)) \
            if config.processes > 1 else None

    @property
    def lease_size(self) -> int:
        """Tasks to lease next: the batch, or one while tasks are slow and nothing waits at the master
        (each is then reported at once, so a second one in hand would only wait for the first while
        another worker may be idle). A local process pool always takes whole batches."""
        return 1 if self._slow and not self._backlogged() and self._pool is None else self.config.batch

    def _backlogged(self) -> bool:
        """Whether other tasks waited at the master when this worker last leased: then no worker is
        idle, and a second slow task in hand, reported together with the first, costs its camera
        nothing that the queue did not cost it already, and saves a request."""
        return self.client.backlog > 0

    # ----- lifecycle ---------------------------------------------------------------------------

    def loops(self) -> list[tuple[str, Callable[[], None]]]:
        """The pull loop and the heartbeat; `stop()` lets the pull loop finish the task in hand and hand
        back the rest."""
        return [("pull", self.run), ("heartbeat", self._heartbeat_loop)]

    # ----- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """Pull and process until stopped."""
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # one bad pass must not end the worker
                log.exception("worker %s: unexpected error in the pull loop", self.worker_id)
                self._stop.wait(self._backoff.next())
        if self._next:  # stopped between two batches: hand back what the last report leased
            self._report([], [], [(x.task.id, x.token) for x in self._next], lease_more=False)
        self.client.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        log.info("worker %s stopped after %d task(s)", self.worker_id or self.name, self.done)

    def run_once(self) -> int:
        """Register if needed, lease one batch, process it, report; returns tasks processed."""
        try:
            if not self.worker_id or self._reregister.is_set():
                self._register()
            leases, self._next = self._next or self.client.lease(self.worker_id, self.lease_size,
                                                                 self.config.wait_s), []
            self._held = frozenset(x.task.id for x in leases)
        except Unauthorized as e:  # a configuration error that retrying will not fix: stop the process
            give_up(f"worker {self.name}: the master at {self.config.master_url} refused this worker's token ({e}); "
                    f"give the master's token with --token-file or ${TOKEN_ENV}")
            self._stop.set()
            return 0
        except BadRequest as e:  # our id is unknown: the master restarted
            log.info("worker %s: %s; registering again", self.worker_id, e)
            self._reregister.set()
            return 0
        except MasterUnavailable as e:
            self._master_unavailable(e)
            return 0
        self._master_back()
        if leases:
            self._process_batch(leases)
        return len(leases)

    def _register(self) -> None:
        info = self.client.register_worker(self.name)
        self.worker_id, self.heartbeat_s = info["worker_id"], float(info["heartbeat_s"])
        self._reregister.clear()
        log.info("registered with %s as %s", self.config.master_url, self.worker_id)

    def _process_batch(self, leases: list[Lease]) -> None:
        outcomes: list[Outcome] = []
        failed: list[tuple[str, str, str]] = []
        released: list[tuple[str, str]] = []
        self.busy = True
        pending = {x.task.id: self._pool.submit(run_task, x.task.spec.pipeline, x.task.payload,
                                                x.task.spec.kind is TaskKind.TILE,
                                                bool(x.task.spec.meta.get("stacked")))
                   for x in leases} if self._pool is not None else {}
        for i, lease in enumerate(leases):
            if self._stop.is_set() and lease.task.id not in pending:
                released.append((lease.task.id, lease.token))
                continue
            started = time.monotonic()
            outcome, error = self.process(lease, pending.get(lease.task.id))
            self._slow = time.monotonic() - started >= EARLY_REPORT_S
            if outcome is not None:
                outcomes.append(outcome)
            else:
                failed.append((lease.task.id, lease.token, error))
            rest = leases[i + 1:]
            if rest and not pending and not self._backlogged() and time.monotonic() - started >= EARLY_REPORT_S:
                self._report(outcomes, failed, [], lease_more=False, hold=frozenset(x.task.id for x in rest))
                outcomes, failed = [], []
        self.busy = False
        self._report(outcomes, failed, released, lease_more=not self._stop.is_set())

    def process(self, lease: Lease, pending: Future | None = None) -> tuple[Outcome | None, str]:
        """Run one task (or collect it from the local pool); see worker.execute.execute."""
        return execute(lease, self.stages, pending, capabilities=self.capabilities)

    def _report(self, outcomes: list[Outcome], failed: list, released: list, *, lease_more: bool,
                hold: frozenset[str] | None = None) -> None:
        """Deliver a batch's outcomes (and lease the next batch in the same request), retrying while
        the leases could still be valid. `hold`: the leases still in hand (a report mid-batch)."""
        started = time.monotonic()
        lease_max = self.lease_size if lease_more else 0
        while True:
            try:
                reply, self._next = self.client.complete(self.worker_id, outcomes, failed, released,
                                                         lease_max=lease_max, wait_s=self.config.wait_s)
                self._held = frozenset(x.task.id for x in self._next) if hold is None else hold
                break
            except BadRequest as e:  # the master restarted and forgot us: these leases died with it
                log.info("worker %s: results not stored (%s); registering again", self.worker_id, e)
                self._reregister.set()
                self._next = []
                return
            except (MasterUnavailable, QueueFull) as e:
                # keep trying while the leases may still be valid; a stopping worker gives up sooner
                limit = REPORT_RETRY_STOPPING_S if self._stop.is_set() else REPORT_RETRY_S
                if time.monotonic() - started > limit or (self._stop.is_set() and not outcomes):
                    log.warning("worker %s: dropping %d outcome(s): %s", self.worker_id, len(outcomes), e)
                    return
                pause = self._backoff.next()
                if self._stop.is_set():  # shutting down: keep trying briefly, the stop event no longer waits
                    time.sleep(min(pause, 0.5))
                else:
                    self._stop.wait(pause)
        self.done += len(reply.get("accepted", []))
        self.failed += len(failed)
        for r in reply.get("rejected", []):
            log.info("worker %s: result for %s not stored: %s", self.worker_id, r["task_id"], r["reason"])

    def _master_unavailable(self, e: Exception) -> None:
        if not self._master_down:
            log.warning("worker %s: master unreachable (%s); retrying with backoff", self.worker_id or self.name, e)
            self._master_down = True
        self._stop.wait(self._backoff.next())

    def _master_back(self) -> None:
        if self._master_down:
            log.info("worker %s: master reachable again", self.worker_id)
            self._master_down = False
        self._backoff.reset()

    # ----- heartbeat ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """What the heartbeat reports: load, memory, progress, and what it can run how fast."""
        return process_stats(self.done, self.failed, self.busy, self.capabilities)

    def heartbeat_client(self) -> MasterClient:
        """A connection of its own for heartbeats: a long poll on the pull loop's must not delay them."""
        return MasterClient(self.config.master_url, timeout_s=min(5.0, self.config.timeout_s),
                            token=self.config.token)

    def heartbeat_once(self, client: MasterClient, stats: dict[str, Any] | None = None) -> None:
        """Tell the master this worker is alive and which tasks it holds (`stats`: what to report,
        by default this worker's own); a master that forgot it makes the pull loop register again."""
        if not self.worker_id:
            return
        try:
            self.heartbeat_reply(client.heartbeat(self.worker_id, stats or self.stats(), self._held))
        except (MasterUnavailable, OSError):
            pass  # the pull loop reports the outage
        except Exception:
            log.exception("worker %s: heartbeat failed", self.worker_id)

    @property
    def held(self) -> frozenset[str]:
        """The task ids in hand, as the next heartbeat tells the master."""
        return self._held

    def heartbeat_reply(self, reply: dict[str, Any]) -> None:
        """A master that does not know this worker (it restarted) makes the pull loop register again."""
        if not reply.get("known", True):
            self._reregister.set()

    def _heartbeat_loop(self) -> None:
        client = self.heartbeat_client()
        try:
            while not self._stop.wait(self.heartbeat_s):
                self.heartbeat_once(client)
        finally:
            client.close()
