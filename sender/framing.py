"""Frames out of a byte stream from a pipe (pure: no I/O): concatenated JPEGs as `ffmpeg -f mjpeg` writes
them, cut at their SOI/EOI markers, or fixed-size raw frames as `ffmpeg -f rawvideo` writes them; and the
`fifo:` source syntax that says which."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from urllib.parse import parse_qsl

import cv2
import numpy as np

MAX_JPEG_BYTES = 16 * 1024 * 1024  # a longer JPEG is rejected: the splitter's buffer never holds more
MAX_RAW_FRAME_BYTES = 64 * 1024 * 1024  # 4K bgr24 is 25 MB
MAX_SIDE = 8192

SOI, EOI, SOS = 0xD8, 0xD9, 0xDA
_NO_LENGTH = {0x01, *range(0xD0, 0xD8)}  # TEM and the restart markers stand alone
# bytes per pixel (as a fraction: yuv420p has 12 bits) and the conversion to BGR
PIX_FMTS: dict[str, tuple[int, int, int | None]] = {
    "bgr24": (3, 1, None), "rgb24": (3, 1, cv2.COLOR_RGB2BGR), "gray": (1, 1, cv2.COLOR_GRAY2BGR),
    "yuv420p": (3, 2, cv2.COLOR_YUV2BGR_I420),
}


class JpegSplitter:
    """Cuts concatenated JPEGs into whole images. It walks each image's marker segments (skipping their
    lengths) and its entropy-coded data (where 0xFF is always stuffed), so bytes inside a header are never
    taken for an EOI. Bytes before an SOI are skipped and counted; an image longer than `max_bytes` is
    rejected and counted, so the buffer never holds more than `max_bytes` plus one read."""

    def __init__(self, max_bytes: int = MAX_JPEG_BYTES) -> None:
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self.counters: Counter[str] = Counter()
        self._synced = False  # buf starts with an SOI
        self._pos = 0  # where the walk through buf resumes
        self._in_scan = False  # the walk is in entropy-coded data

    @property
    def pending(self) -> int:
        """Bytes of an image begun but not finished (lost if the writer goes away now)."""
        return len(self.buf) if self._synced else 0

    def feed(self, data: bytes) -> list[bytes]:
        """Every image that `data` completes, in order."""
        self.buf += data
        out: list[bytes] = []
        while self._synced or self._sync():
            end = self._walk()
            if end is None:
                if len(self.buf) > self.max_bytes:
                    self._reject("oversize", len(self.buf))
                    continue
                break
            if end < 0:
                self._reject("malformed", 2)  # the SOI was not an image's: look for the next one after it
                continue
            out.append(bytes(self.buf[:end]))
            del self.buf[:end]
            self._synced = False
        return out

    def _sync(self) -> bool:
        """Drop bytes up to the next SOI; False when there is none yet (a trailing 0xFF is kept)."""
        i = self.buf.find(b"\xff\xd8")
        if i < 0:
            i = len(self.buf) - (1 if self.buf.endswith(b"\xff") else 0)
        if i:
            self.counters["skipped_bytes"] += i
            del self.buf[:i]
        if not self.buf.startswith(b"\xff\xd8"):
            return False
        self._synced, self._pos, self._in_scan = True, 2, False
        return True

    def _reject(self, reason: str, drop: int) -> None:
        self.counters[reason] += 1
        self.counters["skipped_bytes"] += drop
        del self.buf[:drop]
        self._synced = False

    def _walk(self) -> int | None:
        """The index just past the image's EOI; None when more bytes are needed; -1 when the bytes are
        not a JPEG's structure."""
        buf, pos = self.buf, self._pos
        while True:
            if self._in_scan:
                marker = self._scan(pos)
                if marker is None:
                    return None
                self._in_scan, pos = False, marker
            if pos + 2 > len(buf):
                self._pos = pos
                return None
            if buf[pos] != 0xFF:
                return -1
            m = buf[pos + 1]
            if m == 0xFF:  # a fill byte before a marker
                pos += 1
            elif m == EOI:
                return pos + 2
            elif m in (SOI, 0x00):
                return -1
            elif m in _NO_LENGTH:
                pos += 2
            elif pos + 4 > len(buf):
                self._pos = pos
                return None
            else:
                length = buf[pos + 2] << 8 | buf[pos + 3]
                if length < 2:
                    return -1
                pos += 2 + length  # may point past what has arrived: the check above waits for it
                self._in_scan = m == SOS

    def _scan(self, pos: int) -> int | None:
        """Where the marker ending entropy-coded data from `pos` is; None when more bytes are needed."""
        buf = self.buf
        while True:
            i = buf.find(b"\xff", pos)
            if i < 0 or i + 1 >= len(buf):
                self._pos = max(pos, len(buf)) if i < 0 else i  # pos may lie past what has arrived
                return None
            nxt = buf[i + 1]
            if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:  # a stuffed 0xFF or a restart marker: still data
                pos = i + 2
            elif nxt == 0xFF:
                pos = i + 1
            else:
                return i


