"""Detector stages: image in, detections out. Each is built once per process and reused."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np

from common.pipeline import StageSpec
from common.tasks import Detection

log = logging.getLogger(__name__)


class Detector(Protocol):
    """A stage that finds things in a BGR image."""

    def __call__(self, image: np.ndarray) -> list[Detection]: ...


def _person(spec: StageSpec) -> Detector:
    from worker.detectors.ssd_person import SsdPersonNet

    net = SsdPersonNet(score_threshold=spec.args[0])
    lock = threading.Lock()  # one cv2.dnn.Net is not safe to run from two threads at once

    def detect(image: np.ndarray) -> list[Detection]:
        with lock:
            found = net.detect(image)
        return [Detection("person", s, (x, y, w, h)) for s, x, y, w, h in found]

    return detect


HOG_MAX_WIDTH = 640


def _person_hog(spec: StageSpec) -> Detector:
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    min_score = spec.args[0]

    def detect(image: np.ndarray) -> list[Detection]:
        scale = min(1.0, HOG_MAX_WIDTH / image.shape[1])
        small = cv2.resize(image, None, fx=scale, fy=scale) if scale < 1.0 else image
        rects, weights = hog.detectMultiScale(small, winStride=(8, 8), padding=(8, 8), scale=1.05)
        boxes = [[int(v / scale) for v in r] for r in rects]
        scores = [float(w) for w in np.ravel(weights)]
        keep = cv2.dnn.NMSBoxes(boxes, scores, min_score, 0.45) if boxes else []
        return [Detection("person", round(scores[i], 4), tuple(boxes[i])) for i in np.ravel(keep)]

    return detect


def _face(spec: StageSpec) -> Detector:
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"cannot load the Haar face cascade from {path}: install opencv-python-headless 4.x")
    neighbors = int(spec.args[0])

    def detect(image: np.ndarray) -> list[Detection]:
        gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
        rects, _, weights = cascade.detectMultiScale3(gray, scaleFactor=1.1, minNeighbors=neighbors,
                                                      minSize=(24, 24), outputRejectLevels=True)
        # Haar gives a level weight, not a probability: a logistic makes it a 0..1 confidence.
        return [Detection("face", round(1.0 / (1.0 + math.exp(-float(w))), 4), tuple(int(v) for v in r))
                for r, w in zip(rects, np.ravel(weights))]

    return detect


def _onnx(spec: StageSpec) -> Detector:
    from worker.detectors.onnx_yolo import load

    path, min_score, iou = spec.args
    return load(path, min_score=min_score, iou=iou)  # locks its own net; runs cv2.dnn or onnxruntime


DETECTORS: dict[str, Callable[[StageSpec], Detector]] = {
    "person": _person,
    "person-hog": _person_hog,
    "face": _face,
    "onnx": _onnx,
    "noop": lambda spec: lambda image: [],
}
