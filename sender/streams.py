"""The live streams a LiveSource connects to: a network stream (RTSP, HTTP) read with PyAV, a camera
device read with OpenCV, and a named pipe an ffmpeg writes into. Each opens in its constructor (or
raises SourceError) and reads with a timeout, so a stop is never kept waiting for long."""

from __future__ import annotations

import fcntl
import logging
import os
import select
import stat
import sys
from collections import Counter
from pathlib import Path

import av
import cv2
import numpy as np

from common.errors import SourceError
from sender.credentials import StreamAddress
from sender.framing import FifoSpec

log = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 4.0  # connect, log in and learn the format: a blocked open delays a stop by this at most
READ_TIMEOUT_S = 2.0  # no packet for this long (twice, as FFmpeg retries once): the stream is down
PROBE_US = 1_000_000  # how much of a live stream FFmpeg reads to learn its format (its default is 5 s)
RTSP_TRANSPORTS = ("tcp", "udp")
FIFO_POLL_MS = 200
FIFO_READ_BYTES = 1024 * 1024
FIFO_PIPE_BYTES = 1024 * 1024  # asked of the kernel so a writer of big raw frames blocks less


def _why(e: av.error.FFmpegError, timeout_s: float) -> str:
    """What went wrong, from FFmpeg's error: its text only. str(e) would also quote the URL, and with
    it the password."""
    if isinstance(e, av.error.ExitError):  # the timeout's interrupt
        return f"no answer within {timeout_s:.0f} s"
    return e.strerror or type(e).__name__


class NetworkStream:
    """An RTSP or HTTP(S) stream through PyAV. It takes FFmpeg's options per stream (rtsp_transport)
    and an open and a read timeout, and says why an open failed (refused, 401, ...)."""

    def __init__(self, address: StreamAddress, *, rtsp_transport: str = "tcp") -> None:
        options = {"analyzeduration": str(PROBE_US)}
        if address.template.lower().startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = rtsp_transport
        try:
            self.container = av.open(address.url(), options=options, timeout=(OPEN_TIMEOUT_S, READ_TIMEOUT_S))
        except av.error.FFmpegError as e:
            raise SourceError(_why(e, OPEN_TIMEOUT_S)) from None  # the cause quotes the secret URL
        if not self.container.streams.video:
            self.container.close()
            raise SourceError("the stream has no video")
        video = self.container.streams.video[0]
        video.thread_type = "AUTO"
        rate = video.average_rate or video.guessed_rate
        self.fps = float(rate) if rate and 0 < rate <= 240 else 0.0
        self._frames = self.container.decode(video)

    def read(self) -> np.ndarray | None:
        try:
            frame = next(self._frames)
        except StopIteration:
            raise SourceError("the stream ended") from None
        except av.error.FFmpegError as e:
            raise SourceError(_why(e, READ_TIMEOUT_S)) from None
        return frame.to_ndarray(format="bgr24")

    def close(self) -> None:
        self.container.close()


class DeviceStream:
    """A camera device (/dev/videoN) through OpenCV."""

    def __init__(self, index: int) -> None:
        device = f"/dev/video{index}"
        if sys.platform.startswith("linux") and not os.path.exists(device):
            raise SourceError(f"{device} does not exist")  # said here: OpenCV would warn on stderr at every retry
        self.cap = cv2.VideoCapture(index, cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY)
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(f"cannot open camera {index}")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps <= 240 else 0.0

    def read(self) -> np.ndarray | None:
        ok, frame = self.cap.read()
        if not ok:
            raise SourceError("the camera stopped delivering frames")
        return frame

    def close(self) -> None:
        self.cap.release()


def make_fifo(path: str) -> None:
    """Create the named pipe (mode 0600) unless it exists; ValueError when something else is there."""
    try:
        os.mkfifo(path, 0o600)
        log.info("created the pipe %s", path)
    except FileExistsError:
        if not stat.S_ISFIFO(os.stat(path).st_mode):
            raise ValueError(f"{path} exists and is not a named pipe (make one with mkfifo)") from None


class FifoStream:
    """A named pipe some writer (ffmpeg) writes frames into. Opened without waiting for a writer; a
    writer that goes away ends this stream (the LiveSource opens the pipe again for the next one)."""

    def __init__(self, spec: FifoSpec, counters: Counter[str]) -> None:
        self.spec, self.counters, self.fps = spec, counters, 0.0  # a pipe does not say
        try:
            if not Path(spec.path).exists():
                make_fifo(spec.path)  # removed while we ran: make it again
            self.fd = os.open(spec.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, ValueError) as e:
            raise SourceError(f"cannot open the pipe: {getattr(e, 'strerror', None) or e}") from None
        if not stat.S_ISFIFO(os.fstat(self.fd).st_mode):
            os.close(self.fd)
            raise SourceError(f"{spec.path} is not a named pipe")
        try:
            fcntl.fcntl(self.fd, fcntl.F_SETPIPE_SZ, FIFO_PIPE_BYTES)
        except OSError:  # above /proc/sys/fs/pipe-max-size for a user: the default size works too
            pass
        self._cutter = spec.splitter()
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)

    def read(self) -> np.ndarray | None:
        if not self._poll.poll(FIFO_POLL_MS):
            return None  # no writer yet, or a quiet one
        try:
            data = os.read(self.fd, FIFO_READ_BYTES)
        except BlockingIOError:
            return None
        if not data:
            raise SourceError("the writer closed the pipe")
        frames = self._cutter.feed(data)
        if self._cutter.counters:
            self.counters.update(self._cutter.counters)
            self._cutter.counters.clear()
        if not frames:
            return None
        self.counters["source_skipped"] += len(frames) - 1  # a burst: only the newest is worth decoding
        img = self.spec.decode(frames[-1])
        if img is None:
            self.counters["malformed"] += 1
        return img

    def close(self) -> None:
        if self._cutter.pending:
            self.counters["partial_frames"] += 1  # the writer went away mid-frame
        os.close(self.fd)
