"""Frame sources for the publisher: a video file, synthetic frames, and live ones (a camera, an RTSP/HTTP
stream, a named pipe) that survive their camera (sender/live.py)."""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Protocol

import cv2
import numpy as np

from sender.credentials import StreamAddress
from sender.framing import FifoSpec
from sender.live import RETRY_MAX_S, Backoff, LiveSource
from sender.streams import RTSP_TRANSPORTS, DeviceStream, FifoStream, NetworkStream, make_fifo

log = logging.getLogger(__name__)

DEFAULT_FPS = 10.0
NETWORK_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
SYNTHETIC_SIZE = (640, 480)


class FrameSource(Protocol):
    """Anything that yields BGR frames."""

    fps: float
    live: bool  # a camera, stream or pipe: retried when it fails, never ends by itself

    def read(self, stop: threading.Event) -> np.ndarray | None:
        """The next frame; None at the end of a finite source, or once `stop` is set."""
        ...

    def stats(self) -> dict[str, float]:
        """Counters for the publisher's report (reconnects, offline_s, ... for a live source)."""
        ...

    def close(self) -> None: ...


class CaptureSource:
    """A video file through cv2.VideoCapture; it ends at the file's end unless looping."""

    live = False

    def __init__(self, path: str, *, loop: bool = False) -> None:
        self.path, self.loop = path, loop
        self.cap = cv2.VideoCapture(path)
        if not self.cap.isOpened():
            raise OSError(f"cannot open video file {path!r}")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps <= 240 else DEFAULT_FPS

    def read(self, stop: threading.Event) -> np.ndarray | None:
        ok, frame = self.cap.read()
        if ok:
            return frame
        if self.loop:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self.cap.read()
            return frame if ok else None
        return None

    def stats(self) -> dict[str, float]:
        return {}

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

    def read(self, stop: threading.Event) -> np.ndarray | None:
        if self.max_frames and self.n >= self.max_frames:
            return None
        img = np.full((self.h, self.w, 3), 40, np.uint8)
        x = int((self.n * 7) % max(1, self.w - 80))
        cv2.rectangle(img, (x, self.h // 3), (x + 80, self.h // 3 + 120), (60, 180, 240), -1)
        cv2.circle(img, (self.w - x - 40, 2 * self.h // 3), 30, (200, 80, 80), -1)
        cv2.putText(img, f"framehive #{self.n}", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
        self.n += 1
        return img

    def stats(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass


def open_source(spec: str, *, loop: bool = False, username: str = "", password: str = "",
                env: Mapping[str, str] | None = None, rtsp_transport: str = "tcp",
                retry_max_s: float = RETRY_MAX_S) -> FrameSource:
    """Open `spec`: a camera index (0), a file path, an rtsp:// or http(s):// URL (credentials from
    `username` and `password`, or ${VARIABLES} in the URL expanded from `env`), fifo:PATH[?...] (a named
    pipe, sender/framing.py FifoSpec), or synthetic[:WxH]. Cameras, URLs and pipes are LiveSources,
    which connect on their own thread once started. ValueError or ConfigError says what is wrong."""
    if spec.startswith("synthetic"):
        return _synthetic(spec)
    if (username or password) and "://" not in spec:
        raise ValueError("--username and --password-file are for rtsp:// and http(s):// sources")
    backoff = Backoff(max_s=retry_max_s)
    if spec.isdigit():
        index = int(spec)
        return LiveSource(f"camera {index}", lambda: DeviceStream(index), backoff=backoff)
    if spec.startswith("fifo:"):
        fifo = FifoSpec.parse(spec)
        make_fifo(fifo.path)
        counters: Counter[str] = Counter()
        return LiveSource(f"fifo:{fifo.path}", lambda: FifoStream(fifo, counters), backoff=backoff,
                          counters=counters)
    if "://" in spec:
        if not spec.lower().startswith(NETWORK_SCHEMES):
            raise ValueError(f"stream URLs must start with one of {', '.join(NETWORK_SCHEMES)}")
        if rtsp_transport not in RTSP_TRANSPORTS:
            raise ValueError(f"--rtsp-transport must be one of {', '.join(RTSP_TRANSPORTS)}")
        address = StreamAddress.from_flags(spec, username=username, password=password, env=env or {})
        return LiveSource(address.masked, lambda: NetworkStream(address, rtsp_transport=rtsp_transport),
                          backoff=backoff, scrub=address.scrub)
    if not os.path.isfile(spec):
        raise ValueError(f"no such video file: {spec}")
    return CaptureSource(spec, loop=loop)


def _synthetic(spec: str) -> SyntheticSource:
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
