"""The binary task API: frame bytes move as raw batch blobs instead of base64 inside XML.

Each function takes the service and a request body and returns (status, content type, body).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from common import batch
from common.errors import BadRequest, FramehiveError, TaskError
from common.tasks import MAX_ERROR_CHARS, lease_to_wire, outcome_from_wire, spec_from_wire
from master.api.rpc import MAX_BATCH_ITEMS, results_page
from master.core.service import MasterService

JSON = "application/json"


def _json(obj: Any, status: int = 200) -> tuple[int, str, bytes]:
    return status, JSON, json.dumps(obj, separators=(",", ":")).encode()


def _list(meta: dict, key: str) -> list:
    value = meta.get(key, [])
    if not isinstance(value, list) or len(value) > MAX_BATCH_ITEMS:
        raise BadRequest(f"{key!r} must be a list of at most {MAX_BATCH_ITEMS} items")
    return value


def _worker(meta: dict) -> str:
    worker = meta.get("worker")
    if not isinstance(worker, str) or not worker or len(worker) > 128:
        raise BadRequest("'worker' must be the worker_id that register_worker returned")
    return worker


def add(svc: MasterService, body: bytes) -> tuple[int, str, bytes]:
    """POST /api/v1/tasks: a batch of task specs, one blob (the JPEG) per task."""
    meta, blobs = batch.unpack(body)
    tasks = _list(meta, "tasks")
    if len(tasks) != len(blobs):
        raise BadRequest(f"{len(tasks)} tasks but {len(blobs)} payload blobs")
    report_error = ""
    if "source" in meta or "counters" in meta:
        try:  # a bad report is refused on its own: the frames that came with it are still taken
            svc.report_source(meta.get("source"), meta.get("counters"))
        except BadRequest as e:
            svc.errors["bad_report"] += 1
            report_error = str(e)
    good, errors = [], []
    for i, (t, blob) in enumerate(zip(tasks, blobs)):
        try:
            good.append((i, spec_from_wire(t), bytes(blob)))
        except FramehiveError as e:
            errors.append({"index": i, "error": str(e)})
    ids = [""] * len(tasks)
    if good:
        for (i, _, _), task_id in zip(good, svc.add_tasks((s, p) for _, s, p in good)):
            ids[i] = task_id
    if errors:
        svc.errors["bad_task"] += len(errors)
    return _json({"ids": ids, "errors": errors, **({"report_error": report_error} if report_error else {})})


def lease(svc: MasterService, body: bytes) -> tuple[int, str, bytes]:
    """POST /api/v1/lease: JSON {worker, max, wait_s} -> a batch of leases with payload blobs."""
    req = _json_body(body)
    max_n, wait_s = _lease_args(req)
    leases = svc.request_tasks(_worker(req), max(1, max_n), wait_s)
    meta = {"tasks": [lease_to_wire(x) for x in leases], "backlog": svc.backlog()}
    return 200, batch.CONTENT_TYPE, batch.pack(meta, [x.task.payload for x in leases])


def complete(svc: MasterService, body: bytes) -> tuple[int, str, bytes]:
    """POST /api/v1/complete: outcomes, failures and hand-backs of one worker, and its next leases.

    With `"lease": {"max": n, "wait_s": s}` the reply also carries up to n new leases, so a busy
    worker makes one request per batch instead of two.
    """
    meta, blobs = batch.unpack(body)
    worker = _worker(meta)
    outcomes = [outcome_from_wire(o) for o in _list(meta, "outcomes")]
    if blobs:  # output images (tile tasks), one blob per outcome, empty where there is none
        if len(blobs) != len(outcomes):
            raise BadRequest(f"{len(outcomes)} outcomes but {len(blobs)} image blobs")
        outcomes = [dataclasses.replace(o, image=bytes(b)) for o, b in zip(outcomes, blobs)]
    out: dict[str, Any] = svc.complete(worker, outcomes)
    out["failed"] = []
    for f in _list(meta, "failed"):
        try:
            out["failed"].append(svc.fail(worker, str(f["task_id"]), str(f["token"]),
                                          str(f.get("error", ""))[:MAX_ERROR_CHARS]))
        except (KeyError, TypeError) as e:
            raise BadRequest("each 'failed' item needs task_id, token and error") from e
        except TaskError as e:
            out["rejected"].append({"task_id": str(f.get("task_id")), "reason": str(e)})
    released = [(str(r.get("task_id")), str(r.get("token"))) for r in _list(meta, "released") if isinstance(r, dict)]
    out["released"] = svc.release(worker, released)
    max_n, wait_s = _lease_args(meta.get("lease", {"max": 0}))
    leases = svc.request_tasks(worker, max_n, wait_s) if max_n else []
    out["tasks"] = [lease_to_wire(x) for x in leases]
    out["backlog"] = svc.backlog()
    return 200, batch.CONTENT_TYPE, batch.pack(out, [x.task.payload for x in leases])


def heartbeats(svc: MasterService, body: bytes) -> tuple[int, str, bytes]:
    """POST /api/v1/heartbeats: JSON {stats, beats: [{worker, stats, held}]} -> {replies: [...]}, one reply
    ({known, renewed, reclaimed}) per beat: the pull loops of one worker process in one request."""
    req = _json_body(body)
    shared = req.get("stats")
    if shared is not None and not isinstance(shared, dict):
        raise BadRequest("'stats' must be an object")
    beats = []
    for beat in _list(req, "beats"):
        if not isinstance(beat, dict):
            raise BadRequest("each beat must be an object {worker, stats, held}")
        own, held = beat.get("stats"), beat.get("held")
        if own is not None and not isinstance(own, dict):
            raise BadRequest("a beat's 'stats' must be an object")
        if held is not None:
            held = [str(t)[:64] for t in _list(beat, "held")]
        beats.append((_worker(beat), own, held))
    return _json({"replies": svc.heartbeats(beats, shared)})


def _lease_args(req: Any) -> tuple[int, float]:
    if not isinstance(req, dict):
        raise BadRequest("'lease' must be an object {max, wait_s}")
    max_n, wait_s = req.get("max", 1), req.get("wait_s", 0.0)
    if not isinstance(max_n, int) or isinstance(max_n, bool) or not isinstance(wait_s, (int, float)):
        raise BadRequest("'max' must be an integer and 'wait_s' a number")
    return max_n, float(wait_s)


def _job_id(req: dict) -> str:
    job_id = req.get("job_id")
    if not isinstance(job_id, str) or not job_id or len(job_id) > 128:
        raise BadRequest("'job_id' must be a non-empty string of at most 128 characters")
    return job_id


def _json_body(body: bytes) -> dict:
    try:
        req = json.loads(body or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"request body is not JSON: {e}") from e
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    if not isinstance(req, dict):
        raise BadRequest("request body must be a JSON object")
    return req


def job_take(svc: MasterService, body: bytes) -> tuple[int, str, bytes]:
    """POST /api/v1/jobs/take: JSON {job_id, max, wait_s, ack} -> a batch of finished tiles with their images.

    `ack`: the task ids of the tiles the previous reply carried. Until then they stay in the master's
    journal, so a reply lost when the master is killed is sent again after its restart."""
    req = _json_body(body)
    max_n, wait_s = _lease_args(req)
    ack = req.get("ack", [])
    if not isinstance(ack, list) or len(ack) > 1024 or not all(isinstance(t, str) and len(t) <= 64 for t in ack):
        raise BadRequest("'ack' must be a list of at most 1024 task ids")
    items = svc.take_job_results(_job_id(req), max(1, max_n), wait_s, ack)
    return 200, batch.CONTENT_TYPE, batch.pack({"results": [r.to_wire() for r, _ in items]}, [img for _, img in items])


def job_cancel(svc: MasterService, body: bytes) -> tuple[int, str, bytes]:
    """POST /api/v1/jobs/cancel: JSON {job_id} -> {cancelled: n}."""
    return _json({"cancelled": svc.cancel_job(_job_id(_json_body(body)))})


def events_get(svc: MasterService, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
    """GET /events?since=0&limit=100 (the same page as get_events)."""
    try:
        since = int(query.get("since", ["0"])[0])
        limit = int(query.get("limit", ["100"])[0])
    except ValueError as e:
        raise BadRequest("use ?since=CURSOR&limit=N") from e
    if since < 0 or not 1 <= limit <= 1000:
        raise BadRequest("since must be >= 0 and limit 1..1000")
    return _json(svc.get_events(since, limit))


def results_get(svc: MasterService, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
    """GET /api/v1/results?port=5000&since=0&limit=100[&incarnation=...] (the same page as get_results)."""
    try:
        port = int(query["port"][0])
        since = int(query.get("since", ["0"])[0])
        limit = int(query.get("limit", ["100"])[0])
    except (KeyError, ValueError) as e:
        raise BadRequest("use ?port=N[&since=CURSOR][&limit=N]") from e
    incarnation = query.get("incarnation", [""])[0]
    if not 0 <= port <= 65535 or since < 0 or not 1 <= limit <= 1000 or len(incarnation) > 64:
        raise BadRequest("port must be 0..65535, since >= 0, limit 1..1000, incarnation a page's own")
    return _json(results_page(svc.results(port, since, limit, incarnation)))
