"""The stored result of a task, as the master keeps it and users read it, and its one wire conversion.

The master builds a `Result` once, when a task ends (completed, failed, or skipped by the receiver);
everything inside the master reads its attributes. The wire dict (docs/PROTOCOL.md section 3.3) is
made only where a result leaves: a get_results page, a file job's finished tiles, the journal.
Clients (the results CLI, the job server) turn what they receive back into a `Result` with
`Result.from_wire`, which checks every field.

One type serves live frames and file-job tiles, as `TaskSpec` does: a tile differs only by its
`kind`, its `job_id` and the task `meta` it carries back (which frame and tile it is).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from common.errors import BadRequest
from common.tasks import (
    MAX_DETECTIONS,
    MAX_PORT,
    MAX_TIMINGS,
    SEQ_WIRE_MASK,
    Detection,
    TaskKind,
    detection_from_wire,
    wire_text,
)
from common.wiredata import META, clean

MAX_CURSOR = 2**31 - 1  # cursors travel as XML-RPC ints
MAX_TEXT_CHARS = 100_000  # error and skip_reason: longer than the store ever writes, short enough to refuse junk
_E = TypeVar("_E", bound=StrEnum)


class ResultStatus(StrEnum):
    """How a task ended."""

    OK = "ok"
    ERROR = "error"  # the payload or pipeline was bad: not retried
    FAILED = "failed"  # no attempts left, or quarantined
    SKIPPED = "skipped"  # the receiver's motion gate or rate limit kept it from the detector


@dataclass(frozen=True)
class Result:
    """One stored result. Times are seconds since the Unix epoch (captured_at on the camera's clock,
    the others on the master's); durations are ms. Values are kept as they read on the wire
    (detection scores to 4 places, timings to 3), so `from_wire(r.to_wire()) == r`."""

    cursor: int  # position in its camera's results ring; 0 for a file-job tile
    task_id: str
    port: int
    seq: int  # the frame number, as on the wire (31 bits)
    kind: TaskKind
    pipeline: str
    status: ResultStatus
    error: str
    worker: str
    attempts: int
    detections: tuple[Detection, ...]
    timings_ms: Mapping[str, float]
    captured_at: float
    received_at: float
    queued_at: float
    completed_at: float
    latency_ms: float
    stages_ms: Mapping[str, float]
    job_id: str = ""  # on the wire only when set
    motion: float | None = None  # fraction of the frame that moved; on the wire only when known
    skip_reason: str = ""  # on the wire only for a skipped result
    meta: Mapping[str, Any] = field(default_factory=dict)  # the task's meta; on the wire only for a tile
    camera: str = ""  # the camera's name from the cluster file; on the wire only when it has one

    def to_wire(self) -> dict[str, Any]:
        """The result as users read it: JSON- and XML-RPC-safe, keys in the documented order."""
        wire: dict[str, Any] = {
            "cursor": self.cursor, "task_id": self.task_id, "port": self.port, "seq": self.seq,
            "kind": self.kind.value, "pipeline": self.pipeline, "status": self.status.value, "error": self.error,
            "worker": self.worker, "attempts": self.attempts, "detections": [d.to_wire() for d in self.detections],
            "timings_ms": dict(self.timings_ms), "captured_at": self.captured_at, "received_at": self.received_at,
            "queued_at": self.queued_at, "completed_at": self.completed_at, "latency_ms": self.latency_ms,
            "stages_ms": dict(self.stages_ms),
        }
        if self.job_id:
            wire["job_id"] = self.job_id
        if self.motion is not None:
            wire["motion"] = self.motion
        if self.status is ResultStatus.SKIPPED:
            wire["skip_reason"] = self.skip_reason
        if self.kind is TaskKind.TILE:
            wire["meta"] = dict(self.meta)
        if self.camera:
            wire["camera"] = self.camera
        return wire

    @classmethod
    def from_wire(cls, d: Any) -> Result:
        """Validate and convert a wire dict; raise BadRequest naming the bad field."""
        if not isinstance(d, Mapping):
            raise BadRequest(f"a result must be a struct/dict, got {type(d).__name__}")
        dets = d.get("detections")
        if not isinstance(dets, list) or len(dets) > MAX_DETECTIONS:
            raise BadRequest(f"'detections' must be a list of at most {MAX_DETECTIONS}")
        meta = d.get("meta", {})
        if not isinstance(meta, Mapping):
            raise BadRequest("'meta' must be a struct/dict")
        return cls(
            cursor=_int(d, "cursor", 0, MAX_CURSOR), task_id=wire_text(d, "task_id", 64),
            port=_int(d, "port", 0, MAX_PORT), seq=_int(d, "seq", 0, SEQ_WIRE_MASK),
            kind=_enum(TaskKind, d, "kind"), pipeline=wire_text(d, "pipeline", 512),
            status=_enum(ResultStatus, d, "status"), error=wire_text(d, "error", MAX_TEXT_CHARS),
            worker=wire_text(d, "worker", 256), attempts=_int(d, "attempts", 0, 1000),
            detections=tuple(detection_from_wire(x) for x in dets), timings_ms=_ms(d, "timings_ms"),
            captured_at=_number(d, "captured_at"), received_at=_number(d, "received_at"),
            queued_at=_number(d, "queued_at"), completed_at=_number(d, "completed_at"),
            latency_ms=_number(d, "latency_ms"), stages_ms=_ms(d, "stages_ms"),
            job_id=wire_text(d, "job_id", 128, ""), camera=wire_text(d, "camera", 64, ""),
            motion=_number(d, "motion") if "motion" in d else None,
            skip_reason=wire_text(d, "skip_reason", MAX_TEXT_CHARS, ""),
            meta=clean(dict(meta), META, what="meta"),
        )


def _int(d: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise BadRequest(f"{key!r} must be an integer in {lo}..{hi}, got {v!r:.40}")
    return v


def _number(d: Mapping[str, Any], key: str) -> float:
    """A finite number, kept as it came (an int stays an int, so the wire reads the same again)."""
    v = d.get(key)
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
        raise BadRequest(f"{key!r} must be a finite number, got {v!r:.40}")
    return v


def _ms(d: Mapping[str, Any], key: str) -> dict[str, float]:
    v = d.get(key)
    if (not isinstance(v, Mapping) or len(v) > MAX_TIMINGS
            or not all(isinstance(k, str) and len(k) <= 64 for k in v)
            or not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                       for x in v.values())):
        raise BadRequest(f"{key!r} must map at most {MAX_TIMINGS} stage names to numbers (ms)")
    return dict(v)


def _enum(cls: type[_E], d: Mapping[str, Any], key: str) -> _E:
    try:
        return cls(d.get(key))
    except ValueError as e:
        raise BadRequest(f"{key!r} must be one of {', '.join(x.value for x in cls)}, got {d.get(key)!r:.40}") from e
