"""Bring-your-own detector: a YOLOv5 / YOLOv8 / YOLO11 ONNX export run by cv2.dnn (or onnxruntime).

The stage is `onnx:<path>[:<min_score>[:<iou>]]`. Beside `model.onnx` it reads, when present,
`model.json` (a sidecar: names, labels, input_size, min_score, iou, runtime), `model.names` or
`model.txt` (class names, one per line). Without names it uses the 80 COCO class names.

Output layouts (the batch dimension must be 1):
  YOLOv5          [1, N, 5 + C]  rows of cx, cy, w, h, objectness, C class scores
  YOLOv8 / YOLO11 [1, 4 + C, N]  columns of cx, cy, w, h, C class scores (no objectness)
Which one a model has is read from the shape: if exactly one layout agrees with the number of class
names, that one; otherwise the smaller of the two dimensions is the per-candidate attribute axis
(N is in the thousands for any real input size, C + 5 is small). Boxes are in input pixels.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from common.errors import PipelineSpecError
from common.labels import COCO80
from common.tasks import MAX_DETECTIONS, MAX_LABEL_CHARS, Detection

log = logging.getLogger(__name__)

DEFAULT_MIN_SCORE = 0.25
DEFAULT_IOU = 0.45
DEFAULT_INPUT_SIZE = (640, 640)  # w, h when the model's input is dynamic and no sidecar says otherwise
STRIDE = 32  # YOLO feature maps need input sides that are multiples of this
PAD_VALUE = 114  # the grey Ultralytics letterboxes with
RUNTIMES = ("auto", "cv2", "onnxruntime")
ORT_INSTALL = "pip install onnxruntime"
SIDECAR_KEYS = {"names", "labels", "input_size", "min_score", "iou", "runtime"}

V5, V8 = "v5", "v8"



# ---------------------------------------------------------------------------------------------------
# Configuration: the spec's arguments, the sidecar JSON and the names file


@dataclass(frozen=True)
class ModelConfig:
    """Everything about one model that is not its weights."""

    path: Path
    names: tuple[str, ...]
    names_given: bool  # False: the COCO-80 default, which a custom model need not match
    labels: frozenset[str] | None  # keep only these; None keeps every class
    input_size: tuple[int, int] | None  # w, h for a model whose input shape is dynamic
    min_score: float
    iou: float
    runtime: str


def load_config(path: str | Path, *, min_score: float | None = None, iou: float | None = None,
                runtime: str | None = None) -> ModelConfig:
    """Read the model's sidecar and names files; arguments given here win over the sidecar."""
    path = Path(path)
    if not path.is_file():
        raise PipelineSpecError(f"ONNX model {path}: no such file (the path is resolved on the worker)")
    side = _read_sidecar(path.with_suffix(".json"))
    names, names_given = _names(path, side)
    labels = side.get("labels")
    if labels is not None:
        unknown = sorted(set(labels) - set(names))
        if unknown:
            raise PipelineSpecError(f"ONNX model {path}: labels {unknown} are not among its class names")
    return ModelConfig(
        path=path, names=names, names_given=names_given,
        labels=frozenset(labels) if labels is not None else None,
        input_size=tuple(side["input_size"]) if "input_size" in side else None,
        min_score=_first(min_score, side.get("min_score"), DEFAULT_MIN_SCORE),
        iou=_first(iou, side.get("iou"), DEFAULT_IOU),
        runtime=runtime or side.get("runtime", "auto"),
    )


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def _read_sidecar(path: Path) -> dict[str, Any]:
    """The sidecar's keys, checked; {} when there is no sidecar."""
    if not path.is_file():
        return {}
    try:
        side = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PipelineSpecError(f"sidecar {path}: not readable JSON: {e}") from e
    if not isinstance(side, dict):
        raise PipelineSpecError(f"sidecar {path}: must be a JSON object")
    problem = _sidecar_problem(side)
    if problem:
        raise PipelineSpecError(f"sidecar {path}: {problem}")
    return side


