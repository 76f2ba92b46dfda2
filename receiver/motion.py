"""Motion gating: decide per frame whether a camera's frame is worth a detector's time.

Motion needs the camera's previous frames, which a stateless worker does not have, so the receiver
keeps a tiny grayscale background per camera. The JPEG is decoded at 1/8 scale (libjpeg skips most
of the work), blurred, and compared with a running-average background. Pure: `now` is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from common.errors import ConfigError

POLICIES = ("every", "motion", "rate")


@dataclass(frozen=True)
class GatePolicy:
    """When a camera's frames go to the detector."""

    mode: str = "every"  # every | motion | rate
    max_per_s: float = 0.0  # rate: at most this many detections per second
    pixel_threshold: int = 20  # grey levels a pixel must differ from the background to count as moving
    min_area: float = 0.003  # fraction of the frame that must move to call it motion
    hold_s: float = 2.0  # keep detecting this long after the last motion (people stop walking)
    keyframe_s: float = 1.0  # detect at least this often in a still scene: someone standing still is still seen
    learn_rate: float = 0.05  # how fast the background absorbs a change

    def __post_init__(self) -> None:
        if self.mode not in POLICIES:
            raise ConfigError(f"detect policy must be one of {', '.join(POLICIES)}, got {self.mode!r}")
        if self.mode == "rate" and self.max_per_s <= 0:
            raise ConfigError("rate policy needs a positive rate, e.g. rate:2 (detections per second)")
        if not 0 < self.min_area < 1 or not 0 < self.learn_rate <= 1 or self.hold_s < 0 or self.keyframe_s < 0:
            raise ConfigError("motion settings out of range")


def parse_policy(text: str) -> GatePolicy:
    """'every', 'motion', 'motion:0.01' (min moving area), or 'rate:2' (detections per second)."""
    mode, _, arg = text.strip().lower().partition(":")
    try:
        if mode == "rate":
            return GatePolicy("rate", max_per_s=float(arg or "0"))
        if mode == "motion" and arg:
            return GatePolicy("motion", min_area=float(arg))
    except ValueError:
        raise ConfigError(f"bad detect policy {text!r}: the argument must be a number") from None
    if arg:
        raise ConfigError(f"detect policy {mode!r} takes no argument, got {text!r}")
    return GatePolicy(mode)


@dataclass(frozen=True)
class Motion:
    """What the gate measured on one frame."""

    score: float  # fraction of the frame that moved, 0..1
    regions: tuple[tuple[float, float, float, float], ...]  # moving areas, x, y, w, h in 0..1


@dataclass
class MotionGate:
    """One camera's background model and gating state."""

    policy: GatePolicy = field(default_factory=GatePolicy)
    _background: np.ndarray | None = None
    _last_motion: float = float("-inf")
    _last_detect: float = float("-inf")

    def measure(self, jpeg: bytes) -> Motion | None:
        """Motion in this frame against the background (None if the bytes do not decode)."""
        small = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
        if small is None:
            return None
        small = cv2.GaussianBlur(small, (5, 5), 0).astype(np.float32)
        if self._background is None or self._background.shape != small.shape:
            self._background = small
            return Motion(1.0, ((0.0, 0.0, 1.0, 1.0),))  # nothing to compare with yet: assume motion
        mask = (cv2.absdiff(small, self._background) > self.policy.pixel_threshold).astype(np.uint8)
        cv2.accumulateWeighted(small, self._background, self.policy.learn_rate)
        return Motion(float(mask.mean()), _regions(mask))

    def decide(self, motion: Motion | None, now: float) -> str:
        """'' to detect this frame, or the reason to skip it ('no motion', 'rate limit')."""
        policy = self.policy
        if policy.mode == "rate":
            if now - self._last_detect < 1.0 / policy.max_per_s:
                return "rate limit"
        elif policy.mode == "motion":
            if motion is None or motion.score >= policy.min_area:
                self._last_motion = now
            still = now - self._last_motion > policy.hold_s
            due = policy.keyframe_s and now - self._last_detect >= policy.keyframe_s
            if still and not due:
                return "no motion"
        self._last_detect = now
        return ""


MAX_REGIONS = 8


def _regions(mask: np.ndarray) -> tuple[tuple[float, float, float, float], ...]:
    """The largest moving blobs as normalised boxes."""
    if not mask.any():
        return ()
    h, w = mask.shape
    grown = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(grown, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = sorted((cv2.boundingRect(c) for c in contours), key=lambda b: b[2] * b[3], reverse=True)
    return tuple((round(x / w, 4), round(y / h, 4), round(bw / w, 4), round(bh / h, 4))
                 for x, y, bw, bh in boxes[:MAX_REGIONS])
