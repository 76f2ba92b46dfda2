"""Running a pipeline spec on one image: the one code path every backend and task kind shares."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from common.errors import DecodeError
from common.imageinfo import MAX_IMAGE_PIXELS
from common.pipeline import STAGES, StageSpec, parse_pipeline
from common.rawtile import is_raw_tile
from common.tasks import Detection
from common.tiling import decode_tile, encode_tile
from worker import filters
from worker.detectors import DETECTORS, StageEnv

log = logging.getLogger(__name__)

MAX_CACHED_STAGES = 16


@dataclass(frozen=True)
class PipelineOutput:
    """What running a pipeline produced; `image` is the filtered image when the pipeline has filters."""

    detections: tuple[Detection, ...]
    timings_ms: dict[str, float]
    image: np.ndarray | None = None


Stage = Callable[[np.ndarray], Any]  # a detector returns detections, a filter an image

# Filter stages: image in, image out (worker/filters.py holds the pure functions and their halos).
FILTER_STAGES: dict[str, Callable[[StageSpec, StageEnv], Stage]] = {
    "copy": lambda s, e: filters.copy,
    "canny": lambda s, e: lambda img: filters.canny(img, int(s.args[0]), int(s.args[1])),
    "blur": lambda s, e: lambda img: filters.blur(img, int(s.args[0])),
    "gaussian": lambda s, e: lambda img: filters.gaussian(img, int(s.args[0])),
    "sobel": lambda s, e: filters.sobel,
    "threshold": lambda s, e: filters.threshold,
    "motion": lambda s, e: filters.motion,  # (image, previous) -> image: run_pipeline passes the previous frame
}
BUILDERS: dict[str, Callable[[StageSpec, StageEnv], Stage]] = {**DETECTORS, **FILTER_STAGES}


_CHILD_STAGES: StageCache | None = None  # stages of a pool process, built on its first task


def init_pool_process(device: str, threads: int, model_dir: Path | None, max_image_pixels: int) -> None:
    """A local pool process's stages use its parent worker's device, threads, model cache and image cap."""
    global _CHILD_STAGES
    _CHILD_STAGES = StageCache(StageEnv(device=device, threads=threads, model_dir=model_dir,
                                        max_image_pixels=max_image_pixels))


def run_task(pipeline: str, payload: bytes, tile: bool, stacked: bool,
             stages: StageCache | None = None) -> tuple[tuple[Detection, ...], dict[str, float], bytes]:
    """One task's work, in this process or a pool process: (detections, timings, tile image or b"").

    A tile's image goes back in the format it came in: raw tile bytes (common/tiling.py) for raw,
    PNG for JPEG/PNG; the job server decodes either."""
    global _CHILD_STAGES
    if stages is None:
        _CHILD_STAGES = stages = _CHILD_STAGES or StageCache()
    out = process_payload(pipeline, payload, stages, keep_image=tile, stacked=stacked)
    if not tile:
        return out.detections, out.timings_ms, b""
    image = draw_detections(out.image, out.detections) if out.detections else out.image
    return out.detections, out.timings_ms, encode_tile(image, raw=is_raw_tile(payload))


def draw_detections(image: np.ndarray, detections: tuple[Detection, ...]) -> np.ndarray:
    """Boxes and labels drawn on a copy of `image` (file jobs return pictures, not lists)."""
    out = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    for d in detections:
        x, y, w, h = d.box
        cv2.rectangle(out, (x, y), (x + w, y + h), (0, 0, 255), 2)
        cv2.putText(out, f"{d.label} {d.score:.2f}", (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 0, 255), 1)
    return out


def decode_image(payload: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode JPEG/PNG or raw tile bytes to a BGR image (gray HxW for a 1-channel raw tile: the job
    server sends those to pipelines that start from intensity); DecodeError if they are not an image,
    ImageTooLarge (a DecodeError) if their header claims more than `max_pixels`: checked before decoding."""
    return decode_tile(payload, max_pixels, color=True)


class StageCache:
    """Builds each stage once per process (loading a model is slow) and keeps a bounded set."""

    def __init__(self, env: StageEnv | None = None) -> None:
        self.env = env or StageEnv()
        self._lock = threading.Lock()
        self._stages: OrderedDict[StageSpec, Stage] = OrderedDict()

    def get(self, spec: StageSpec) -> Stage:
        with self._lock:
            stage = self._stages.get(spec)
            if stage is None:
                t0 = time.perf_counter()
                stage = BUILDERS[spec.name](spec, self.env)
                log.info("loaded stage %s in %.0f ms", spec, (time.perf_counter() - t0) * 1000)
                self._stages[spec] = stage
                if len(self._stages) > MAX_CACHED_STAGES:
                    self._stages.popitem(last=False)
            self._stages.move_to_end(spec)
            return stage


def run_pipeline(spec: str, image: np.ndarray, stages: StageCache, *, keep_image: bool = False,
                 previous: np.ndarray | None = None) -> PipelineOutput:
    """Run every stage of `spec` on `image` in order: filters change the image the next stages see,
    detectors add detections. `previous` (the frame before, for `motion`) goes through the same
    filters first, so `blur:5,motion` compares blurred with blurred. Timings per stage in ms."""
    detections: list[Detection] = []
    timings: dict[str, float] = {}
    filtered = False
    for stage_spec in parse_pipeline(spec):
        stage = stages.get(stage_spec)
        t0 = time.perf_counter()
        if stage_spec.name == "motion":
            image, previous, filtered = stage(image, previous), None, True
        elif STAGES[stage_spec.name].kind == "filter":
            image, filtered = stage(image), True
            previous = stage(previous) if previous is not None else None
        else:
            detections.extend(stage(image))
        timings[str(stage_spec)] = (time.perf_counter() - t0) * 1000.0
    return PipelineOutput(tuple(detections), timings, image if filtered or keep_image else None)


def process_payload(spec: str, payload: bytes, stages: StageCache, *, keep_image: bool = False,
                    stacked: bool = False) -> PipelineOutput:
    """Decode a task's payload and run its pipeline; decode time is reported as 'decode'.

    `stacked`: the payload holds the previous frame above the current one (same size), for `motion`.
    """
    t0 = time.perf_counter()
    image = decode_image(payload, stages.env.max_image_pixels)
    previous = None
    if stacked:
        if image.shape[0] % 2:
            raise DecodeError(f"a stacked payload needs an even height, got {image.shape[0]}")
        previous, image = image[: image.shape[0] // 2], image[image.shape[0] // 2:]
    decode_ms = (time.perf_counter() - t0) * 1000.0
    out = run_pipeline(spec, image, stages, keep_image=keep_image, previous=previous)
    return PipelineOutput(out.detections, {"decode": decode_ms, **out.timings_ms}, out.image)
