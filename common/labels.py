"""The 80 COCO class names, in the order detectors trained on COCO number them.

Shared by the pipeline spec (which checks `objects:car+truck` at start-up) and the detectors.
"""

from __future__ import annotations

COCO80 = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
COCO80_SET = frozenset(COCO80)


def parse_labels(text: str) -> tuple[str, ...]:
    """`car+truck+traffic_light` as COCO names (underscores stand for spaces); ValueError naming the unknown."""
    names = tuple(dict.fromkeys(p.strip().lower().replace("_", " ") for p in text.split("+") if p.strip()))
    unknown = [n for n in names if n not in COCO80_SET]
    if not names or unknown:
        raise ValueError(f"unknown COCO label(s) {unknown}" if unknown else "no labels given")
    return names
