"""The forwarder: takes reassembled frames and queues them on the master in batches."""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping

from common.config import MasterLink
from common.errors import BadRequest, DecodeError, MasterUnavailable, QueueFull
from common.gating import GatePolicy
from common.imageinfo import MAX_IMAGE_PIXELS, check_image
from common.runtime import Component
from common.tasks import TaskSpec
from receiver.buffer import FrameBuffer, ReadyFrame
from receiver.motion import MotionGate

log = logging.getLogger(__name__)

BATCH_MAX = 32
TAKE_TIMEOUT_S = 0.2
REPORT_EVERY_S = 1.0


MAX_BATCH_BYTES = 16 * 1024 * 1024  # payload per request: half the master's default request limit


def split_by_bytes(frames: list[ReadyFrame], limit: int) -> list[list[ReadyFrame]]:
    """Consecutive groups of frames whose payloads add up to at most `limit` bytes (a frame bigger
    than that goes alone)."""
    groups: list[list[ReadyFrame]] = []
    size = limit + 1
    for f in frames:
        if size + len(f.data) > limit:
            groups.append([])
            size = 0
        groups[-1].append(f)
        size += len(f.data)
    return groups


class Forwarder(Component):
    """Moves frames from a FrameBuffer to the master; frames are never decoded or re-encoded here."""

    thread_name = "forwarder"

    def __init__(self, buffer: FrameBuffer, master: MasterLink, *, name: str,
                 counters: Callable[[], dict], batch_max: int = BATCH_MAX,
                 policies: Mapping[int, GatePolicy] | None = None,
                 report_extra: Callable[[], dict] | None = None,
                 max_image_pixels: int = MAX_IMAGE_PIXELS) -> None:
        super().__init__()
        self.max_image_pixels = max_image_pixels
        self.buffer = buffer
        self.policies = dict(policies or {})
        self.gates: dict[int, MotionGate] = {}
        self.client = master.client()
        self.name = name
        self.instance = secrets.token_hex(4)  # tells the master two live receivers that share a name apart
        self.batch_max = batch_max
        self._source_counters = counters
        self._report_extra = report_extra
        self.stats: Counter[str] = Counter()
        self.port_stats: dict[int, Counter[str]] = {}
        self._last_report = 0.0
        self._down_since = 0.0
        self._pause = 0.1

    def set_policies(self, policies: Mapping[int, GatePolicy]) -> None:
        """New detect policies (a config reload): a port whose policy changed starts a fresh gate."""
        changed = [p for p in set(self.policies) | set(policies) if self.policies.get(p) != policies.get(p)]
        self.policies = dict(policies)
        for port in changed:
            self.gates.pop(port, None)

    def _wake(self) -> None:
        self.buffer.wake()

    def close(self) -> None:
        self.client.close()

    def run(self) -> None:
        """Forward until stopped, then flush what is buffered once."""
        while not self._stop.is_set():
            try:
                self.forward_once(TAKE_TIMEOUT_S)
            except Exception:  # one bad batch must not end ingest
                log.exception("forwarder: unexpected error")
                self._stop.wait(1.0)
        if len(self.buffer):
            self.forward_once(0.0)

    def forward_once(self, timeout: float) -> int:
        """Send what is buffered (waiting up to `timeout` for frames), in requests of at most
        MAX_BATCH_BYTES of payload, so one camera's big frames never get another's refused with them
        by the master's request-size limit; returns frames accepted."""
        frames = [f for f in self.buffer.take(self.batch_max, timeout) if self._is_image(f)]
        now = time.monotonic()
        report = now - self._last_report >= REPORT_EVERY_S
        if not frames and not report:
            return 0
        accepted = 0
        for i, part in enumerate(split_by_bytes(frames, MAX_BATCH_BYTES) or [[]]):
            accepted += self._send(part, now, report=report and i == 0)
        return accepted

    def _send(self, frames: list[ReadyFrame], now: float, *, report: bool) -> int:
        extra = self._report_extra() if self._report_extra and report else {}
        counters = {"ports": self.counters(), "instance": self.instance, **extra} if report else None
        items = [self._gated(f, now) for f in frames]
        try:
            reply = self.client.add_tasks(items, source=self.name, counters=counters)
        except (MasterUnavailable, QueueFull, BadRequest) as e:
            self._failed(frames, e)
            return 0
        if report:
            self._last_report = now
        self._recovered()
        return self._tally(frames, reply)

    def _is_image(self, f: ReadyFrame) -> bool:
        """Whether a frame is a JPEG (or PNG) of an acceptable size, read from its header: a frame that
        claims 20000x20000 pixels in a few hundred bytes never reaches a decoder, here or downstream."""
        try:
            check_image(f.data, self.max_image_pixels)
            return True
        except DecodeError as e:
            c = self.port_stats.setdefault(f.port, Counter())
            c["refused_image"] += 1
            if c["refused_image"] in (1, 10, 100, 1000) or c["refused_image"] % 10_000 == 0:
                log.warning("port %d: refused frame %d (%d so far): %s", f.port, f.seq, c["refused_image"], e)
            return False

    def _gated(self, f: ReadyFrame, now: float) -> tuple[TaskSpec, bytes]:
        """The task for a frame: its bytes for a detector, or just a skip record (and no bytes)."""
        meta, payload = dict(f.meta), f.data
        policy = self.policies.get(f.port)
        if policy is not None and policy.mode != "every":
            gate = self.gates.setdefault(f.port, MotionGate(policy))
            motion = gate.measure(f.data) if policy.mode == "motion" else None
            if motion is not None:
                meta.update(motion=round(motion.score, 5), regions=[list(r) for r in motion.regions])
            reason = gate.decide(motion, now)
            if reason:
                meta["skip"] = reason
                payload = b""
                self.port_stats.setdefault(f.port, Counter())[f"skipped_{reason.replace(' ', '_')}"] += 1
        meta["forwarded_ns"] = str(time.time_ns())  # receiver clock: buffering and gating time (master/core/timing.py)
        spec = TaskSpec(port=f.port, seq=f.seq & 0x7FFFFFFF, pipeline=f.pipeline, captured_ns=f.capture_ns,
                        received_ns=f.received_ns, meta=meta)
        return spec, payload

    def _tally(self, frames: list[ReadyFrame], reply: dict) -> int:
        ok = 0
        for f, task_id in zip(frames, reply.get("ids", [])):
            c = self.port_stats.setdefault(f.port, Counter())
            c["forwarded" if task_id else "refused"] += 1
            ok += bool(task_id)
        for err in reply.get("errors", []):
            log.warning("master refused a frame: %s", err.get("error"))
        if reply.get("report_error"):
            log.warning("master refused this receiver's counters: %s", reply["report_error"])
        return ok

    def _failed(self, frames: list[ReadyFrame], e: Exception) -> None:
        for f in frames:
            self.port_stats.setdefault(f.port, Counter())["dropped_master_down"] += 1
        if not self._down_since:
            self._down_since = time.monotonic()
            log.warning("forwarder: cannot queue frames on the master (%s); dropping the newest-frame "
                        "backlog until it is back", e)
        self._stop.wait(self._pause)
        self._pause = min(self._pause * 2, 2.0)

    def _recovered(self) -> None:
        if self._down_since:
            log.info("forwarder: master reachable again after %.1fs", time.monotonic() - self._down_since)
            self._down_since = 0.0
        self._pause = 0.1

    def counters(self) -> dict[str, dict[str, int]]:
        """The ingest counters merged with what the forwarder did, per port."""
        out = self._source_counters()
        for port, c in self.port_stats.items():
            out.setdefault(str(port), {}).update({k: int(v) for k, v in dict(c).items()})
        return out
