"""Precision and recall of the person, person-hog and face stages on composed frames with exact truth.

Frames: scikit-image's astronaut.png (a 512x512 upper-body portrait) pasted at random positions and
heights (fixed seed) onto pictures of the same folder that show nobody, in 16:9 (960x540, 1280x720)
and square (540x540) frames; a quarter of the frames have no astronaut at all. Ground truth is where
it was pasted: the person and face boxes inside astronaut.png (measured once, checked by eye; see
tests/unit/test_accuracy.py) moved and scaled. A detection matches a truth box at IoU >= 0.5, each
truth box at most once, best scores first.

Figure: the `person` stage (SSDLite). Baseline, same frames and process: `person-hog` (OpenCV's
HOG+SVM pedestrian detector), the classical detector the person stage replaced. `ratio` is their F1.
`face` (Haar) is reported beside them with its own truth. Milliseconds per frame per stage too.
Note the portrait is an upper body: HOG is trained on whole standing pedestrians and is expected to
do badly here; this measures "a person in view", not pedestrians.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bench import benchlib  # noqa: E402
from cluster.testdata import ASTRONAUT_FACE, ASTRONAUT_PERSON, ASTRONAUT_SIZE, Box, iou, sample_image  # noqa: E402
from common.pipeline import parse_stage  # noqa: E402
from worker.pipeline import StageCache  # noqa: E402

log = logging.getLogger("bench.detector_accuracy")


# Pictures with nobody in them on which no stage fires by itself (brick.png, coins.png, moon.png and
# chelsea.png give Haar face false positives and are left out: this measures the astronaut).
BACKGROUNDS = [("grass.png", (960, 540)), ("gravel.png", (960, 540)), ("coffee.png", (960, 540)),
               ("motorcycle_left.png", (1280, 720)), ("grass.png", (540, 540)), ("gravel.png", (540, 540))]
STAGES = ("person", "person-hog", "face")
TRUTH = {"person": ASTRONAUT_PERSON, "person-hog": ASTRONAUT_PERSON, "face": ASTRONAUT_FACE}
MIN_IOU = 0.5
EMPTY_FRACTION = 0.25
MIN_HEIGHT_PX, MAX_HEIGHT_PX = 100, 450
HEIGHT_BUCKETS = ((100, 180), (180, 260), (260, 451))


@dataclass(frozen=True)
class Frame:
    """One composed frame and where the astronaut is (None: not in it)."""

    image: np.ndarray
    background: str
    paste: tuple[int, int, int] | None  # x, y, height in px

    def truth(self, box: Box) -> list[Box]:
        if self.paste is None:
            return []
        x, y, h = self.paste
        s = h / ASTRONAUT_SIZE
        return [(x + box[0] * s, y + box[1] * s, box[2] * s, box[3] * s)]


def compose_frames(count: int, seed: int) -> list[Frame]:
    """`count` frames: random background, and (mostly) the astronaut at a random place and height."""
    rng = random.Random(seed)
    astronaut = sample_image("astronaut.png")
    backgrounds = [(f"{name}@{w}x{h}", cv2.resize(sample_image(name), (w, h), interpolation=cv2.INTER_AREA))
                   for name, (w, h) in BACKGROUNDS]
    frames = []
    for _ in range(count):
        label, background = rng.choice(backgrounds)
        image = background.copy()
        if rng.random() < EMPTY_FRACTION:
            frames.append(Frame(image, label, None))
            continue
        fh, fw = image.shape[:2]
        size = rng.randint(MIN_HEIGHT_PX, min(MAX_HEIGHT_PX, fh))
        x, y = rng.randint(0, fw - size), rng.randint(0, fh - size)
        image[y:y + size, x:x + size] = cv2.resize(astronaut, (size, size), interpolation=cv2.INTER_AREA)
        frames.append(Frame(image, label, (x, y, size)))
    return frames


def match(found: list[tuple[float, Box]], truth: list[Box]) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives), greedy by score at IoU >= MIN_IOU."""
    unmatched = list(truth)
    tp = 0
    for _, box in sorted(found, key=lambda d: -d[0]):
        best = max(unmatched, key=lambda t: iou(box, t), default=None)
        if best is not None and iou(box, best) >= MIN_IOU:
            unmatched.remove(best)
            tp += 1
    return tp, len(found) - tp, len(unmatched)


def evaluate(stage_name: str, frames: list[Frame], cache: StageCache) -> dict[str, Any]:
    """Precision, recall, F1, recall per height bucket and ms per frame of one stage."""
    stage = cache.get(parse_stage(stage_name))
    stage(frames[0].image)  # warm up (first-call allocations) outside the timing
    totals = np.zeros(3, dtype=int)
    by_height: dict[str, list[int]] = {f"{lo}-{hi - 1}px": [0, 0] for lo, hi in HEIGHT_BUCKETS}
    by_shape: dict[str, list[int]] = {"16:9": [0, 0], "square": [0, 0]}
    times_ms = []
    for frame in frames:
        t0 = time.perf_counter()
        found = stage(frame.image)
        times_ms.append((time.perf_counter() - t0) * 1000.0)
        tp, fp, fn = match([(d.score, d.box) for d in found], frame.truth(TRUTH[stage_name]))
        totals += (tp, fp, fn)
        if frame.paste is not None:
            bucket = next(f"{lo}-{hi - 1}px" for lo, hi in HEIGHT_BUCKETS if lo <= frame.paste[2] < hi)
            by_height[bucket][0] += tp
            by_height[bucket][1] += tp + fn
            shape = "square" if frame.image.shape[0] == frame.image.shape[1] else "16:9"
            by_shape[shape][0] += tp
            by_shape[shape][1] += tp + fn
    tp, fp, fn = (int(v) for v in totals)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": _r(precision), "recall": _r(recall), "f1": _r(f1),
            "recall_by_portrait_height": {k: f"{hit}/{n}" for k, (hit, n) in by_height.items()},
            "recall_by_frame_shape": {k: f"{hit}/{n}" for k, (hit, n) in by_shape.items()},
            "ms_per_frame": benchlib.latency_summary(times_ms)}


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="20 frames instead of 60")
    p.add_argument("--frames", type=int, default=0, help="number of composed frames (default 60, quick 20)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    benchlib.setup_logging(args.log_level)
    count = args.frames or (20 if args.quick else 60)
    machine = benchlib.machine()
    frames = compose_frames(count, args.seed)
    cache = StageCache()
    results = {}
    for name in STAGES:
        log.info("evaluating %s on %d frames", name, len(frames))
        results[name] = evaluate(name, frames, cache)
    benchlib.emit({
        "bench": "detector_accuracy",
        "figure": {"stage": "person", **results["person"]},
        "baseline": {"stage": "person-hog", **results["person-hog"]},
        "ratio": benchlib.ratio(results["person"]["f1"] or 0.0, results["person-hog"]["f1"] or 0.0),
        "ratio_of": "F1 of person / F1 of person-hog (null when the baseline's F1 is 0)",
        "face": results["face"],
        "params": {"frames": count, "with_astronaut": sum(f.paste is not None for f in frames), "seed": args.seed,
                   "min_iou": MIN_IOU, "portrait_height_px": [MIN_HEIGHT_PX, MAX_HEIGHT_PX],
                   "backgrounds": [f"{n}@{w}x{h}" for n, (w, h) in BACKGROUNDS]},
        "machine": benchlib.finish_machine(machine),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