def _sidecar_problem(side: dict[str, Any]) -> str:
    """What is wrong with a sidecar's contents, or ''."""
    unknown = sorted(set(side) - SIDECAR_KEYS)
    if unknown:
        return f"unknown key(s) {unknown}; known: {sorted(SIDECAR_KEYS)}"
    for key in ("names", "labels"):
        v = side.get(key)
        if v is not None and (not isinstance(v, list) or not all(isinstance(s, str) and s for s in v)):
            return f"{key!r} must be a list of non-empty strings"
    size = side.get("input_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2
                                 and all(isinstance(v, int) and v > 0 and v % STRIDE == 0 for v in size)):
        return f"'input_size' must be [width, height], positive multiples of {STRIDE}, got {size!r}"
    for key in ("min_score", "iou"):
        v = side.get(key)
        if v is not None and not (isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1):
            return f"{key!r} must be a number in 0..1, got {v!r}"
    if side.get("runtime", "auto") not in RUNTIMES:
        return f"'runtime' must be one of {RUNTIMES}, got {side['runtime']!r}"
    return ""


def _names(model: Path, side: dict[str, Any]) -> tuple[tuple[str, ...], bool]:
    """Class names: the sidecar's, else `<model>.names`, else `<model>.txt`, else COCO-80."""
    if side.get("names"):
        return tuple(n[:MAX_LABEL_CHARS] for n in side["names"]), True
    for candidate in (model.with_suffix(".names"), model.with_suffix(".txt")):
        if candidate.is_file():
            lines = [s.strip() for s in candidate.read_text(encoding="utf-8").splitlines()]
            names = tuple(s[:MAX_LABEL_CHARS] for s in lines if s)
            if not names:
                raise PipelineSpecError(f"names file {candidate} is empty")
            return names, True
    return COCO80, False


