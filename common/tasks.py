"""Task and result types and their one explicit conversion to and from wire dicts.

Wire dicts are JSON- and XML-RPC-safe: ids and nanosecond times are strings, sequence numbers
fit a signed 32-bit int, and payload bytes travel beside the dict (a batch blob or an
xmlrpc Binary), never inside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from common.errors import BadRequest
from common.pipeline import normalize_pipeline
from common.wiredata import META, clean

MAX_PORT = 65535
SEQ_WIRE_MASK = 0x7FFFFFFF  # XML-RPC ints are signed 32-bit
MAX_LABEL_CHARS = 64
MAX_DETECTIONS = 256
MAX_ERROR_CHARS = 500
MAX_TIMINGS = 32


class TaskKind(StrEnum):
    """What a task carries."""

    FRAME = "frame"  # a live camera frame: real time, may be dropped when stale
    TILE = "tile"  # part of a file job: never dropped


class TaskState(StrEnum):
    """Where a task is in its life."""

    PENDING = "PENDING"
    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class TaskSpec:
    """What a producer submits: everything about a task except what the master assigns."""

    port: int
    seq: int
    pipeline: str
    captured_ns: int
    received_ns: int
    kind: TaskKind = TaskKind.FRAME
    job_id: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """A task as the master hands it to a worker."""

    id: str
    spec: TaskSpec
    payload: bytes
    queued_ns: int


@dataclass(frozen=True)
class Lease:
    """A task handed to a worker, with the token that must come back with its outcome."""

    task: Task
    token: str
    lease_s: float
    attempt: int


@dataclass(frozen=True)
class Detection:
    """One thing found in a frame; box is x, y, width, height in pixels of the original frame."""

    label: str
    score: float
    box: tuple[int, int, int, int]
    track_id: int = 0  # the camera's track this detection belongs to (the master's tracker); 0: none yet

    def to_wire(self) -> dict[str, Any]:
        """The dict users see in results (track_id only once the master's tracker has given one)."""
        wire = {"label": self.label, "score": round(float(self.score), 4), "box": list(self.box)}
        if self.track_id:
            wire["track_id"] = self.track_id
        return wire


@dataclass(frozen=True)
class Outcome:
    """What a worker reports for one task."""

    task_id: str
    token: str
    detections: tuple[Detection, ...] = ()
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    error: str = ""
    started_ns: int = 0
    finished_ns: int = 0
    image: bytes = b""  # the filtered image (PNG) for a tile task; travels as a blob, never in the dict


def _int(d: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    v = d.get(key)
    if isinstance(v, str) and v.lstrip("-").isdigit():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise BadRequest(f"{key!r} must be an integer in {lo}..{hi}, got {v!r}")
    return v


def wire_text(d: Mapping[str, Any], key: str, max_chars: int, default: str | None = None) -> str:
    """d[key] as a string of at most `max_chars` (or `default` when missing); BadRequest naming the key."""
    v = d.get(key, default)
    if not isinstance(v, str) or len(v) > max_chars:
        raise BadRequest(f"{key!r} must be a string of at most {max_chars} characters, got {v!r:.80}")
    return v


def spec_to_wire(spec: TaskSpec) -> dict[str, Any]:
    """A TaskSpec as a wire dict (payload travels separately)."""
    return {"port": spec.port, "seq": spec.seq & SEQ_WIRE_MASK, "pipeline": spec.pipeline,
            "captured_ns": str(spec.captured_ns), "received_ns": str(spec.received_ns),
            "kind": spec.kind.value, "job_id": spec.job_id, "meta": dict(spec.meta)}


def spec_from_wire(d: Any) -> TaskSpec:
    """Validate and convert a wire dict; raise BadRequest naming the bad field."""
    if not isinstance(d, Mapping):
        raise BadRequest(f"a task must be a struct/dict, got {type(d).__name__}")
    try:
        kind = TaskKind(d.get("kind", "frame"))
    except ValueError as e:
        raise BadRequest(f"'kind' must be 'frame' or 'tile', got {d.get('kind')!r}") from e
    meta = d.get("meta", {})
    if not isinstance(meta, Mapping):
        raise BadRequest("'meta' must be a struct/dict")
    meta = clean(dict(meta), META, what="meta")  # finite numbers, short strings, shallow: safe in every reply
    return TaskSpec(
        port=_int(d, "port", 0, MAX_PORT),
        seq=_int(d, "seq", 0, SEQ_WIRE_MASK),
        pipeline=normalize_pipeline(wire_text(d, "pipeline", 512)),
        captured_ns=_int(d, "captured_ns", 0, 2**63 - 1),
        received_ns=_int(d, "received_ns", 0, 2**63 - 1) if "received_ns" in d else 0,
        kind=kind,
        job_id=wire_text(d, "job_id", 128, ""),
        meta=meta,
    )


def task_to_wire(task: Task) -> dict[str, Any]:
    """A Task as a wire dict for a worker (payload travels separately)."""
    return {"id": task.id, **spec_to_wire(task.spec), "queued_ns": str(task.queued_ns)}


def task_from_wire(d: Mapping[str, Any], payload: bytes) -> Task:
    """Rebuild a Task on the worker side."""
    return Task(id=wire_text(d, "id", 64), spec=spec_from_wire(d), payload=payload,
                queued_ns=_int(d, "queued_ns", 0, 2**63 - 1))


def lease_to_wire(lease: Lease) -> dict[str, Any]:
    """A Lease as a wire dict (payload travels separately)."""
    return {**task_to_wire(lease.task), "token": lease.token, "lease_s": lease.lease_s, "attempt": lease.attempt}


def lease_from_wire(d: Mapping[str, Any], payload: bytes) -> Lease:
    """Rebuild a Lease on the worker side."""
    return Lease(task_from_wire(d, payload), wire_text(d, "token", 64), float(d.get("lease_s", 0.0)),
                 _int(d, "attempt", 0, 1000))


def detection_from_wire(d: Any) -> Detection:
    """Validate one detection dict."""
    if not isinstance(d, Mapping):
        raise BadRequest("a detection must be a struct/dict")
    box = d.get("box")
    if (not isinstance(box, (list, tuple)) or len(box) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
        raise BadRequest(f"detection 'box' must be [x, y, w, h], got {box!r:.80}")
    score = d.get("score")
    if not isinstance(score, (int, float)) or isinstance(score, bool) or not math.isfinite(score):
        raise BadRequest(f"detection 'score' must be a number, got {score!r:.40}")
    track = d.get("track_id", 0)
    if not isinstance(track, int) or isinstance(track, bool) or not 0 <= track <= SEQ_WIRE_MASK:
        raise BadRequest(f"detection 'track_id' must be an integer in 0..{SEQ_WIRE_MASK}, got {track!r:.40}")
    return Detection(wire_text(d, "label", MAX_LABEL_CHARS), float(score), tuple(int(v) for v in box), track)


def outcome_to_wire(o: Outcome) -> dict[str, Any]:
    """An Outcome as a wire dict."""
    return {"task_id": o.task_id, "token": o.token, "detections": [x.to_wire() for x in o.detections],
            "timings_ms": {k: round(float(v), 3) for k, v in o.timings_ms.items()}, "error": o.error,
            "started_ns": str(o.started_ns), "finished_ns": str(o.finished_ns)}


def outcome_from_wire(d: Any) -> Outcome:
    """Validate and convert a worker's report; raise BadRequest naming the bad field."""
    if not isinstance(d, Mapping):
        raise BadRequest(f"a completion must be a struct/dict, got {type(d).__name__}")
    dets = d.get("detections", [])
    if not isinstance(dets, list) or len(dets) > MAX_DETECTIONS:
        raise BadRequest(f"'detections' must be a list of at most {MAX_DETECTIONS}")
    timings = d.get("timings_ms", {})
    if (not isinstance(timings, Mapping) or len(timings) > MAX_TIMINGS
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in timings.values())):
        raise BadRequest(f"'timings_ms' must map at most {MAX_TIMINGS} stage names to numbers")
    return Outcome(
        task_id=wire_text(d, "task_id", 64), token=wire_text(d, "token", 64),
        detections=tuple(detection_from_wire(x) for x in dets),
        timings_ms={str(k)[:64]: float(v) for k, v in timings.items()},
        error=wire_text(d, "error", 100_000, "")[:MAX_ERROR_CHARS],
        started_ns=_int(d, "started_ns", 0, 2**63 - 1) if "started_ns" in d else 0,
        finished_ns=_int(d, "finished_ns", 0, 2**63 - 1) if "finished_ns" in d else 0,
    )
