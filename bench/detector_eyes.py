"""How well and how fast the NanoDet stages see, against SSDLite, on real footage, in one process.

1. Recall proxy on every 5th frame of the shared hall clip (768x432): frames where the stage reports
   a person at its default threshold. Ground truth by eye (bench/data/hall_truth.json): 215 frames
   show a person (at least in part), 57 show nobody, 7 are unsure and left out. Compared: SSDLite
   squeezed to 300x300 (the `person` stage before NanoDet), `person-ssd` (SSDLite letterboxed),
   `person` (NanoDet-g letterboxed).
2. Small people in wide frames: grids of hall frames shrunk into one frame (480x270 to 1280x720),
   `person` with crops off, on and auto: the measurement behind auto's rule. And people near the
   camera: the same every 5th frame cut to 4:3 (576x432 from the middle) and scaled to 640x480, where
   the person fills most of the frame's height, `person` with tiles off and auto (auto's smaller pass).
3. False positives: person boxes on the 57 empty hall frames and on pictures with nobody in them,
   per 100 frames; and, for every class `objects` reports by default, boxes on those same empty
   frames at thresholds 0.3..0.5 (how the per-class thresholds were chosen).
4. objects on the shared car and bottle clips: frames with a car/truck, frames with a bottle.
5. Speed: ms per 640x480 frame at 1 and 2 threads, `person` vs SSDLite squeezed, the two run in
   turn on the same frames in this process (ratio per pair, median quoted).

Needs the shared samples next to the checkout for 1-4 (skipped with a note otherwise) and the model
cache (`make setup`).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bench import benchlib  # noqa: E402
from cluster.testdata import sample_image  # noqa: E402
from common.labels import COCO80  # noqa: E402
from worker.detectors import DEFAULT_OBJECTS, OTHER_CLASS_MIN_SCORE  # noqa: E402
from worker.detectors.nanodet import NanoDet, thresholds_for, to_detections  # noqa: E402
from worker.detectors.ssd_person import SsdPersonNet  # noqa: E402
from worker.models.store import ModelStore  # noqa: E402

log = logging.getLogger("bench.detector_eyes")

SAMPLES = benchlib.ROOT.parent / "shared" / "samples"
TRUTH = Path(__file__).resolve().parent / "data" / "hall_truth.json"
EMPTY_PICTURES = [("grass.png", (960, 540)), ("gravel.png", (960, 540)), ("brick.png", (960, 540)),
                  ("coffee.png", (640, 480)), ("grass.png", (480, 270)), ("gravel.png", (540, 540))]
GOAL_FRAMES = 200  # of the 279 sampled hall frames (about 215 show someone)
SWEEP = (0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
CAR_TRUTH = Path(__file__).resolve().parent / "data" / "car_truth.json"


def hall_frames() -> tuple[dict[int, np.ndarray], dict[str, Any]] | None:
    clip = SAMPLES / "one-by-one-person-detection.mp4"
    if not clip.is_file():
        return None
    truth = json.loads(TRUTH.read_text())
    frames = benchlib.read_frames(clip, every=truth["every"])
    return {i * truth["every"]: f for i, f in enumerate(frames)}, truth


class Stages:
    """The detectors compared, built once: each maps a frame to detections (label, score, box)."""

    def __init__(self, threads: int) -> None:
        cv2.setNumThreads(threads)
        self.ssd = SsdPersonNet(score_threshold=0.5)
        self.nano = NanoDet(ModelStore().ensure(fetch=False), device="cpu", threads=threads)
        self.person_t = thresholds_for({"person": 0.5})

    def ssd_squeezed(self, f: np.ndarray) -> list:
        return self.ssd.detect(f)

    def person_ssd(self, f: np.ndarray) -> list:
        return self.ssd.detect(f, letterbox=True)

    def person(self, f: np.ndarray, tiles: str = "auto") -> list:
        return to_detections(self.nano.find(f, self.person_t, tiles))


def recall(stages: Stages, frames: dict[int, np.ndarray], truth: dict[str, Any]) -> dict[str, Any]:
    empty, unsure = set(truth["empty"]), set(truth["unsure"])
    people = [i for i in frames if i not in empty and i not in unsure]
    out: dict[str, Any] = {"frames": len(frames), "with_person": len(people), "empty": len(empty)}
    for name, fn in (("ssdlite_squeezed", stages.ssd_squeezed), ("person_ssd", stages.person_ssd),
                     ("person", stages.person)):
        hits = {i for i, f in frames.items() if fn(f)}
        out[name] = {"frames_with_person": len(hits), "of_all_frames": len(frames),
                     "found_where_present": len(hits & set(people)), "fired_on_empty": len(hits & empty)}
        log.info("recall %s: %s", name, out[name])
    return out


def small_people(stages: Stages, frames: dict[int, np.ndarray], truth: dict[str, Any], trials: int,
                 seed: int = 3) -> dict[str, Any]:
    """Small people in wide frames, built from the real footage: a grid of hall frames (chosen at
    random, fixed seed) shrunk into one frame, each cell a scene whose truth is known. A detection
    counts for the cell its centre falls in. Crops off, on, and auto (probe, then crops only where a
    candidate is unsure), with the time each took."""
    empty, unsure = set(truth["empty"]), set(truth["unsure"])
    keys = sorted(frames)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for (w, h), grid in (((480, 270), 2), ((480, 270), 3), ((768, 432), 3), ((1280, 720), 3)):
        cw, ch = w // grid, h // grid
        tally = {m: {"found": 0, "fired_on_empty": 0, "ms": 0.0} for m in ("off", "on", "auto")}
        with_person = 0
        for _ in range(trials):
            picks = [keys[i] for i in rng.choice(len(keys), grid * grid, replace=False)]
            canvas = np.zeros((ch * grid, cw * grid, 3), np.uint8)
            for k, i in enumerate(picks):
                r, c = divmod(k, grid)
                canvas[r * ch:(r + 1) * ch, c * cw:(c + 1) * cw] = cv2.resize(frames[i], (cw, ch),
                                                                              interpolation=cv2.INTER_AREA)
            present = [None if i in unsure else i not in empty for i in picks]
            with_person += sum(1 for p in present if p)
            for mode, t in tally.items():
                t0 = time.perf_counter()
                dets = stages.person(canvas, mode)
                t["ms"] += (time.perf_counter() - t0) * 1000
                cells = {min(grid - 1, int((y + hh / 2) // ch)) * grid + min(grid - 1, int((x + ww / 2) // cw))
                         for x, y, ww, hh in (d.box for d in dets)}
                t["found"] += sum(1 for k in cells if present[k])
                t["fired_on_empty"] += sum(1 for k in cells if present[k] is False)
        for t in tally.values():
            t["ms"] = round(t["ms"] / trials, 1)
        out[f"{w}x{h}_grid{grid}"] = {"cells_with_person": with_person, **tally}
        log.info("small people %dx%d grid %d: %s", w, h, grid, out[f"{w}x{h}_grid{grid}"])
    return out


def near_camera(stages: Stages, frames: dict[int, np.ndarray], truth: dict[str, Any]) -> dict[str, Any]:
    """People near the camera in 4:3 frames: every 5th hall frame cut to its middle 576x432 and scaled to
    640x480 (someone standing fills ~85 % of the height). The truth is the whole frame's: someone at
    the frame's edge may be outside the cut, so 'found' is a lower bound."""
    empty, unsure = set(truth["empty"]), set(truth["unsure"])
    people = [i for i in frames if i not in empty and i not in unsure]
    x = (frames[people[0]].shape[1] - 4 * frames[people[0]].shape[0] // 3) // 2
    cut = {i: cv2.resize(f[:, x:f.shape[1] - x], (640, 480)) for i, f in frames.items()}
    out: dict[str, Any] = {"frames": len(cut), "with_person": len(people), "empty": len(empty)}
    for mode in ("off", "auto"):
        t0 = time.perf_counter()
        hits = {i for i, f in cut.items() if stages.person(f, mode)}
        out[mode] = {"found_where_present": len(hits & set(people)), "fired_on_empty": len(hits & empty),
                     "ms": round((time.perf_counter() - t0) * 1000 / len(cut), 1)}
    log.info("near the camera (640x480 cut): %s", out)
    return out


def empty_frames(frames: dict[int, np.ndarray] | None, truth: dict[str, Any] | None) -> list[np.ndarray]:
    pictures = [cv2.resize(sample_image(n), size, interpolation=cv2.INTER_AREA) for n, size in EMPTY_PICTURES]
    hall = [frames[i] for i in truth["empty"]] if frames and truth else []
    return hall + pictures


def false_positives(stages: Stages, empties: list[np.ndarray]) -> dict[str, Any]:
    """Person boxes per 100 empty frames, and per-class boxes over a threshold sweep."""
    everything = thresholds_for({name: min(SWEEP) for name in COCO80})
    per_class: dict[str, list[float]] = {name: [] for name in DEFAULT_OBJECTS}
    person_boxes = {"person": 0, "person_ssd": 0, "ssdlite_squeezed": 0}
    for f in empties:
        person_boxes["person"] += len(stages.person(f))
        person_boxes["person_ssd"] += len(stages.person_ssd(f))
        person_boxes["ssdlite_squeezed"] += len(stages.ssd_squeezed(f))
        for d in to_detections(stages.nano.find(f, everything, "auto")):
            if d.label in per_class:
                per_class[d.label].append(d.score)
    n = len(empties)
    return {"frames": n,
            "person_boxes_per_100_frames": {k: round(100 * v / n, 2) for k, v in person_boxes.items()},
            "objects_boxes_per_100_frames": {name: {str(t): round(100 * sum(s >= t for s in scores) / n, 2)
                                                    for t in SWEEP} for name, scores in per_class.items()}}


def objects_on_clips(stages: Stages) -> dict[str, Any]:
    """Frames with the expected class over a threshold sweep: the car clip against its truth by eye
    (bench/data/car_truth.json: found where a car is, fired on the empty road), the bottle clip
    (bottles in every frame) plainly."""
    out: dict[str, Any] = {}
    cars = json.loads(CAR_TRUTH.read_text())
    cases = [("car-detection.mp4", ("car", "truck", "bus"), set(cars["with_car"])),
             ("bottle-detection.mp4", ("bottle",), None)]
    for clip, wanted, truth in cases:
        path = SAMPLES / clip
        if not path.is_file():
            continue
        frames = benchlib.read_frames(path, every=5)
        sweep = thresholds_for({name: min(SWEEP) for name in wanted})
        best = {i * 5: max((d.score for d in to_detections(stages.nano.find(f, sweep, "auto"))), default=0.0)
                for i, f in enumerate(frames)}
        calibrated = {name: DEFAULT_OBJECTS.get(name, OTHER_CLASS_MIN_SCORE) for name in wanted}
        row: dict[str, Any] = {"frames": len(frames), "labels": list(wanted), "calibrated_thresholds": calibrated}
        at = [*SWEEP, min(calibrated.values())]
        if truth is None:
            row["frames_with_label_at"] = {str(t): sum(s >= t for s in best.values()) for t in at}
        else:
            row["frames_with_object"] = len(truth)
            row["found_where_present_at"] = {str(t): sum(best[i] >= t for i in truth) for t in at}
            row["fired_on_empty_at"] = {str(t): sum(s >= t for i, s in best.items() if i not in truth) for t in at}
        out[clip] = row
        log.info("objects on %s: %s", clip, row)
    return out


def speed(frames: list[np.ndarray], rounds: int) -> dict[str, Any]:
    """ms per 640x480 frame, person vs SSDLite squeezed, alternating, at 1 and 2 threads."""
    frames = [cv2.resize(f, (640, 480)) for f in frames]
    out: dict[str, Any] = {}
    for threads in (1, 2):
        stages = Stages(threads)
        for f in frames[:3]:
            stages.person(f), stages.ssd_squeezed(f)  # warm up both
        nano, ssd = [], []
        for _ in range(rounds):
            for f in frames:
                t0 = time.perf_counter()
                stages.person(f)
                t1 = time.perf_counter()
                stages.ssd_squeezed(f)
                t2 = time.perf_counter()
                nano.append((t1 - t0) * 1000)
                ssd.append((t2 - t1) * 1000)
        ratios = [a / b for a, b in zip(nano, ssd)]
        out[f"threads_{threads}"] = {"person_ms": round(statistics.median(nano), 2),
                                     "ssdlite_ms": round(statistics.median(ssd), 2),
                                     "ratio_median_of_pairs": round(statistics.median(ratios), 3),
                                     "samples": len(ratios)}
        log.info("speed at %d thread(s): %s", threads, out[f"threads_{threads}"])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer speed rounds")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    benchlib.setup_logging(args.log_level)
    machine = benchlib.machine()
    hall = hall_frames()
    stages = Stages(threads=2)
    result: dict[str, Any] = {"bench": "detector_eyes"}
    if hall is None:
        result["note"] = f"{SAMPLES} is missing: recall, small-people and clip figures skipped"
        speed_frames = [sample_image("astronaut.png"), sample_image("camera.png")]
        result["figure"] = result["baseline"] = {"frames_with_person": None}
    else:
        frames, truth = hall
        result["recall"] = recall(stages, frames, truth)
        result["small_people"] = small_people(stages, frames, truth, trials=15 if args.quick else 40)
        result["near_camera"] = near_camera(stages, frames, truth)
        result["objects"] = objects_on_clips(stages)
        speed_frames = [frames[i] for i in sorted(frames)[::25]]
        result["figure"] = result["recall"]["person"]
        result["baseline"] = result["recall"]["ssdlite_squeezed"]
        result["ratio"] = benchlib.ratio(result["figure"]["frames_with_person"],
                                         result["baseline"]["frames_with_person"])
        result["ratio_of"] = "frames with a person found: person (NanoDet-g) / SSDLite squeezed"
        found = result["figure"]["frames_with_person"]
        result["goal"] = {"frames_with_person": GOAL_FRAMES, "met": found >= GOAL_FRAMES}
    result["false_positives"] = false_positives(stages, empty_frames(*(hall or (None, None))))
    result["speed_640x480"] = speed(speed_frames, rounds=3 if args.quick else 10)
    result["machine"] = benchlib.finish_machine(machine)
    benchlib.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
