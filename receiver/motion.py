"""Motion gating: decide per frame whether a camera's frame is worth a detector's time.

Motion needs the camera's previous frames, which a stateless worker does not have, so the receiver
keeps a tiny grayscale background per camera. The JPEG is decoded at 1/8 scale (libjpeg skips most
of the work), blurred, and compared with a running-average background. Pure: `now` is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from common.gating import GatePolicy


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
