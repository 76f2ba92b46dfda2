"""What motion gating saves on a real clip with long empty stretches, and whether it loses alerts.

The live path, in one process, at the clip's native frame rate (`now` = frame index / fps): each frame
is JPEG-encoded (q80) as a publisher would; the receiver's MotionGate(GatePolicy("motion")) decides
whether it goes to the detector; the `person` stage runs on the JPEG decoded as a worker would; the
result, a `Result` as the master would store it, goes through a RuleEngine with one rule: person,
min_score 0.5, 3 frames, cooldown 10 s.
A frame the gate skips reaches the engine as a "skipped" result (which the engine ignores).

Figure: gated. Baseline, same frames in the same pass: every frame detected (no gate). Each frame is
decoded and detected once; the CPU time (time.process_time) of each step is measured per frame and
summed per path: the ungated path pays decode + detect on every frame, the gated path pays the gate on
every frame and decode + detect on the frames it passes. `ratio` is gated / ungated CPU seconds.
`lost_events` lists ungated events with no gated event fired within the cooldown of it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402

from bench import benchlib  # noqa: E402
from common.gating import GatePolicy  # noqa: E402
from common.pipeline import parse_stage  # noqa: E402
from common.results import Result, ResultStatus  # noqa: E402
from common.tasks import Detection, TaskKind  # noqa: E402
from master.alerts.events import Event  # noqa: E402
from master.alerts.rules import RuleEngine, parse_rules  # noqa: E402
from receiver.motion import MotionGate  # noqa: E402
from worker.detectors import Detector  # noqa: E402
from worker.pipeline import StageCache, decode_image  # noqa: E402

log = logging.getLogger("bench.motion_gating")

RULES_TOML = """
[[rule]]
name = "person-seen"
label = "person"
min_score = 0.5
min_frames = 3
cooldown_s = 10
"""
PORT = 5000
QUICK_FRAMES = 400


@dataclass
class LivePath:
    """One way of running the live path: its rule engine, detector calls, CPU seconds and events."""

    engine: RuleEngine
    detector_calls: int = 0
    cpu_s: float = 0.0
    events: list[Event] = field(default_factory=list)

    def observe(self, result: Result, now: float) -> None:
        self.events.extend(self.engine.observe(result, now))

    def summary(self) -> dict[str, Any]:
        return {"detector_calls": self.detector_calls, "cpu_s": round(self.cpu_s, 2), "events": len(self.events),
                "event_first_seqs": [e.first_seq for e in self.events],
                "event_fired_at_s": [round(e.fired_at, 1) for e in self.events]}


def result(seq: int, now: float, detections: list[Detection] | None) -> Result:
    """A result as the master stores it (the times that matter here: capture); None detections: skipped."""
    return Result(cursor=seq + 1, task_id=f"{PORT}-{seq}", port=PORT, seq=seq, kind=TaskKind.FRAME,
                  pipeline="person", status=ResultStatus.SKIPPED if detections is None else ResultStatus.OK,
                  error="", worker="", attempts=1, detections=tuple(detections or ()), timings_ms={},
                  captured_at=now, received_at=now, queued_at=now, completed_at=now, latency_ms=0.0, stages_ms={})


def detect(stage: Detector, jpeg: bytes) -> tuple[list[Detection], float]:
    """Decode and detect as a worker does; the detections and the CPU seconds spent."""
    t0 = time.process_time()
    found = stage(decode_image(jpeg))
    cpu = time.process_time() - t0
    return [Detection(d.label, float(d.score), tuple(int(v) for v in d.box)) for d in found], cpu


def run(clip: Path, limit: int) -> dict[str, Any]:
    """One pass over the clip feeding both paths; their summaries and the motion gate's pass count."""
    stage = StageCache().get(parse_stage("person"))
    rules = parse_rules(RULES_TOML)
    gated, ungated = LivePath(RuleEngine(rules)), LivePath(RuleEngine(rules))
    gate = MotionGate(GatePolicy("motion"))
    cap = cv2.VideoCapture(str(clip))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    seq = 0
    try:
        while (not limit or seq < limit) and (frame := cap.read()[1]) is not None:
            now = seq / fps
            ok, enc = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, benchlib.JPEG_QUALITY])
            if not ok:
                raise RuntimeError(f"cv2.imencode failed on frame {seq}")
            jpeg = enc.tobytes()
            t0 = time.process_time()
            skip_reason = gate.decide(gate.measure(jpeg), now)
            gated.cpu_s += time.process_time() - t0
            detections, cpu = detect(stage, jpeg)
            ungated.detector_calls += 1
            ungated.cpu_s += cpu
            ungated.observe(result(seq, now, detections), now)
            if not skip_reason:
                gated.detector_calls += 1
                gated.cpu_s += cpu
            gated.observe(result(seq, now, None if skip_reason else detections), now)
            seq += 1
    finally:
        cap.release()
    if not seq:
        raise RuntimeError(f"no frames could be read from {clip}")
    return {"frames": seq, "fps": fps, "gated": gated, "ungated": ungated, "cooldown_s": rules[0].cooldown_s}


def lost_events(ungated: list[Event], gated: list[Event], window_s: float) -> tuple[list[int], list[float]]:
    """First seqs of ungated events with no gated event fired within `window_s`; delays of the others (s)."""
    lost, delays = [], []
    for e in ungated:
        near = [g.fired_at - e.fired_at for g in gated if abs(g.fired_at - e.fired_at) <= window_s]
        if near:
            delays.append(round(min(near, key=abs), 1))
        else:
            lost.append(e.first_seq)
    return lost, delays


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"only the first {QUICK_FRAMES} frames")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    benchlib.setup_logging(args.log_level)
    machine = benchlib.machine()
    clip = benchlib.clip_path()
    log.info("running the live path on %s", clip.name)
    out = run(clip, QUICK_FRAMES if args.quick else 0)
    gated, ungated = out["gated"], out["ungated"]
    lost, delays = lost_events(ungated.events, gated.events, out["cooldown_s"])
    benchlib.emit({
        "bench": "motion_gating",
        "figure": {"policy": "motion", **gated.summary()},
        "baseline": {"policy": "every", **ungated.summary()},
        "ratio": benchlib.ratio(gated.cpu_s, ungated.cpu_s),
        "ratio_of": "CPU seconds gated / ungated (gate + decode + person stage)",
        "detector_calls_ratio": benchlib.ratio(gated.detector_calls, ungated.detector_calls),
        "lost_events": lost,
        "gated_event_delay_s": delays,
        "params": {"clip": clip.name, "frames": out["frames"], "fps": out["fps"], "stage": "person",
                   "jpeg_quality": benchlib.JPEG_QUALITY, "gate": "GatePolicy('motion') defaults",
                   "rule": "label=person min_score=0.5 min_frames=3 cooldown_s=10",
                   "match_window_s": out["cooldown_s"]},
        "machine": benchlib.finish_machine(machine),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