# ---------------------------------------------------------------------------------------------------
# The model file's declared input shape, read from the protobuf without the onnx package


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        value |= (b & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if b < 0x80:
            return value, i


def _fields(buf: memoryview) -> list[tuple[int, int | memoryview]]:
    """The (field number, value) pairs of one protobuf message; length-delimited values as views."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ValueError("truncated field")
            value, i = buf[i:i + n], i + n
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, i = int.from_bytes(buf[i:i + width], "little"), i + width
            if i > len(buf):
                raise ValueError("truncated field")
        else:
            raise ValueError(f"unsupported wire type {wire}")
        out.append((number, value))
    return out


def input_shape(model_bytes: bytes) -> tuple[str, list[int | None]]:
    """Name and dims (None where symbolic) of an ONNX model's first graph input that is not a weight.

    ModelProto.graph = 7; GraphProto.initializer = 5, .input = 11; TensorProto.name = 8;
    ValueInfoProto.name = 1, .type = 2; TypeProto.tensor_type = 1; Tensor.shape = 2;
    TensorShapeProto.dim = 1; Dimension.dim_value = 1. Old exports list their weights as inputs too.
    """
    graph = _fields(_sub(memoryview(model_bytes), 7))
    if not graph:
        raise ValueError("no graph in the file")
    inputs = [v for n, v in graph if n == 11 and not isinstance(v, int)]
    if len(inputs) > 1:
        weights = {_field_str(v, 8) for n, v in graph if n == 5 and not isinstance(v, int)}
        inputs = [v for v in inputs if _field_str(v, 1) not in weights]
    if not inputs:
        raise ValueError("the graph has no input")
    return _field_str(inputs[0], 1), _dims(inputs[0])


def first_output(model_bytes: bytes) -> str:
    """Name of an ONNX model's first graph output (GraphProto.output = 12), the one decoded."""
    graph = _sub(memoryview(model_bytes), 7)
    return _field_str(_sub(graph, 12), 1)


def _sub(msg: memoryview, number: int) -> memoryview:
    """The first length-delimited field `number` of a message (empty when absent)."""
    return next((v for n, v in _fields(msg) if n == number and not isinstance(v, int)), memoryview(b""))


def _field_str(msg: memoryview, number: int) -> str:
    return bytes(_sub(msg, number)).decode("utf-8", "replace")


def _dims(value_info: memoryview) -> list[int | None]:
    shape = _sub(_sub(_sub(value_info, 2), 1), 2)
    dims = []
    for n, dim in _fields(shape):
        if n == 1 and not isinstance(dim, int):
            size = next((v for k, v in _fields(dim) if k == 1 and isinstance(v, int)), 0)
            dims.append(size if size > 0 else None)
    return dims


# ---------------------------------------------------------------------------------------------------
# Pure pre- and post-processing


@dataclass(frozen=True)
class Letterbox:
    """How a frame was placed in the model input: scaled by `scale`, then shifted by (left, top)."""

    scale: float
    left: int
    top: int


def letterbox_geometry(frame_wh: tuple[int, int], input_wh: tuple[int, int]) -> tuple[tuple[int, int], Letterbox]:
    """The resized frame size and its placement when it is fitted, aspect kept, into the input."""
    (fw, fh), (iw, ih) = frame_wh, input_wh
    scale = min(iw / fw, ih / fh)
    nw, nh = min(iw, round(fw * scale)), min(ih, round(fh * scale))
    return (nw, nh), Letterbox(scale, (iw - nw) // 2, (ih - nh) // 2)


def letterbox(image: np.ndarray, input_wh: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """A BGR frame as the model's NCHW float32 RGB 0..1 blob, letterboxed with grey 114."""
    (nw, nh), lb = letterbox_geometry((image.shape[1], image.shape[0]), input_wh)
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nw, nh) != image.shape[1::-1] else image
    iw, ih = input_wh
    padded = cv2.copyMakeBorder(resized, lb.top, ih - nh - lb.top, lb.left, iw - nw - lb.left,
                                cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return cv2.dnn.blobFromImage(padded, scalefactor=1.0 / 255.0, swapRB=True), lb


def choose_layout(shape: Sequence[int], n_names: int, *, names_given: bool) -> tuple[str, int]:
    """(V5 or V8, number of classes) for a raw output shape; ValueError when it is neither."""
    if len(shape) != 3 or shape[0] != 1:
        raise ValueError(f"output shape {list(shape)} is not [1, N, 5+C] (YOLOv5) or [1, 4+C, N] (YOLOv8/11)")
    _, a, b = shape
    fits_v5, fits_v8 = b - 5 == n_names, a - 4 == n_names
    if fits_v5 != fits_v8:
        return (V5, b - 5) if fits_v5 else (V8, a - 4)
    if names_given and not fits_v5:
        raise ValueError(f"output shape {list(shape)} fits neither [1, N, 5+{n_names}] (YOLOv5) nor "
                         f"[1, 4+{n_names}, N] (YOLOv8/11) for the {n_names} class names given")
    if a < b and a >= 5:  # attributes are the short axis: columns of cx, cy, w, h, classes
        return V8, a - 4
    if b >= 6:
        return V5, b - 5
    raise ValueError(f"output shape {list(shape)} has too few attributes per candidate for a YOLO head")


def decode(output: np.ndarray, layout: str, min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates scoring at least min_score: (cx, cy, w, h) boxes in input pixels, scores, class ids."""
    rows = output[0] if layout == V5 else output[0].T
    first = 5 if layout == V5 else 4
    if layout == V5:
        rows = rows[rows[:, 4] >= min_score]  # objectness bounds the score: a cheap first cut
    classes = rows[:, first:]
    ids = classes.argmax(axis=1) if len(rows) else np.zeros(0, np.int64)
    scores = classes[np.arange(len(rows)), ids]
    if layout == V5:
        scores = scores * rows[:, 4]
    keep = scores >= min_score
    return rows[keep, :4].astype(np.float32), scores[keep].astype(np.float32), ids[keep]


def to_frame(boxes: np.ndarray, lb: Letterbox, frame_wh: tuple[int, int]) -> np.ndarray:
    """(cx, cy, w, h) input-pixel boxes as (x0, y0, x1, y1) frame pixels, clipped to the frame."""
    cx, cy, w, h = boxes.T
    x0, x1 = (cx - w / 2 - lb.left) / lb.scale, (cx + w / 2 - lb.left) / lb.scale
    y0, y1 = (cy - h / 2 - lb.top) / lb.scale, (cy + h / 2 - lb.top) / lb.scale
    fw, fh = frame_wh
    return np.stack([np.clip(x0, 0, fw), np.clip(y0, 0, fh), np.clip(x1, 0, fw), np.clip(y1, 0, fh)], axis=1)


def postprocess(output: np.ndarray, layout: str, lb: Letterbox, frame_wh: tuple[int, int], *,
                names: Sequence[str], labels: frozenset[str] | None, min_score: float,
                iou: float) -> list[Detection]:
    """Threshold, filter by label, map to frame pixels, class-aware NMS, best first."""
    boxes, scores, ids = decode(output, layout, min_score)
    found = [_name(names, int(i)) for i in ids]
    if labels is not None:
        mask = np.array([n in labels for n in found], bool)
        boxes, scores, ids = boxes[mask], scores[mask], ids[mask]
        found = [n for n, m in zip(found, mask) if m]
    corners = np.round(to_frame(boxes, lb, frame_wh)).astype(int)
    xywh = [[int(x0), int(y0), int(x1 - x0), int(y1 - y0)] for x0, y0, x1, y1 in corners]
    keep = cv2.dnn.NMSBoxesBatched(xywh, scores.tolist(), ids.tolist(), min_score, iou,
                                   top_k=MAX_DETECTIONS) if xywh else []
    return [Detection(found[i], round(float(scores[i]), 4), tuple(xywh[i]))
            for i in np.ravel(keep) if xywh[i][2] > 0 and xywh[i][3] > 0]


def _name(names: Sequence[str], i: int) -> str:
    return names[i] if i < len(names) else f"class{i}"


# ---------------------------------------------------------------------------------------------------
# Runtimes


class Runtime(Protocol):
    """Runs one NCHW blob through the model and returns its first output."""

    name: str

    def run(self, blob: np.ndarray) -> np.ndarray: ...


class CvRuntime:
    """OpenCV's dnn module: always there, but it cannot import every graph (dynamic shapes)."""

    name = "cv2"

    def __init__(self, path: Path, output: str) -> None:
        self._net = cv2.dnn.readNetFromONNX(str(path))
        self._output = output  # by name: forward() alone gives the last layer, not always output 0

    def run(self, blob: np.ndarray) -> np.ndarray:
        self._net.setInput(blob)
        return self._net.forward(self._output) if self._output else self._net.forward()


class OrtRuntime:
    """onnxruntime: runs what cv2.dnn cannot, and runs on an accelerator when the build has one."""

    name = "onnxruntime"

    def __init__(self, path: Path, *, device: str = "cpu", threads: int = 0) -> None:
        import onnxruntime

        from worker.detectors import providers

        chosen, provider_list = providers.choose(device, providers.available_providers())
        self._session = onnxruntime.InferenceSession(str(path), sess_options=providers.session_options(threads),
                                                     providers=provider_list)
        self.device = providers.session_device(self._session, chosen)
        self._input = self._session.get_inputs()[0].name

    def run(self, blob: np.ndarray) -> np.ndarray:
        return np.asarray(self._session.run(None, {self._input: blob})[0])


def have_onnxruntime() -> bool:
    """Whether the optional onnxruntime package is importable."""
    return importlib.util.find_spec("onnxruntime") is not None


def _open_runtime(cfg: ModelConfig, output: str, warmup: np.ndarray, *, device: str = "auto",
                  threads: int = 0) -> tuple[Runtime, np.ndarray]:
    """The first runtime that loads the model and runs it once, with that run's output. With an
    accelerator asked for (or found by `auto`), onnxruntime goes first: cv2.dnn here runs on the CPU."""
    errors = []
    if cfg.runtime == "auto" and device != "cpu" and have_onnxruntime() and _accelerated(device):
        try:
            rt: Runtime = OrtRuntime(cfg.path, device=device, threads=threads)
            return rt, rt.run(warmup)
        except Exception as e:  # onnxruntime raises its own untyped errors for bad graphs
            errors.append(f"onnxruntime: {type(e).__name__}: {e}")
    if cfg.runtime in ("auto", "cv2"):
        try:
            rt: Runtime = CvRuntime(cfg.path, output)
            return rt, rt.run(warmup)
        except cv2.error as e:
            errors.append(f"cv2.dnn: {_cv_message(e)}")
            if cfg.runtime == "auto":
                log.info("cv2.dnn cannot run %s; trying onnxruntime", cfg.path)
    if cfg.runtime in ("auto", "onnxruntime"):
        if not have_onnxruntime():
            errors.append(f"onnxruntime is not installed ({ORT_INSTALL})")
        else:
            try:
                rt = OrtRuntime(cfg.path, device=device, threads=threads)
                return rt, rt.run(warmup)
            except Exception as e:  # onnxruntime raises its own untyped errors for bad graphs
                errors.append(f"onnxruntime: {type(e).__name__}: {e}")
    raise PipelineSpecError(f"ONNX model {cfg.path}: no runtime can run it: {'; '.join(errors)}")


def _accelerated(device: str) -> bool:
    """Whether `device` resolves to an accelerator on this onnxruntime build."""
    from worker.detectors import providers

    return providers.choose(device, providers.available_providers())[0] != "cpu"


def _cv_message(e: cv2.error) -> str:
    """The useful part of an OpenCV error: the text after 'error:', without file and line."""
    lines = [ln for ln in str(e).splitlines() if "error:" in ln]
    return lines[0].split("error:", 1)[1].strip() if lines else str(e).strip()


# ---------------------------------------------------------------------------------------------------
# The stage


class OnnxYolo:
    """A loaded YOLO ONNX model: call it with a BGR frame to get detections in frame pixels."""

    def __init__(self, cfg: ModelConfig, *, device: str = "auto", threads: int = 0) -> None:
        self.cfg = cfg
        try:
            data = cfg.path.read_bytes()
            input_name, dims = input_shape(data)
            output = first_output(data)
        except (OSError, ValueError) as e:
            raise PipelineSpecError(f"ONNX model {cfg.path}: not a readable ONNX model ({e})") from e
        self.input_wh = _input_wh(cfg, input_name, dims)
        blob = np.zeros((1, 3, self.input_wh[1], self.input_wh[0]), np.float32)
        self._runtime, out = _open_runtime(cfg, output, blob, device=device, threads=threads)
        try:
            self.layout, n_classes = choose_layout(out.shape, len(cfg.names), names_given=cfg.names_given)
        except ValueError as e:
            raise PipelineSpecError(f"ONNX model {cfg.path}: {e}") from e
        self._lock = threading.Lock()  # one cv2.dnn.Net must not run on two threads at once
        log.info("ONNX model %s: %s layout, %d classes, input %dx%d, runtime %s", cfg.path, self.layout,
                 n_classes, *self.input_wh, self._runtime.name)

    @property
    def runtime(self) -> str:
        """Which runtime runs the model: 'cv2' or 'onnxruntime'."""
        return self._runtime.name

    def __call__(self, image: np.ndarray) -> list[Detection]:
        blob, lb = letterbox(image, self.input_wh)
        with self._lock:
            out = self._runtime.run(blob)
        return postprocess(out, self.layout, lb, (image.shape[1], image.shape[0]), names=self.cfg.names,
                           labels=self.cfg.labels, min_score=self.cfg.min_score, iou=self.cfg.iou)


def _input_wh(cfg: ModelConfig, name: str, dims: list[int | None]) -> tuple[int, int]:
    """The model's input (w, h): its static shape, else the sidecar's, else the default."""
    if len(dims) != 4 or dims[1] not in (3, None):
        raise PipelineSpecError(f"ONNX model {cfg.path}: input {name!r} has shape {dims}, not [1, 3, H, W]")
    h, w = dims[2], dims[3]
    if h and w:
        if cfg.input_size and cfg.input_size != (w, h):
            log.warning("ONNX model %s: input is fixed at %dx%d; ignoring the sidecar's input_size", cfg.path, w, h)
        return w, h
    return cfg.input_size or DEFAULT_INPUT_SIZE


def load(path: str | Path, *, min_score: float | None = None, iou: float | None = None,
         runtime: str | None = None, device: str = "auto", threads: int = 0) -> OnnxYolo:
    """Load a model with its sidecar files; PipelineSpecError naming the file when it cannot be used."""
    return OnnxYolo(load_config(path, min_score=min_score, iou=iou, runtime=runtime), device=device, threads=threads)
