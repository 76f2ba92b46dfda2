"""Accuracy you can see: a real photo of a person pasted at known places onto real backgrounds.

The photo is scikit-image's astronaut.png (a 512x512 upper-body portrait, Eileen Collins) and the
backgrounds are other pictures from the same folder that show nobody. Pasting gives exact ground
truth, so the `person` and `face` stages must find the pasted person and face with IoU >= 0.5.

What the person stage (SSDLite, input squeezed to 300x300) does with this portrait, measured over
heights 100..450 px at left/centre/right on grass, gravel, coffee (960x540) and motorcycle_left
(1280x720) and looked at:

* 16:9 frames, portrait 140-220 px high (26-40 % of the frame height): found, IoU 0.72-0.88, at
  most positions (a few misses at 220 px, and at 140-180 px on coffee/motorcycle at some positions).
* 16:9 frames, portrait >= 260 px high: NOT found (best score 0.10 at 320 px, 0.49 at 450 px). Squeezing
  960 px to 300 narrows a big square portrait more than its height; the network was trained on
  pedestrians and stops calling the wide orange suit a person. One exception: 450 px at the right edge
  of grass.
* Square frames (540x540, no squeeze): found at every height 260-450 px and position tried (30 of 30,
  IoU 0.70-0.98).
* 100 px high: not found (the head is ~18 px).

The face stage (Haar) finds the face from ~180 px up (face >= ~33 px); at 140 px (face ~25 px, just
over the cascade's 24 px minimum) it usually misses. It also fires a second, false face in 3 of the
30 square compositions (e.g. 450 px centred on grass: a 58 px "face" on the grass and shuttle at the
portrait's top-right corner); those are not used below. person-hog (a full-body pedestrian detector)
never finds this upper-body portrait; it is measured in bench/detector_accuracy.py, not asserted here.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cluster.testdata import ASTRONAUT_FACE, ASTRONAUT_PERSON, ASTRONAUT_SIZE, Box, iou, sample_image
from common.pipeline import parse_stage
from worker.detectors import Detector
from worker.pipeline import StageCache

# Backgrounds with nobody in them. brick.png (the Haar cascade sees 3 "faces" in the mortar), moon.png,
# coins.png and chelsea.png at 1280x720 (the cat) give face false positives, camera.png has a person:
# not used.
BACKGROUNDS = {"grass": ("grass.png", (960, 540)), "gravel": ("gravel.png", (960, 540)),
               "motorcycle": ("motorcycle_left.png", (1280, 720)), "grass-square": ("grass.png", (540, 540))}

# (background, portrait height px, left edge as a fraction of the free width); the portrait stands
# on the bottom edge of the frame.
BOTH_FOUND = [("grass", 180, 0.0), ("grass", 180, 0.5), ("grass", 180, 1.0), ("gravel", 180, 0.5),
              ("gravel", 220, 0.0), ("motorcycle", 220, 0.0), ("motorcycle", 220, 0.5),
              ("motorcycle", 220, 1.0), ("grass-square", 260, 0.5), ("grass-square", 420, 0.0)]
PERSON_ONLY = [("grass", 140, 0.0), ("gravel", 140, 1.0)]  # the face is too small for the cascade
# Known limitation (see the module docstring): in a 16:9 frame a big portrait is not a person to SSDLite.
FACE_ONLY = [("grass", 320, 0.5), ("gravel", 450, 0.0)]

MIN_IOU = 0.5


def place(box: Box, x: int, y: int, height: int) -> Box:
    """A box inside astronaut.png moved to where the portrait was pasted at (x, y), `height` px high."""
    s = height / ASTRONAUT_SIZE
    return (x + box[0] * s, y + box[1] * s, box[2] * s, box[3] * s)


def compose(background: np.ndarray, astronaut: np.ndarray, height: int, at: float) -> tuple[np.ndarray, int, int]:
    """Paste the portrait `height` px high on the bottom edge; returns the frame and the paste corner."""
    frame = background.copy()
    h, w = frame.shape[:2]
    x, y = int(at * (w - height)), h - height
    frame[y:y + height, x:x + height] = cv2.resize(astronaut, (height, height), interpolation=cv2.INTER_AREA)
    return frame, x, y


@pytest.fixture(scope="module")
def stages() -> dict[str, Detector]:
    cache = StageCache()
    return {name: cache.get(parse_stage(name)) for name in ("person", "face")}


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return sample_image("astronaut.png")


@pytest.fixture(scope="module")
def backgrounds() -> dict[str, np.ndarray]:
    return {key: cv2.resize(sample_image(name), size, interpolation=cv2.INTER_AREA)
            for key, (name, size) in BACKGROUNDS.items()}


def best_iou(detector: Detector, frame: np.ndarray, truth: Box) -> float:
    return max((iou(d.box, truth) for d in detector(frame)), default=0.0)


def test_facts_about_the_original_photo(stages: dict[str, Detector], astronaut: np.ndarray) -> None:
    assert best_iou(stages["face"], astronaut, ASTRONAUT_FACE) > 0.95
    assert best_iou(stages["person"], astronaut, ASTRONAUT_PERSON) >= 0.8


@pytest.mark.parametrize("key", sorted(BACKGROUNDS))
def test_backgrounds_alone_have_no_person_and_no_face(stages: dict[str, Detector],
                                                      backgrounds: dict[str, np.ndarray], key: str) -> None:
    assert stages["person"](backgrounds[key]) == []
    assert stages["face"](backgrounds[key]) == []


@pytest.mark.parametrize(("key", "height", "at"), BOTH_FOUND + PERSON_ONLY)
def test_person_found_where_pasted(stages: dict[str, Detector], astronaut: np.ndarray,
                                   backgrounds: dict[str, np.ndarray], key: str, height: int, at: float) -> None:
    frame, x, y = compose(backgrounds[key], astronaut, height, at)
    found = stages["person"](frame)
    assert len(found) == 1, found
    assert iou(found[0].box, place(ASTRONAUT_PERSON, x, y, height)) >= MIN_IOU, found


@pytest.mark.parametrize(("key", "height", "at"), BOTH_FOUND + FACE_ONLY)
def test_face_found_where_pasted(stages: dict[str, Detector], astronaut: np.ndarray,
                                 backgrounds: dict[str, np.ndarray], key: str, height: int, at: float) -> None:
    frame, x, y = compose(backgrounds[key], astronaut, height, at)
    found = stages["face"](frame)
    assert len(found) == 1, found
    assert iou(found[0].box, place(ASTRONAUT_FACE, x, y, height)) >= MIN_IOU, found


@pytest.mark.parametrize(("key", "height", "at"), FACE_ONLY)
def test_big_portrait_in_a_wide_frame_is_missed(stages: dict[str, Detector], astronaut: np.ndarray,
                                                backgrounds: dict[str, np.ndarray], key: str, height: int,
                                                at: float) -> None:
    """The known limitation, pinned: if SSDLite starts finding these, move them to BOTH_FOUND."""
    frame, _, _ = compose(backgrounds[key], astronaut, height, at)
    assert stages["person"](frame) == []
