"""Accuracy you can see: a real photo of a person pasted at known places onto real backgrounds.

The photo is scikit-image's astronaut.png (a 512x512 upper-body portrait, Eileen Collins) and the
backgrounds are other pictures from the same folder that show nobody. Pasting gives exact ground
truth, so the `person` and `face` stages must find the pasted person and face with IoU >= 0.5.

What the detectors do with this portrait, measured over heights 100..450 px at left/centre/right on
grass, gravel (960x540), motorcycle_left (1280x720) and a square grass frame (540x540), and looked at:

* `person` (NanoDet-g, letterboxed, crops on `auto`): found with IoU 0.75-0.99 from 180 px up at
  every position on every background but three (65 of the 84 compositions in all); 100-140 px
  portraits (head ~18-25 px) are found at some positions only. Without crops (`tiles=off`) the busy
  motorcycle background lost everything from 140 to 320 px but 260: the crops, which `auto` runs
  when a candidate is unsure, bring most of those back. Scores for this unusual subject (an
  upper-body portrait in an orange suit) are 0.50-0.80.
* `person-ssd` (SSDLite letterboxed to a square): found at 220 px at the edges and at 450 px, and in
  the square frame from 260 px up; squeezed (the old `person`) it lost every portrait over 260 px in
  16:9 frames.

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
# on the bottom edge of the frame. Cases where the detector scored at least 0.55 when measured.
FACE_FOUND = [("grass", 180, 0.0), ("grass", 180, 0.5), ("grass", 180, 1.0), ("gravel", 180, 0.5),
              ("gravel", 220, 0.0), ("motorcycle", 220, 0.0), ("motorcycle", 220, 0.5),
              ("motorcycle", 220, 1.0), ("grass-square", 260, 0.5), ("grass-square", 420, 0.0),
              ("grass", 320, 0.5), ("gravel", 450, 0.0)]
PERSON_FOUND = [("grass", 180, 0.0), ("grass", 180, 1.0), ("grass", 220, 0.5), ("grass", 320, 0.0),
                ("grass", 320, 0.5), ("grass", 450, 1.0), ("gravel", 180, 0.5), ("gravel", 220, 0.0),
                ("gravel", 320, 1.0), ("gravel", 450, 0.0), ("motorcycle", 260, 0.0), ("motorcycle", 450, 0.0),
                ("motorcycle", 140, 0.5), ("motorcycle", 220, 0.0), ("motorcycle", 320, 0.5),
                ("grass-square", 100, 0.5), ("grass-square", 220, 0.5), ("grass-square", 320, 0.0)]
PERSON_SSD_FOUND = [("grass", 220, 0.0), ("grass", 450, 0.5), ("gravel", 220, 1.0), ("grass-square", 260, 0.5),
                    ("grass-square", 320, 1.0)]
# Known limitation: a portrait this small (head ~18-25 px) on a busy 16:9 background is missed.
PERSON_MISSED = [("gravel", 140, 0.5), ("motorcycle", 100, 0.5)]

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
    return {name: cache.get(parse_stage(name)) for name in ("person", "person-ssd", "face")}


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
    assert best_iou(stages["person"], astronaut, ASTRONAUT_PERSON) >= 0.9
    assert best_iou(stages["person-ssd"], astronaut, ASTRONAUT_PERSON) >= 0.8


@pytest.mark.parametrize("key", sorted(BACKGROUNDS))
def test_backgrounds_alone_have_no_person_and_no_face(stages: dict[str, Detector],
                                                      backgrounds: dict[str, np.ndarray], key: str) -> None:
    assert stages["person"](backgrounds[key]) == []
    assert stages["person-ssd"](backgrounds[key]) == []
    assert stages["face"](backgrounds[key]) == []


def found_once(detector: Detector, frame: np.ndarray, truth: Box) -> None:
    found = detector(frame)
    assert len(found) == 1, found
    assert iou(found[0].box, truth) >= MIN_IOU, found


@pytest.mark.parametrize(("key", "height", "at"), PERSON_FOUND)
def test_person_found_where_pasted(stages: dict[str, Detector], astronaut: np.ndarray,
                                   backgrounds: dict[str, np.ndarray], key: str, height: int, at: float) -> None:
    frame, x, y = compose(backgrounds[key], astronaut, height, at)
    found_once(stages["person"], frame, place(ASTRONAUT_PERSON, x, y, height))


@pytest.mark.parametrize(("key", "height", "at"), PERSON_SSD_FOUND)
def test_person_ssd_found_where_pasted(stages: dict[str, Detector], astronaut: np.ndarray,
                                       backgrounds: dict[str, np.ndarray], key: str, height: int, at: float) -> None:
    frame, x, y = compose(backgrounds[key], astronaut, height, at)
    found_once(stages["person-ssd"], frame, place(ASTRONAUT_PERSON, x, y, height))


@pytest.mark.parametrize(("key", "height", "at"), FACE_FOUND)
def test_face_found_where_pasted(stages: dict[str, Detector], astronaut: np.ndarray,
                                 backgrounds: dict[str, np.ndarray], key: str, height: int, at: float) -> None:
    frame, x, y = compose(backgrounds[key], astronaut, height, at)
    found_once(stages["face"], frame, place(ASTRONAUT_FACE, x, y, height))


@pytest.mark.parametrize(("key", "height", "at"), PERSON_MISSED)
def test_small_portrait_on_a_busy_wide_frame_is_missed(stages: dict[str, Detector], astronaut: np.ndarray,
                                                       backgrounds: dict[str, np.ndarray], key: str, height: int,
                                                       at: float) -> None:
    """The known limitation, pinned: if `person` starts finding these, move them to PERSON_FOUND."""
    frame, _, _ = compose(backgrounds[key], astronaut, height, at)
    assert stages["person"](frame) == []


def test_a_frame_larger_than_1080p_is_scanned_for_faces_downscaled(stages: dict[str, Detector],
                                                                     astronaut: np.ndarray) -> None:
    """A 4096x4096 frame (at the default pixel cap) is scanned at 1920x1920, and the face comes back in
    the big frame's pixels (what that saves is measured in bench/face_cost.py, not here)."""
    big = cv2.resize(astronaut, (4096, 4096), interpolation=cv2.INTER_LINEAR)
    best = max(stages["face"](big), key=lambda d: d.score)  # Haar also fires on the blown-up suit's texture
    assert iou(best.box, place(ASTRONAUT_FACE, 0, 0, 4096)) >= MIN_IOU, best
