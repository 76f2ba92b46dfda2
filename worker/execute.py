"""One lease in, one outcome out: the step every backend's worker shares.

The XML-RPC pull loop (worker/loop.py) and the Celery tasks (worker/celery_app.py) both call
`execute`, so a frame or a tile is processed, and its errors classified, the same way whichever
engine carried it.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from concurrent.futures import Future
from typing import Any

import psutil

from common.errors import DecodeError, PipelineSpecError
from common.imageinfo import ImageTooLarge
from common.tasks import Lease, Outcome, TaskKind
from worker.capability import Capabilities
from worker.pipeline import StageCache, run_task

log = logging.getLogger(__name__)


def execute(lease: Lease, stages: StageCache | None = None, pending: Future | None = None, *,
            capabilities: Capabilities | None = None) -> tuple[Outcome | None, str]:
    """Run one leased task (or collect it from a local pool's `pending` future).

    A payload that is not an image, or a pipeline the worker cannot build, is a result with an
    error: retrying would fail the same way. Any other exception is a crash, returned as
    (None, reason) so the caller asks for a retry, maybe elsewhere. A good outcome's stage times go
    into `capabilities` (what the worker reports it runs, and how fast).
    """
    outcome, reason = _execute(lease, stages, pending)
    if capabilities is not None and outcome is not None and not outcome.error:
        capabilities.times.observe(outcome.timings_ms)
    return outcome, reason


def _execute(lease: Lease, stages: StageCache | None, pending: Future | None) -> tuple[Outcome | None, str]:
    task, started = lease.task, time.time_ns()
    try:
        detections, timings, image = pending.result() if pending is not None else run_task(
            task.spec.pipeline, task.payload, task.spec.kind is TaskKind.TILE,
            bool(task.spec.meta.get("stacked")), stages)
    except (DecodeError, PipelineSpecError) as e:
        if isinstance(e, ImageTooLarge):
            REFUSED["images_too_large"] += 1
            log.warning("task %s (port %d seq %d): %s", task.id, task.spec.port, task.spec.seq, e)
        else:
            log.info("task %s (port %d seq %d): %s", task.id, task.spec.port, task.spec.seq, e)
        return Outcome(task.id, lease.token, error=str(e), started_ns=started, finished_ns=time.time_ns()), ""
    except Exception as e:  # a detector crash: let the master retry it, maybe elsewhere
        log.exception("task %s failed in its pipeline", task.id)
        return None, f"{type(e).__name__}: {e}"
    return Outcome(task.id, lease.token, detections, timings, "", started, time.time_ns(), image), ""


REFUSED: Counter[str] = Counter()  # inputs this process refused unread, by reason (told in heartbeats)
_PROCESS: psutil.Process | None = None  # kept: cpu_percent measures since the previous call on the same object


def process_stats(done: int, failed: int, busy: bool,
                  capabilities: Capabilities | None = None) -> dict[str, Any]:
    """What a worker tells the master about itself: load, memory, progress (CPU since the last call)."""
    global _PROCESS
    if _PROCESS is None or _PROCESS.pid != os.getpid():  # a pool process forked after the first call
        _PROCESS = psutil.Process()
        _PROCESS.cpu_percent(None)
    proc = _PROCESS
    return {"cpu_percent": proc.cpu_percent(None), "rss_mb": round(proc.memory_info().rss / 2**20, 1),
            "host_cpu_percent": psutil.cpu_percent(None), "tasks_done": done,
            "tasks_failed": failed, "busy": int(busy), "pid": os.getpid(),
            "images_refused": REFUSED["images_too_large"],
            **({"capabilities": capabilities.report()} if capabilities is not None else {})}
