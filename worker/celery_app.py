"""The Celery app: `celery -A worker.celery_app worker -Q frames,tiles`.

Its two tasks run the very same step as the XML-RPC pull worker (worker.execute.execute) on the
lease the master sent. Configuration comes from FRAMEHIVE_* environment variables (see
common/celeryconf.py); messages are JSON only.
"""

from __future__ import annotations

import base64
import faulthandler
import logging
import os
import signal
import socket
import sys

from celery import Celery, Task
from celery.signals import worker_process_init

from common.celeryconf import FRAME_TASK, TILE_TASK, max_retries, result_message, settings_from_env
from common.tasks import lease_from_wire
from worker.capability import Capabilities
from worker.detectors import stage_env_from
from worker.execute import execute, process_stats
from worker.pipeline import StageCache

log = logging.getLogger(__name__)

app = Celery("framehive")
app.conf.update(settings_from_env())
# Celery logs every task's return value at INFO: a tile's is a base64 image. Failures still log.
logging.getLogger("celery.app.trace").setLevel(logging.WARNING)

_STAGES: StageCache | None = None  # this process's built detectors and filters
_CAPABILITIES: Capabilities | None = None  # what this process can run, and how fast it ran it
_COUNTS = {"done": 0, "failed": 0}
RETRIES = max_retries()


class PipelineCrash(Exception):
    """A pipeline raised something other than a bad-input error: worth a retry, maybe elsewhere."""


def _run(task: Task, lease_wire: dict, payload_b64: str) -> dict:
    global _STAGES, _CAPABILITIES
    if _STAGES is None or _CAPABILITIES is None:
        _STAGES = StageCache(stage_env_from(os.environ))
        _CAPABILITIES = Capabilities(_STAGES.env)
    lease = lease_from_wire(lease_wire, base64.b64decode(payload_b64))
    outcome, error = execute(lease, _STAGES, capabilities=_CAPABILITIES)
    if outcome is None:
        _COUNTS["failed"] += 1
        raise PipelineCrash(error)
    _COUNTS["done"] += 1
    worker = f"{task.request.hostname or socket.gethostname()}"
    return result_message(outcome, worker, process_stats(_COUNTS["done"], _COUNTS["failed"], False, _CAPABILITIES))


_RETRY = {"autoretry_for": (PipelineCrash,), "retry_backoff": 1, "retry_backoff_max": 10,
          "retry_jitter": True, "max_retries": RETRIES, "acks_late": True}


@app.task(name=FRAME_TASK, bind=True, **_RETRY)
def run_frame(self: Task, lease_wire: dict, payload_b64: str) -> dict:
    """A live camera frame: detections (and timings) back to the master."""
    return _run(self, lease_wire, payload_b64)


@app.task(name=TILE_TASK, bind=True, **_RETRY)
def run_tile(self: Task, lease_wire: dict, payload_b64: str) -> dict:
    """A file job's tile: the processed tile image back to the master."""
    return _run(self, lease_wire, payload_b64)


@worker_process_init.connect
def _on_pool_process_start(**_: object) -> None:
    """In each pool process: SIGUSR2 prints every thread's stack (see where a stuck task is)."""
    faulthandler.register(signal.SIGUSR2, file=sys.__stderr__, all_threads=True)
