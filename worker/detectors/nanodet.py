"""NanoDet-g (80 COCO classes) on onnxruntime: the `person` and `objects` stages.

The model (worker/models) takes a 416x416 BGR image normalised per channel and gives, for each of
three strides (8, 16, 32), sigmoid class scores [N, 80] and box distributions [N, 44]: for each of the
four sides (left, top, right, bottom) 11 bins whose softmax expectation times the stride is the
distance from the cell's centre to that side.

Frames are letterboxed (aspect kept, never squeezed: squeezing a 16:9 frame drops recall from 204 to
28 of 279 frames on the hall clip). Wide low-resolution frames lose small people to the downscale, so
`tiles` adds two overlapping square crops (the frame's left and right h x h squares) run at the model's
full resolution; their boxes are merged with the full pass (see `merge_crops`). At the other end, a
person near the camera in a 4:3 frame can fall in the model's scale dip (RESCUE_MIN_HEIGHT); `tiles`
then adds one pass at a smaller input size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from common.labels import COCO80
from common.tasks import MAX_DETECTIONS, Detection
from worker.detectors import providers
from worker.detectors.onnx_yolo import Letterbox, letterbox_geometry

log = logging.getLogger(__name__)

INPUT = 416
STRIDES = (8, 16, 32)
BINS = 11
MEAN = np.array([103.53, 116.28, 123.675], np.float32)  # BGR
STD = np.array([57.375, 57.12, 58.395], np.float32)
NMS_IOU = 0.6
CROP_NMS_IOU = 0.5
CROP_MIN_ASPECT = 1.5  # crops pay only for frames at least this much wider than tall
PROBE_RATIO = 0.6  # `tiles=auto`: a candidate over this share of its class threshold, but under it, is "unsure"
CUT_EDGE_PX = 4  # a crop's box this close to the crop's inner edge may be a half object
# Big objects: NanoDet-g scores a person whose box is ~210-310 px tall in its 416 input low (0.3-0.5 where
# 200 or 400 px score 0.8+): in 4:3 frames someone near the camera falls in that dip. An unsure candidate
# at least this share of the frame's longer side tall gets one more pass at RESCUE_SIZE, where it scores
# 0.7-0.9 (docs/DETECTION.md: measurements; 0.4 and 0.5 find the same on the 4:3 hall frames).
RESCUE_MIN_HEIGHT = 0.45
RESCUE_SIZE = 320  # a multiple of the largest stride
CLASS_INDEX = {name: i for i, name in enumerate(COCO80)}


@dataclass(frozen=True)
class Found:
    """Raw detections of one pass, in frame pixels: corners (x0, y0, x1, y1), scores, class ids."""

    boxes: np.ndarray
    scores: np.ndarray
    ids: np.ndarray

    @staticmethod
    def empty() -> Found:
        return Found(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, keep: np.ndarray | Sequence[int]) -> Found:
        return Found(self.boxes[keep], self.scores[keep], self.ids[keep])

    @staticmethod
    def concat(parts: Sequence[Found]) -> Found:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Found.empty()
        return Found(np.concatenate([p.boxes for p in parts]), np.concatenate([p.scores for p in parts]),
                     np.concatenate([p.ids for p in parts]))


# ---------------------------------------------------------------------------------------------------
# Pure pre- and post-processing


def input_size(frame_wh: tuple[int, int], size: int = INPUT) -> tuple[int, int]:
    """The model input (w, h) for a frame: its longer side scaled to `size`, the other rounded up to
    a multiple of the largest stride. The model is fully convolutional, so a 640x480 frame runs as
    416x320 instead of 416x416 (a quarter less work) with the same picture in it."""
    w, h = frame_wh
    scale = size / max(w, h)
    step = STRIDES[-1]
    return (min(size, -(-round(w * scale) // step) * step), min(size, -(-round(h * scale) // step) * step))


def preprocess(image: np.ndarray, size: int = INPUT) -> tuple[np.ndarray, Letterbox]:
    """A BGR frame letterboxed (aspect kept, padded with 0) and normalised as a [1, 3, h, w] blob, with
    (w, h) from `input_size`."""
    iw, ih = input_size((image.shape[1], image.shape[0]), size)
    (nw, nh), lb = letterbox_geometry((image.shape[1], image.shape[0]), (iw, ih))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nw, nh) != image.shape[1::-1] else image
    padded = cv2.copyMakeBorder(resized, lb.top, ih - nh - lb.top, lb.left, iw - nw - lb.left,
                                cv2.BORDER_CONSTANT, value=(0, 0, 0))
    blob = (padded.astype(np.float32) - MEAN) / STD
    return blob.transpose(2, 0, 1)[None].copy(), lb


def centres(stride: int, hw: tuple[int, int] = (INPUT, INPUT)) -> np.ndarray:
    """Cell centres (x, y) of one stride's feature map for an input of (h, w), rows in y * nx + x order."""
    ny, nx = -(-hw[0] // stride), -(-hw[1] // stride)
    ys, xs = np.mgrid[0:ny, 0:nx]
    return (np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) + 0.5) * stride