class RawCutter:
    """Cuts a byte stream into frames of exactly `frame_bytes` each."""

    def __init__(self, frame_bytes: int) -> None:
        self.frame_bytes = frame_bytes
        self.buf = bytearray()
        self.counters: Counter[str] = Counter()

    @property
    def pending(self) -> int:
        return len(self.buf)

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        n = len(self.buf) // self.frame_bytes
        size = self.frame_bytes
        frames = [bytes(self.buf[i * size:(i + 1) * size]) for i in range(n)]
        del self.buf[:n * size]
        return frames


@dataclass(frozen=True)
class FifoSpec:
    """`fifo:PATH` (MJPEG), or `fifo:PATH?format=rawvideo&size=WxH&pix_fmt=bgr24`."""

    path: str
    format: str = "mjpeg"
    width: int = 0
    height: int = 0
    pix_fmt: str = "bgr24"

    @classmethod
    def parse(cls, spec: str) -> FifoSpec:
        """A FifoSpec from `fifo:...`; ValueError says what is wrong."""
        path, _, query = spec.removeprefix("fifo:").partition("?")
        if not path:
            raise ValueError("fifo: needs a path, e.g. fifo:/run/framehive/cam0.mjpeg")
        params = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
        unknown = sorted(set(params) - {"format", "size", "pix_fmt"})
        if unknown:
            raise ValueError(f"unknown fifo parameter(s) {unknown}: use format, size, pix_fmt")
        fmt = params.get("format", "mjpeg")
        if fmt == "mjpeg":
            if "size" in params or "pix_fmt" in params:
                raise ValueError("size and pix_fmt are for format=rawvideo (a JPEG says its own size)")
            return cls(path, fmt)
        if fmt != "rawvideo":
            raise ValueError(f"fifo format must be mjpeg or rawvideo, got {fmt!r}")
        return cls._raw(path, params)

    @classmethod
    def _raw(cls, path: str, params: dict[str, str]) -> FifoSpec:
        try:
            w, h = (int(v) for v in params["size"].lower().split("x"))
        except (KeyError, ValueError):
            raise ValueError("format=rawvideo needs size=WIDTHxHEIGHT, e.g. size=640x480") from None
        pix_fmt = params.get("pix_fmt", "bgr24")
        if pix_fmt not in PIX_FMTS:
            raise ValueError(f"pix_fmt must be one of {', '.join(PIX_FMTS)}, got {pix_fmt!r}")
        if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
            raise ValueError(f"size must be between 1x1 and {MAX_SIDE}x{MAX_SIDE}")
        if pix_fmt == "yuv420p" and (w % 2 or h % 2):
            raise ValueError("yuv420p needs an even width and height")
        spec = cls(path, "rawvideo", w, h, pix_fmt)
        if spec.frame_bytes > MAX_RAW_FRAME_BYTES:
            raise ValueError(f"a {w}x{h} {pix_fmt} frame is over {MAX_RAW_FRAME_BYTES >> 20} MiB")
        return spec

    @property
    def frame_bytes(self) -> int:
        """Bytes of one raw frame."""
        num, den, _ = PIX_FMTS[self.pix_fmt]
        return self.width * self.height * num // den

    def splitter(self) -> JpegSplitter | RawCutter:
        """A fresh cutter for one writer's stream."""
        return JpegSplitter() if self.format == "mjpeg" else RawCutter(self.frame_bytes)

    def decode(self, frame: bytes) -> np.ndarray | None:
        """A BGR image from one cut frame; None when a JPEG does not decode."""
        data = np.frombuffer(frame, np.uint8)
        if self.format == "mjpeg":
            return cv2.imdecode(data, cv2.IMREAD_COLOR)
        num, den, conversion = PIX_FMTS[self.pix_fmt]
        if self.pix_fmt == "yuv420p":
            return cv2.cvtColor(data.reshape(self.height * 3 // 2, self.width), conversion)
        img = data.reshape(self.height, self.width, num) if num > 1 else data.reshape(self.height, self.width)
        return img.copy() if conversion is None else cv2.cvtColor(img, conversion)

