"""Motion gating at the receiver: measuring motion, and the every/motion/rate policies."""

import cv2
import numpy as np
import pytest

from common.errors import ConfigError
from common.gating import GatePolicy, parse_policy
from receiver.motion import MotionGate


def jpeg(img: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def scene(box_x: int | None = None) -> np.ndarray:
    img = np.full((480, 640, 3), 90, np.uint8)
    cv2.rectangle(img, (50, 50), (200, 150), (30, 160, 30), -1)  # static furniture
    if box_x is not None:
        cv2.rectangle(img, (box_x, 240), (box_x + 80, 400), (240, 240, 240), -1)  # someone walking
    return img


def test_still_scene_has_no_motion_and_a_moving_box_is_found_where_it_is():
    gate = MotionGate(GatePolicy("motion"))
    assert gate.measure(jpeg(scene())).score == 1.0  # first frame: nothing to compare with
    for _ in range(3):
        m = gate.measure(jpeg(scene()))
        assert m.score == 0.0 and m.regions == ()
    m = gate.measure(jpeg(scene(400)))
    assert m.score > 0.01
    x, y, w, h = m.regions[0]
    tx, ty, tw, th = 400 / 640, 240 / 480, 80 / 640, 160 / 480
    assert x <= tx and y <= ty and x + w >= tx + tw and y + h >= ty + th  # covers the moving box
    assert w * h <= 2.0 * tw * th  # and not much more (blur and 1/8 scale widen it a little)


def test_garbage_jpeg_measures_nothing_and_is_detected_anyway():
    gate = MotionGate(GatePolicy("motion"))
    assert gate.measure(b"not a jpeg") is None
    assert gate.decide(None, 0.0) == ""  # when unsure, let the detector look


def test_motion_policy_holds_after_motion_and_takes_keyframes():
    gate = MotionGate(GatePolicy("motion", hold_s=2.0, keyframe_s=10.0))
    gate.measure(jpeg(scene()))
    still = gate.measure(jpeg(scene()))
    moving = gate.measure(jpeg(scene(300)))
    assert gate.decide(moving, 0.0) == ""
    assert gate.decide(still, 1.5) == ""  # within the hold time: people pause mid-step
    assert gate.decide(still, 2.5) == "no motion"
    assert gate.decide(still, 11.4) == "no motion"
    assert gate.decide(still, 11.6) == ""  # 10 s after the last detection: a keyframe, so a still
    assert gate.decide(still, 12.0) == "no motion"  # person is still seen now and then


def test_rate_policy():
    gate = MotionGate(GatePolicy("rate", max_per_s=2))
    decisions = [gate.decide(None, t / 10) for t in range(10)]
    assert decisions.count("") == 2 and set(decisions) == {"", "rate limit"}


@pytest.mark.parametrize("text,mode", [("every", "every"), ("motion", "motion"), ("MOTION:0.01", "motion"),
                                       ("rate:5", "rate")])
def test_parse_policy(text, mode):
    assert parse_policy(text).mode == mode


@pytest.mark.parametrize("text", ["sometimes", "rate", "rate:-1", "rate:x", "every:3", "motion:2"])
def test_bad_policies_are_refused(text):
    with pytest.raises(ConfigError):
        parse_policy(text)
