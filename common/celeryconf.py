"""What the master and the Celery workers must agree on: settings, task names, message shapes.

The master sends tasks by name (it never imports the worker's code); the worker's tasks are
defined in worker/celery_app.py with these names. Messages are JSON only: a pickle message could
run code on the workers, so workers refuse anything else.

Settings come from the environment, because `celery -A worker.celery_app worker` owns the command
line and a Redis password must never sit in `ps` output:

    FRAMEHIVE_REDIS            broker and result backend URL   redis://127.0.0.1:6379/0
    FRAMEHIVE_VISIBILITY_S     seconds before Redis hands an unacknowledged task to another worker
    FRAMEHIVE_RATE_LIMIT       Celery rate limit per worker for live frames, e.g. "50/s" (unset: none)
    FRAMEHIVE_MAX_RETRIES      retries after a pipeline crash before the master is told it failed
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from typing import Any

from common.errors import BadRequest, ConfigError
from common.tasks import Lease, Outcome, TaskKind, lease_to_wire, outcome_from_wire, outcome_to_wire

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_VISIBILITY_S = 30.0
DEFAULT_MAX_RETRIES = 3
FRAME_TASK = "framehive.frame"
TILE_TASK = "framehive.tile"
QUEUES = {TaskKind.FRAME: "frames", TaskKind.TILE: "tiles"}
TASK_NAMES = {TaskKind.FRAME: FRAME_TASK, TaskKind.TILE: TILE_TASK}
RESULT_EXPIRES_S = 600  # a result the master never collected (it died) leaves Redis after this
RESULT_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}
_RATE = re.compile(r"^\d+(\.\d+)?/[smh]$")


def redis_url(env: Mapping[str, str] = os.environ) -> str:
    """The Redis URL from the environment, checked enough to fail with a clear message."""
    url = env.get("FRAMEHIVE_REDIS", DEFAULT_REDIS)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"FRAMEHIVE_REDIS must be a redis:// rediss:// or unix:// URL, got {url!r}")
    return url


def settings(url: str, *, visibility_s: float = DEFAULT_VISIBILITY_S,
             rate_limit: str | None = None) -> dict[str, Any]:
    """The Celery configuration both sides use."""
    if visibility_s <= 0:
        raise ConfigError(f"visibility timeout must be > 0 s, got {visibility_s}")
    if rate_limit and not _RATE.match(rate_limit):
        raise ConfigError(f"rate limit must look like 50/s, 600/m or 9000/h, got {rate_limit!r}")
    transport = {
        # a task whose worker died is handed to another after this, not after Redis's default hour
        "visibility_timeout": visibility_s,
        "unacked_restore_interval": max(1, int(visibility_s // 4)),
        "unacked_restore_throttle": 1,
        # a Redis that vanished without closing the connection must not hang a publish forever
        "socket_timeout": 5.0,
        "socket_connect_timeout": 3.0,
        "health_check_interval": 10,
    }
    return {
        "broker_url": url,
        "result_backend": url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,  # a task is acknowledged when done, so a killed worker's task is redelivered
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": transport,
        # a lost Redis is retried briefly, not 20 times a second apart: the caller's own loop retries,
        # and can stop in the meantime (the master's dispatcher exits within seconds of a SIGTERM)
        "result_backend_transport_options": {"socket_timeout": 5.0, "socket_connect_timeout": 3.0,
                                             "retry_policy": RESULT_RETRY_POLICY},
        "redis_socket_timeout": 5.0,
        "redis_socket_connect_timeout": 3.0,
        "redis_retry_on_timeout": False,
        "result_expires": RESULT_EXPIRES_S,
        "result_cache_max": -1,  # the master forgets results it collected; no client-side cache
        "task_publish_retry_policy": dict(RESULT_RETRY_POLICY),
        "broker_connection_retry_on_startup": True,
        "task_routes": {FRAME_TASK: {"queue": QUEUES[TaskKind.FRAME]}, TILE_TASK: {"queue": QUEUES[TaskKind.TILE]}},
        "task_annotations": {FRAME_TASK: {"rate_limit": rate_limit}} if rate_limit else {},
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_ignore_result": False,
    }


def settings_from_env(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """settings() with values read from FRAMEHIVE_* variables."""
    try:
        visibility = float(env.get("FRAMEHIVE_VISIBILITY_S", DEFAULT_VISIBILITY_S))
    except ValueError as e:
        raise ConfigError(f"FRAMEHIVE_VISIBILITY_S must be a number of seconds: {e}") from e
    return settings(redis_url(env), visibility_s=visibility, rate_limit=env.get("FRAMEHIVE_RATE_LIMIT") or None)


def max_retries(env: Mapping[str, str] = os.environ) -> int:
    """FRAMEHIVE_MAX_RETRIES, checked."""
    raw = env.get("FRAMEHIVE_MAX_RETRIES", str(DEFAULT_MAX_RETRIES))
    if not raw.isdigit() or int(raw) > 10:
        raise ConfigError(f"FRAMEHIVE_MAX_RETRIES must be an integer 0..10, got {raw!r}")
    return int(raw)


# ----- messages: a lease out, an outcome back ---------------------------------------------------

def lease_message(lease: Lease) -> list[Any]:
    """A lease as a Celery task's JSON arguments (payload base64: JSON has no bytes)."""
    return [lease_to_wire(lease), base64.b64encode(lease.task.payload).decode("ascii")]


def result_message(outcome: Outcome, worker: str, stats: Mapping[str, Any]) -> dict[str, Any]:
    """What a Celery task returns: the outcome, its image (tiles) and who did it."""
    return {"outcome": outcome_to_wire(outcome), "image": base64.b64encode(outcome.image).decode("ascii"),
            "worker": worker, "stats": dict(stats)}


def outcome_from_result(result: Any) -> tuple[Outcome, str, dict[str, Any]]:
    """Validate a Celery result back into (Outcome, worker name, worker stats); BadRequest if malformed."""
    if not isinstance(result, Mapping):
        raise BadRequest(f"a Celery result must be a dict, got {type(result).__name__}")
    outcome = outcome_from_wire(result.get("outcome"))
    try:
        image = base64.b64decode(result.get("image") or "", validate=True)
    except (ValueError, TypeError) as e:
        raise BadRequest(f"result image is not base64: {e}") from e
    worker = result.get("worker")
    stats = result.get("stats")
    return (Outcome(outcome.task_id, outcome.token, outcome.detections, outcome.timings_ms, outcome.error,
                    outcome.started_ns, outcome.finished_ns, image),
            str(worker)[:64] if isinstance(worker, str) else "celery",
            dict(stats) if isinstance(stats, Mapping) else {})
