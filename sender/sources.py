"""Frame sources for the publisher: a camera, a video file, an RTSP/HTTP stream, or synthetic frames."""

from __future__ import annotations

import logging
import os
from typing import Protocol

import cv2
import numpy as np

log = logging.getLogger(__name__)

DEFAULT_FPS = 10.0
SYNTHETIC_SIZE = (640, 480)


class FrameSource(Protocol):
    """Anything that yields BGR frames."""

    fps: float
    live: bool  # True for cameras and streams: reopen on failure instead of ending

    def read(self) -> np.ndarray | None: ...

    def close(self) -> None: ...


class CaptureSource:
    """A cv2.VideoCapture over a camera index, a file or a stream URL."""

    def __init__(self, target: int | str, *, loop: bool = False, live: bool = False) -> None:
        self.target, self.loop, self.live = target, loop, live
        self.cap = cv2.VideoCapture(target)
        if not self.cap.isOpened():
            raise OSError(f"cannot open video source {target!r}")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps <= 240 else DEFAULT_FPS

    def read(self) -> np.ndarray | None:
        ok, frame = self.cap.read()
        if ok:
            return frame
        if self.loop and not self.live:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self.cap.read()
            return frame if ok else None
        return None

    def reopen(self) -> bool:
        """Reconnect a camera or stream after a failure."""
        self.cap.release()
        self.cap = cv2.VideoCapture(self.target)
        return self.cap.isOpened()

    def close(self) -> None:
        self.cap.release()


class SyntheticSource:
    """Moving shapes and a frame counter: a source that needs no camera and no file."""

    live = False

    def __init__(self, size: tuple[int, int] = SYNTHETIC_SIZE, *, fps: float = DEFAULT_FPS,
                 max_frames: int = 0) -> None:
        self.w, self.h = size
        self.fps = fps
        self.n = 0
        self.max_frames = max_frames

    def read(self) -> np.ndarray | None:
        if self.max_frames and self.n >= self.max_frames:
            return None
        img = np.full((self.h, self.w, 3), 40, np.uint8)
        x = int((self.n * 7) % max(1, self.w - 80))
        cv2.rectangle(img, (x, self.h // 3), (x + 80, self.h // 3 + 120), (60, 180, 240), -1)
        cv2.circle(img, (self.w - x - 40, 2 * self.h // 3), 30, (200, 80, 80), -1)
        cv2.putText(img, f"framehive #{self.n}", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
        self.n += 1
        return img

    def close(self) -> None:
        pass


def open_source(spec: str, *, loop: bool = False) -> FrameSource:
    """Open `spec`: a camera index (0), a file path, an rtsp:// or http(s):// URL, or 'synthetic[:WxH]'."""
    if spec.startswith("synthetic"):
        _, _, size = spec.partition(":")
        if not size:
            return SyntheticSource()
        try:
            w, h = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise ValueError(f"synthetic size must look like synthetic:640x480, got {spec!r}") from None
        if not (16 <= w <= 7680 and 16 <= h <= 4320):
            raise ValueError("synthetic size must be between 16x16 and 7680x4320")
        return SyntheticSource((w, h))
    if spec.isdigit():
        return CaptureSource(int(spec), live=True)
    if "://" in spec:
        return CaptureSource(spec, live=True)
    if not os.path.isfile(spec):
        raise ValueError(f"no such video file: {spec}")
    return CaptureSource(spec, loop=loop)