def distances(dist: np.ndarray, stride: int) -> np.ndarray:
    """[K, 44] bin logits as [K, 4] distances (left, top, right, bottom) in input pixels."""
    logits = dist.reshape(-1, 4, BINS)
    logits = logits - logits.max(axis=2, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=2, keepdims=True)
    return (p @ np.arange(BINS, dtype=np.float32)) * stride


def decode(scores: Sequence[np.ndarray], dists: Sequence[np.ndarray], thresholds: np.ndarray,
           hw: tuple[int, int] = (INPUT, INPUT)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates of every stride over their class's threshold: (x0, y0, x1, y1) in input pixels,
    score, class id, for an input of (h, w). `thresholds` has one entry per class; a class left out
    has a threshold over 1."""
    boxes, kept_scores, ids = [], [], []
    for stride, s, d in zip(STRIDES, scores, dists):
        s, d = s.reshape(-1, s.shape[-1]), d.reshape(-1, 4 * BINS)
        cls = (s - thresholds[None, :]).argmax(axis=1)  # the class furthest over its own threshold
        best = s[np.arange(len(s)), cls]
        rows = np.flatnonzero(best >= thresholds[cls])
        if not len(rows):
            continue
        c = centres(stride, hw)[rows]
        ltrb = distances(d[rows], stride)
        boxes.append(np.concatenate([c - ltrb[:, :2], c + ltrb[:, 2:]], axis=1))
        kept_scores.append(best[rows])
        ids.append(cls[rows])
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    return np.concatenate(boxes), np.concatenate(kept_scores), np.concatenate(ids)


def to_frame(boxes: np.ndarray, lb: Letterbox, frame_wh: tuple[int, int],
             offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Input-pixel corners as frame-pixel corners, clipped to the (cropped) frame, then shifted by `offset`."""
    fw, fh = frame_wh
    out = np.empty_like(boxes)
    out[:, [0, 2]] = np.clip((boxes[:, [0, 2]] - lb.left) / lb.scale, 0, fw) + offset[0]
    out[:, [1, 3]] = np.clip((boxes[:, [1, 3]] - lb.top) / lb.scale, 0, fh) + offset[1]
    return out


def nms(found: Found, iou: float) -> Found:
    """Class-aware non-maximum suppression, best first."""
    if not len(found):
        return found
    xywh = [[float(x0), float(y0), float(x1 - x0), float(y1 - y0)] for x0, y0, x1, y1 in found.boxes]
    keep = cv2.dnn.NMSBoxesBatched(xywh, found.scores.tolist(), found.ids.tolist(), 0.0, iou,
                                   top_k=MAX_DETECTIONS)
    return found.select(np.ravel(keep).astype(int))


def crop_windows(frame_wh: tuple[int, int], mode: str) -> list[tuple[int, int, int]]:
    """The square crops (x, side, inner edge x) a frame may get: the frame's left and right h x h
    squares when it is at least CROP_MIN_ASPECT wide and `mode` is not off. The inner edge is where
    the crop cuts the frame (the right edge of the left crop, the left edge of the right one)."""
    w, h = frame_wh
    if mode == "off" or w < CROP_MIN_ASPECT * h:
        return []
    return [(0, h, h), (w - h, h, w - h)]


def unsure_windows(windows: list[tuple[int, int, int]], probe: Found, thresholds: np.ndarray) -> list[int]:
    """Which crops hold the centre of a candidate that scored under its class threshold (`tiles=auto`
    runs only those: a frame whose objects are all clear, or with nothing at all, costs one pass)."""
    unsure = probe.scores < thresholds[probe.ids]
    centres = (probe.boxes[unsure, 0] + probe.boxes[unsure, 2]) / 2
    return [i for i, (x, side, _) in enumerate(windows) if np.any((centres >= x) & (centres < x + side))]


def unsure_and_big(frame_wh: tuple[int, int], probe: Found, thresholds: np.ndarray) -> bool:
    """Whether the probe holds a candidate under its class threshold that is at least RESCUE_MIN_HEIGHT
    of the frame's longer side tall (`tiles=auto` then runs the smaller RESCUE_SIZE pass)."""
    unsure = probe.scores < thresholds[probe.ids]
    heights = probe.boxes[unsure, 3] - probe.boxes[unsure, 1]
    return bool(np.any(heights >= RESCUE_MIN_HEIGHT * max(frame_wh)))


def _overlap_share(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """How much of `box` each of `others` covers (intersection / area of box)."""
    ix = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    area = max(float((box[2] - box[0]) * (box[3] - box[1])), 1e-6)
    return ix * iy / area


def merge_crops(full: Found, crops: Sequence[tuple[Found, int]]) -> Found:
    """The full pass and the crops' boxes as one set.

    A crop cuts objects at its inner edge; a box touching that edge is dropped when another box of
    its class (from any pass) covers more than half of it, since then it is half of an object seen
    whole elsewhere. What is left goes through class-aware NMS at CROP_NMS_IOU."""
    kept = [full]
    everything = Found.concat([full, *(f for f, _ in crops)])
    for found, edge in crops:
        drop = []
        for i, box in enumerate(found.boxes):
            if min(abs(box[0] - edge), abs(box[2] - edge)) > CUT_EDGE_PX:
                continue
            same = (everything.ids == found.ids[i]) & ~np.all(everything.boxes == box, axis=1)
            if same.any() and _overlap_share(box, everything.boxes[same]).max() > 0.5:
                drop.append(i)
        kept.append(found.select(np.setdiff1d(np.arange(len(found)), drop)))
    return nms(Found.concat(kept), CROP_NMS_IOU)


# ---------------------------------------------------------------------------------------------------
# The model


class NanoDet:
    """A loaded NanoDet-g: `find(image, thresholds, tiles)` gives its raw detections in frame pixels."""

    def __init__(self, path: Path | str, *, device: str = "auto", threads: int = 0) -> None:
        import onnxruntime

        chosen, provider_list = providers.choose(device, providers.available_providers())
        self._session = onnxruntime.InferenceSession(str(path), providers_options=None,
                                                     sess_options=providers.session_options(threads),
                                                     providers=provider_list)
        self.device = providers.session_device(self._session, chosen)
        self._input = self._session.get_inputs()[0].name
        self._order = self._output_order()
        log.info("NanoDet %s loaded on %s (%s)", path, self.device, ", ".join(self._session.get_providers()))

    def _output_order(self) -> tuple[list[int], list[int]]:
        """Indices of the score and distance outputs, finest stride first, found from the shapes of one
        run on a blank square input (not from names)."""
        outs = self._session.run(None, {self._input: np.zeros((1, 3, INPUT, INPUT), np.float32)})
        shapes = [tuple(o.shape) for o in outs]
        by_rows: dict[int, dict[int, int]] = {}
        for i, shape in enumerate(shapes):
            by_rows.setdefault(shape[1], {})[shape[2]] = i
        expect = [(-(-INPUT // s)) ** 2 for s in STRIDES]
        try:
            return [by_rows[n][80] for n in expect], [by_rows[n][4 * BINS] for n in expect]
        except KeyError as e:
            raise ValueError(f"not a NanoDet-416 model: outputs {shapes}") from e

    @property
    def output_shapes(self) -> list[list[int]]:
        """The model's output shapes for a square input (for `python -m worker.models check`)."""
        outs = self._session.run(None, {self._input: np.zeros((1, 3, INPUT, INPUT), np.float32)})
        return [list(o.shape) for o in outs]

    def _pass(self, image: np.ndarray, thresholds: np.ndarray, offset: tuple[int, int] = (0, 0),
              size: int = INPUT) -> Found:
        blob, lb = preprocess(image, size)
        outs = self._session.run(None, {self._input: blob})
        boxes, scores, ids = decode([outs[i] for i in self._order[0]], [outs[i] for i in self._order[1]], thresholds,
                                    blob.shape[2:])
        corners = to_frame(boxes, lb, (image.shape[1], image.shape[0]), offset)
        return nms(Found(corners, scores, ids), NMS_IOU)

    def find(self, image: np.ndarray, thresholds: np.ndarray, tiles: str = "auto") -> Found:
        """Detections over their class thresholds. `tiles`: off, one pass; on, the pass, both crops of
        a wide frame and a smaller pass (RESCUE_SIZE); auto, the pass with thresholds lowered to
        PROBE_RATIO of themselves, then only the crops that hold a candidate between the two, and the
        smaller pass only when such a candidate is big (docs/DETECTION.md: why)."""
        wh = (image.shape[1], image.shape[0])
        if tiles == "off":
            return self._pass(image, thresholds)
        windows = crop_windows(wh, tiles)
        if tiles == "auto":
            probe = self._pass(image, thresholds * PROBE_RATIO)
            windows = [windows[i] for i in unsure_windows(windows, probe, thresholds)]
            rescue = unsure_and_big(wh, probe, thresholds)
            full = probe.select(np.flatnonzero(probe.scores >= thresholds[probe.ids]))
        else:
            full, rescue = self._pass(image, thresholds), True
        crops = [(self._pass(image[:, x:x + side], thresholds, (x, 0)), edge) for x, side, edge in windows]
        merged = merge_crops(full, crops) if crops else full
        if not rescue:
            return merged
        return nms(Found.concat([merged, self._pass(image, thresholds, size=RESCUE_SIZE)]), CROP_NMS_IOU)


def to_detections(found: Found) -> list[Detection]:
    """Raw detections as framehive's detections: COCO names, (x, y, w, h) integer boxes, best first."""
    out = []
    for box, score, cid in zip(found.boxes, found.scores, found.ids):
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        if x1 > x0 and y1 > y0:
            out.append(Detection(COCO80[int(cid)], round(float(score), 4), (x0, y0, x1 - x0, y1 - y0)))
    out.sort(key=lambda d: -d.score)
    return out[:MAX_DETECTIONS]


def thresholds_for(classes: dict[str, float]) -> np.ndarray:
    """A per-class threshold vector: the given classes at their thresholds, every other class off (2.0)."""
    t = np.full(len(COCO80), 2.0, np.float32)
    for name, value in classes.items():
        t[CLASS_INDEX[name]] = value
    return t
