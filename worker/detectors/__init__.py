"""Detector stages: image in, detections out. Each is built once per process and reused."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from common.errors import ConfigError, PipelineSpecError
from common.imageinfo import MAX_IMAGE_PIXELS
from common.pipeline import StageSpec
from common.tasks import Detection

log = logging.getLogger(__name__)


class Detector(Protocol):
    """A stage that finds things in a BGR image."""

    def __call__(self, image: np.ndarray) -> list[Detection]: ...


@dataclass
class StageEnv:
    """What stages of one process share: the device and thread preferences, where models are cached,
    and the loaded models themselves (one NanoDet session serves `person` and every `objects` stage)."""

    device: str = "auto"
    threads: int = 0  # onnxruntime intra-op threads; 0: one per core
    model_dir: Path | None = None  # None: worker.models' default cache
    max_image_pixels: int = MAX_IMAGE_PIXELS  # payloads claiming more are refused before decoding
    _shared: dict[Any, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def shared(self, key: Any, factory: Callable[[], Any]) -> Any:
        """The object under `key`, made by `factory` on first use (under a lock: models load once)."""
        with self._lock:
            if key not in self._shared:
                self._shared[key] = factory()
            return self._shared[key]

    def loaded(self, kind: str) -> list[tuple[Any, Any]]:
        """(key, object) of what `shared` made under keys (kind, ...): the models loaded so far. Read
        without the lock, which `shared` holds while a model loads (a heartbeat must not wait for that):
        list() of a dict's items is one step under the GIL."""
        return [(k, v) for k, v in list(self._shared.items()) if isinstance(k, tuple) and k and k[0] == kind]

    def once(self, key: Any) -> bool:
        """True the first time `key` is asked about in this process (for log-once messages)."""
        with self._lock:
            if ("once", key) in self._shared:
                return False
            self._shared[("once", key)] = True
            return True


DEVICE_ENV, THREADS_ENV, PIXELS_ENV = "FRAMEHIVE_DEVICE", "FRAMEHIVE_ONNX_THREADS", "FRAMEHIVE_MAX_IMAGE_PIXELS"


def stage_env_from(env: Mapping[str, str]) -> StageEnv:
    """A StageEnv from FRAMEHIVE_DEVICE, FRAMEHIVE_ONNX_THREADS and FRAMEHIVE_MAX_IMAGE_PIXELS (for
    Celery workers, whose command line belongs to Celery); ConfigError on a bad value."""
    from common.pipeline import DEVICES

    device, threads = env.get(DEVICE_ENV) or "auto", env.get(THREADS_ENV) or "0"
    pixels = env.get(PIXELS_ENV) or str(MAX_IMAGE_PIXELS)
    if device not in DEVICES:
        raise ConfigError(f"{DEVICE_ENV} must be one of {', '.join(DEVICES)}, got {device!r}")
    if not threads.isdigit() or int(threads) > 256:
        raise ConfigError(f"{THREADS_ENV} must be an integer 0..256, got {threads!r}")
    if not pixels.isdigit() or int(pixels) < 1:
        raise ConfigError(f"{PIXELS_ENV} must be a positive integer, got {pixels!r}")
    return StageEnv(device=device, threads=int(threads), max_image_pixels=int(pixels))


# Thresholds for `objects` without a min_score, per class. NanoDet-g scores non-person classes lower
# than people (bench/detector_eyes.py, docs/DETECTION.md). person: 0.5, under which it fires on cones
# and posts. Vehicles: on the shared car clip (a road from above) 0.3 finds a car in 18 of 26 frames
# that show one (0.35: 9) with no false box on its 50 empty frames, on 57 empty hall frames or on 6
# pictures with nobody, down to 0.25. Animals: no clip here to measure recall on; 0.35, where those
# empty frames show no false box (a bird fired once at 0.25).
DEFAULT_OBJECTS: dict[str, float] = {
    "person": 0.5, "bicycle": 0.3, "car": 0.3, "motorcycle": 0.3, "bus": 0.35, "truck": 0.35,
    "cat": 0.35, "dog": 0.35, "bird": 0.35,
}
OTHER_CLASS_MIN_SCORE = 0.35  # a class asked for by name that has no calibrated threshold


def _nanodet(env: StageEnv, device: str | None) -> Any:
    """The process's NanoDet session for `device`, or None when the model is not installed."""
    from worker.detectors.nanodet import NanoDet
    from worker.models.store import ModelStore

    store = ModelStore(root=env.model_dir)
    if not store.ready():
        return None
    dev = device or env.device
    return env.shared(("nanodet", str(store.onnx_path), dev), lambda: NanoDet(store.onnx_path, device=dev,
                                                                              threads=env.threads))


def _missing_model_message(env: StageEnv) -> str:
    from worker.models.store import ModelStore

    store = ModelStore(root=env.model_dir)
    return f"the NanoDet model is not installed in {store.dir} ({store.problem()}): run `python -m worker.models`"


