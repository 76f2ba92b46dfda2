"""What tracking costs the master per result, beside what storing that result already costs.

Figure: microseconds per result through `TrackerHub.offer` for one camera with 20 objects moving
steadily (jittered boxes, one in ten at an uncertain score, a few missing each frame), fed in frame
order, so every offer tracks one frame. Baseline, same run and process: `TaskStore.complete` of a
leased frame task with the same 20 detections (the store's work per result, without add and lease).
Also shown: building one 20x20 IoU matrix alone. The three alternate in rounds; medians.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import benchlib  # noqa: E402
from common.tasks import Detection, Outcome, TaskSpec  # noqa: E402
from master.core.store import StoreConfig, TaskStore  # noqa: E402
from master.tracking import TrackerHub  # noqa: E402
from master.tracking.assign import iou_matrix  # noqa: E402

FPS = 30.0


def scene(objects: int, frames: int, seed: int = 1) -> list[list[Detection]]:
    """Detections of `objects` things moving at constant velocity over `frames` frames."""
    rng = random.Random(seed)
    objs = [(rng.uniform(0, 1200), rng.uniform(0, 600), rng.uniform(-5, 5), rng.uniform(-3, 3),
             rng.choice(["person", "person", "car"])) for _ in range(objects)]
    return [[Detection(label, 0.35 if rng.random() < 0.1 else 0.8,
                       (round(x + vx * f + rng.uniform(-2, 2)), round(y + vy * f + rng.uniform(-2, 2)), 40, 80))
             for x, y, vx, vy, label in objs if rng.random() > 0.05] for f in range(frames)]


def tracker_us(frames: list[list[Detection]]) -> float:
    """Median microseconds per offer, after the camera's first frame has been released."""
    hub = TrackerHub()
    hub.offer("cam", 0, 0.0, frames[0], now=0.0)
    hub.poll(now=1.0)
    times = []
    for seq, dets in enumerate(frames[1:], start=1):
        t0 = time.perf_counter()
        hub.offer("cam", seq, seq / FPS, dets, now=1.0)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def store_us(frames: list[list[Detection]]) -> float:
    """Median microseconds of `TaskStore.complete` for one leased frame with the same detections."""
    store = TaskStore(StoreConfig(max_pending_per_port=len(frames) + 1, max_tasks=len(frames) + 1))
    now = time.time()
    for seq in range(len(frames)):
        store.add(TaskSpec(port=5000, seq=seq, pipeline="person", captured_ns=int(now * 1e9),
                           received_ns=int(now * 1e9)), b"jpeg", now)
    times = []
    for lease, dets in zip(store.request("w", len(frames), now), frames):
        outcome = Outcome(lease.task.id, lease.token, tuple(dets), {"person": 10.0})
        t0 = time.perf_counter()
        store.complete(lease.task.id, lease.token, outcome, "w", now)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def iou_us(frames: list[list[Detection]]) -> float:
    """Median microseconds of one IoU matrix between consecutive frames' boxes."""
    times = []
    for a, b in zip(frames, frames[1:]):
        boxes_a, boxes_b = [d.box for d in a], [d.box for d in b]
        t0 = time.perf_counter()
        iou_matrix(boxes_a, boxes_b)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer rounds")
    p.add_argument("--objects", type=int, default=20)
    p.add_argument("--frames", type=int, default=600)
    args = p.parse_args(argv)
    benchlib.setup_logging("WARNING")
    machine = benchlib.machine()
    frames = scene(args.objects, args.frames)
    rounds = 3 if args.quick else 7
    runs = [(tracker_us(frames), store_us(frames), iou_us(frames)) for _ in range(rounds)]
    track, store, iou = (statistics.median(r[i] for r in runs) for i in range(3))
    result: dict[str, Any] = {
        "bench": "tracker_cost",
        "figure": {"us_per_result": round(track, 1)},
        "baseline": {"us_per_result": round(store, 1)},
        "ratio": benchlib.ratio(track, store),
        "ratio_of": "tracker offer / store complete, per result (median of alternating rounds)",
        "iou_matrix_us": round(iou, 1),
        "params": {"objects": args.objects, "frames": args.frames, "rounds": rounds},
        "machine": benchlib.finish_machine(machine),
    }
    benchlib.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
