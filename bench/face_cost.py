"""What the face stage costs on a frame at the default pixel cap (4096x4096) against a 1920x1920 one,
in the same process, and what it cost before frames were scanned at most 1920 px on their longer side
(the same cascade on the full frame). Prints JSON: ms per frame for each, and the ratios."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cluster.testdata import sample_image  # noqa: E402
from common.pipeline import parse_stage  # noqa: E402
from worker.detectors import StageEnv  # noqa: E402
from worker.pipeline import StageCache  # noqa: E402


def ms_per_frame(detect, frame, rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        detect(frame)
        times.append(1000 * (time.perf_counter() - started))
    return round(sorted(times)[len(times) // 2], 1)


def main() -> None:
    cv2.setNumThreads(1)
    face = StageCache(StageEnv(threads=1)).get(parse_stage("face"))
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    def full_size(image):  # the stage as it was: the cascade over every pixel of the frame
        gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
        return cascade.detectMultiScale3(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24),
                                         outputRejectLevels=True)

    portrait = sample_image("astronaut.png")
    big, hd = cv2.resize(portrait, (4096, 4096)), cv2.resize(portrait, (1920, 1920))
    out = {"face_4096_ms": ms_per_frame(face, big), "face_1920_ms": ms_per_frame(face, hd),
           "before_4096_ms": ms_per_frame(full_size, big, rounds=1)}
    out["ratio_4096_vs_1920"] = round(out["face_4096_ms"] / out["face_1920_ms"], 2)
    out["speedup_4096_vs_before"] = round(out["before_4096_ms"] / out["face_4096_ms"], 2)
    assert math.isfinite(out["speedup_4096_vs_before"])
    print(json.dumps({"bench": "face_cost", "figure": out["face_4096_ms"], "baseline": out["before_4096_ms"], **out}))


if __name__ == "__main__":
    main()