def _nanodet_stage(net: Any, classes: dict[str, float], tiles: str) -> Detector:
    from worker.detectors.nanodet import thresholds_for, to_detections

    thresholds = thresholds_for(classes)
    return lambda image: to_detections(net.find(image, thresholds, tiles))


MODEL_RECHECK_S = 60.0  # how often a `person` stage on its fallback looks for the model again


class _PersonUntilModel:
    """`person` while the NanoDet model is missing: person-ssd, and every MODEL_RECHECK_S a look at the
    model cache; once the model is there (`python -m worker.models` run meanwhile), NanoDet-g from the
    next frame on, without a restart."""

    def __init__(self, fallback: Detector, load: Callable[[], Any], upgrade: Callable[[Any], Detector],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._detector, self._load, self._upgrade, self._clock = fallback, load, upgrade, clock
        self._next_check: float | None = clock() + MODEL_RECHECK_S

    def __call__(self, image: Any) -> Any:
        if self._next_check is not None and self._clock() >= self._next_check:
            self._next_check = self._clock() + MODEL_RECHECK_S
            net = self._load()
            if net is not None:
                self._detector, self._next_check = self._upgrade(net), None
                log.info("the NanoDet model is installed now: `person` runs NanoDet-g")
        return self._detector(image)


def _person(spec: StageSpec, env: StageEnv) -> Detector:
    min_score, tiles, device = spec.args
    net = _nanodet(env, device)
    if net is None:
        if env.once("person-fallback"):
            log.warning("%s; `person` runs person-ssd (SSDLite, lower recall) until then (looked for again every "
                        "%.0f s)", _missing_model_message(env), MODEL_RECHECK_S)
        return _PersonUntilModel(_person_ssd(StageSpec("person-ssd", (min_score,)), env),
                                 lambda: _nanodet(env, device),
                                 lambda found: _nanodet_stage(found, {"person": min_score}, tiles))
    return _nanodet_stage(net, {"person": min_score}, tiles)


def _objects(spec: StageSpec, env: StageEnv) -> Detector:
    from common.labels import parse_labels

    labels, min_score, tiles, device = spec.args
    net = _nanodet(env, device)
    if net is None:
        raise PipelineSpecError(f"stage objects: {_missing_model_message(env)}")
    names = parse_labels(labels) if labels else tuple(DEFAULT_OBJECTS)
    classes = {n: min_score if min_score is not None else DEFAULT_OBJECTS.get(n, OTHER_CLASS_MIN_SCORE)
               for n in names}
    return _nanodet_stage(net, classes, tiles)


def _person_ssd(spec: StageSpec, env: StageEnv) -> Detector:
    from worker.detectors.ssd_person import SsdPersonNet

    net = SsdPersonNet(score_threshold=spec.args[0])
    lock = threading.Lock()  # one cv2.dnn.Net is not safe to run from two threads at once

    def detect(image: np.ndarray) -> list[Detection]:
        with lock:
            found = net.detect(image, letterbox=True)
        return [Detection("person", s, (x, y, w, h)) for s, x, y, w, h in found]

    return detect


HOG_MAX_WIDTH = 640
FACE_MAX_SIDE = 1920  # the face stage scans larger frames downscaled to this longer side


def _person_hog(spec: StageSpec, env: StageEnv) -> Detector:
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


def _face(spec: StageSpec, env: StageEnv) -> Detector:
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"cannot load the Haar face cascade from {path}: install opencv-python-headless 4.x")
    neighbors = int(spec.args[0])

    def detect(image: np.ndarray) -> list[Detection]:
        # The cascade's cost grows with the pixels it scans at every scale: a frame larger than a 1080p
        # one is scanned downscaled (a 4096x4096 frame took 30 s and 1 GB at full size), boxes scaled back.
        scale = min(1.0, FACE_MAX_SIDE / max(image.shape[:2]))
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1.0 else image
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
        rects, _, weights = cascade.detectMultiScale3(gray, scaleFactor=1.1, minNeighbors=neighbors,
                                                      minSize=(24, 24), outputRejectLevels=True)
        # Haar gives a level weight, not a probability: a logistic makes it a 0..1 confidence.
        return [Detection("face", round(1.0 / (1.0 + math.exp(-float(w))), 4), tuple(int(v / scale) for v in r))
                for r, w in zip(rects, np.ravel(weights))]

    return detect


def _onnx(spec: StageSpec, env: StageEnv) -> Detector:
    from worker.detectors.onnx_yolo import load

    path, min_score, iou, device = spec.args
    # locks its own net; runs cv2.dnn or onnxruntime (onnxruntime first when an accelerator is wanted)
    return load(path, min_score=min_score, iou=iou, device=device or env.device, threads=env.threads)


DETECTORS: dict[str, Callable[[StageSpec, StageEnv], Detector]] = {
    "person": _person,
    "objects": _objects,
    "person-ssd": _person_ssd,
    "person-hog": _person_hog,
    "face": _face,
    "onnx": _onnx,
    "noop": lambda spec, env: lambda image: [],
    "sleep": lambda spec, env: lambda image: time.sleep(int(spec.args[0]) / 1000.0) or [],
}
