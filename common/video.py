"""Video files: write BGR frames to a browser-ready H.264 MP4, and decode videos back to BGR frames.

Both directions stream one frame at a time through PyAV (libx264 in-process), so memory does not
grow with the length of the video. Every PyAV/FFmpeg failure while reading surfaces as
`DecodeError` with a message saying which input failed and why. `add_audio` gives a finished MP4
the input's sound track back, packets copied (or re-encoded to AAC when MP4 cannot carry them).
"""

from __future__ import annotations

import heapq
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import av.error
import cv2
import numpy as np

from common.errors import DecodeError
from common.imageinfo import MAX_IMAGE_PIXELS, ImageTooLarge

log = logging.getLogger(__name__)

CRF = 23  # libx264 constant rate factor: 0 lossless, 23 default, 51 worst
PRESET = "veryfast"
MAX_FPS_DENOMINATOR = 1001  # float rates snap to the nearest fraction with at most this denominator
THUMBNAIL_JPEG_QUALITY = 85
MP4_AUDIO_COPY = frozenset({"aac", "mp3"})  # MP4 carries these and browsers play them: copied untouched
AAC_LAYOUTS = {"1 channels": "mono", "2 channels": "stereo"}  # unordered layouts, named so the AAC encoder takes them

Source = str | os.PathLike[str] | BinaryIO


@dataclass(frozen=True)
class VideoInfo:
    """What a video's container says about its first video stream."""

    width: int
    height: int
    fps: Fraction  # frames per second; Fraction(0) if the container does not say
    frames: int  # 0 if the container does not say
    codec: str  # FFmpeg codec name, e.g. "h264"


def exact_rate(fps: float | Fraction) -> Fraction:
    """`fps` as an exact Fraction: 29.97002997 becomes 30000/1001; Fractions pass unchanged."""
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(MAX_FPS_DENOMINATOR)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    return rate


def even_size(width: int, height: int) -> tuple[int, int]:
    """The encoded size: yuv420p needs even dimensions, so an odd one grows by one pixel."""
    return width + width % 2, height + height % 2


def pad_to_even(bgr: np.ndarray) -> np.ndarray:
    """`bgr` with its last row/column repeated once where the size is odd (no pixel is dropped)."""
    h, w = bgr.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return bgr
    return cv2.copyMakeBorder(bgr, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)


class H264Writer:
    """Streams BGR frames into an MP4 (H.264, yuv420p, moov first) that browsers play directly.

    Odd widths or heights are padded by one pixel (the last column/row repeated), so the file is
    `even_size(width, height)` and keeps every input pixel. `path` must be a seekable file:
    `+faststart` rewrites it on close to move the index in front of the media data.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        width: int,
        height: int,
        fps: float | Fraction,
        crf: int = CRF,
        preset: str = PRESET,
    ) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        self.path = Path(path)
        self.width, self.height = width, height
        self.fps = exact_rate(fps)
        self.frames_written = 0
        self._container = av.open(str(self.path), mode="w", format="mp4", container_options={"movflags": "+faststart"})
        try:
            self._stream = self._add_stream(crf=crf, preset=preset)
        except BaseException:
            self._container.close()
            raise

    def _add_stream(self, *, crf: int, preset: str) -> av.video.stream.VideoStream:
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.width, stream.height = even_size(self.width, self.height)
        stream.pix_fmt = "yuv420p"
        stream.time_base = 1 / self.fps  # one tick per frame: pts = frame index, exact for 30000/1001
        stream.codec_context.time_base = 1 / self.fps
        stream.options = {"crf": str(crf), "preset": preset}
        return stream

    def write(self, bgr: np.ndarray) -> None:
        """Encode one BGR uint8 frame of exactly height x width x 3."""
        if self._container is None:
            raise ValueError(f"{self.path}: write() after close()")
        if bgr.dtype != np.uint8 or bgr.shape != (self.height, self.width, 3):
            raise ValueError(
                f"{self.path}: expected a {self.height}x{self.width}x3 uint8 frame, got {bgr.shape} {bgr.dtype}"
            )
        # OpenCV's BGR->I420 (BT.601 limited range, what decoders assume) is ~10x faster than swscale's.
        i420 = cv2.cvtColor(pad_to_even(bgr), cv2.COLOR_BGR2YUV_I420)
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts = self.frames_written
        self._container.mux(self._stream.encode(frame))
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder's delayed frames and finish the file (moov moved to the front)."""
        if self._container is None:
            return
        container, self._container = self._container, None
        try:
            container.mux(self._stream.encode(None))
        finally:
            container.close()
        log.debug("%s: wrote %d frames at %s fps", self.path, self.frames_written, self.fps)

    def __enter__(self) -> H264Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _name(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "name", None) or type(source).__name__


def _open(source: Source) -> av.container.InputContainer:
    """Open `source` for reading; a missing path is FileNotFoundError, anything else DecodeError."""
    if isinstance(source, (str, os.PathLike)):
        if not Path(source).is_file():
            raise FileNotFoundError(f"no such video file: {source}")
        source = os.fspath(source)
    try:
        return av.open(source, mode="r")
    except av.error.FFmpegError as e:
        raise DecodeError(f"{_name(source)}: not a readable video container ({e})") from e


def _video_stream(container: av.container.InputContainer, name: str) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise DecodeError(f"{name}: the container has no video stream")
    return container.streams.video[0]


def probe(source: Source) -> VideoInfo:
    """Size, rate, frame count and codec of the first video stream, from the container headers."""
    name = _name(source)
    with _open(source) as container:
        stream = _video_stream(container, name)
        rate = stream.average_rate or stream.guessed_rate or Fraction(0)
        codec = stream.codec_context.name
        return VideoInfo(stream.width, stream.height, Fraction(rate), stream.frames or 0, codec)


def iter_frames(source: Source, max_pixels: int = MAX_IMAGE_PIXELS) -> Iterator[tuple[int, np.ndarray]]:
    """Decode `source` (a path or a binary file object) to (index, BGR frame) pairs, one at a time.

    Raises DecodeError for a non-video input, a corrupt stream, a file that ends before the number
    of frames its header announces (truncated), or a stream whose declared frame size is over
    `max_pixels` (ImageTooLarge, before any frame is decoded).
    """
    name = _name(source)
    with _open(source) as container:
        stream = _video_stream(container, name)
        w, h = stream.codec_context.width, stream.codec_context.height
        if w * h > max_pixels:
            raise ImageTooLarge(f"{name}: frames of {w}x{h} pixels are over the limit of {max_pixels} pixels")
        stream.thread_type = "AUTO"
        announced = stream.frames or 0
        index = 0
        try:
            for frame in container.decode(stream):
                if frame.width * frame.height > max_pixels:  # a stream may change size mid-way
                    raise ImageTooLarge(f"{name}: frame {index} is {frame.width}x{frame.height} pixels, over "
                                        f"the limit of {max_pixels}")
                yield index, frame.to_ndarray(format="bgr24")
                index += 1
        except av.error.FFmpegError as e:
            raise DecodeError(f"{name}: decoding failed after {index} frames ({e})") from e
    if announced and index < announced:
        raise DecodeError(f"{name}: truncated: decoded {index} of the {announced} frames the header announces")


def add_audio(video: str | os.PathLike[str], source: Source) -> str:
    """Give the finished MP4 `video` the first audio stream of `source` (the video it was made from: a
    path, or a binary file object at its start), rewriting `video` in place; its video is copied as is.

    AAC and MP3 packets are copied untouched; any other codec is re-encoded to AAC. The sound keeps
    its place against the pictures: it is shifted by the source video's start time, as the MP4's
    frames start at 0. Returns what happened, for the job's metrics: "none" (the source has no
    audio), "copied", "transcoded <codec> to aac", or "dropped: <why>" (logged; `video` is then left
    as it was)."""
    video = Path(video)
    tmp = video.with_name(f".{video.name}.audio.part")
    try:
        with _open(source) as src:
            if not src.streams.audio:
                return "none"
            status = _remux_with_audio(video, src, tmp)
        os.replace(tmp, video)
        return status
    except (av.error.FFmpegError, DecodeError, OSError, ValueError) as e:
        log.warning("%s: the output has no sound: the audio could not be carried over (%s)", _name(source), e)
        return f"dropped: {e}"
    finally:
        tmp.unlink(missing_ok=True)


def _remux_with_audio(video: Path, src: av.container.InputContainer, out_path: Path) -> str:
    """Write `out_path`: the video packets of `video` and the first audio stream of `src`, interleaved
    by time; returns "copied" or "transcoded <codec> to aac"."""
    audio = src.streams.audio[0]
    shift_s = _start_s(src.streams.video[0]) if src.streams.video else 0.0
    codec = audio.codec_context.codec.canonical_name  # "mp3", where the decoder's own name is "mp3float"
    with av.open(str(video)) as vin, av.open(str(out_path), mode="w", format="mp4",
                                             container_options={"movflags": "+faststart"}) as out:
        pictures = _copied(vin, vin.streams.video[0], out.add_stream_from_template(vin.streams.video[0]), 0.0)
        if codec in MP4_AUDIO_COPY:
            sound, status = _copied(src, audio, out.add_stream_from_template(audio), shift_s), "copied"
        else:
            layout = AAC_LAYOUTS.get(audio.layout.name, audio.layout.name)
            aac = out.add_stream("aac", rate=audio.rate, layout=layout)
            sound, status = _encoded(src, audio, aac, shift_s), f"transcoded {codec} to aac"
        for _, packet in heapq.merge(_timed(pictures), _timed(sound), key=lambda item: item[0]):
            out.mux(packet)
    return status


def _start_s(stream: av.stream.Stream) -> float:
    """When a stream's first frame is due, in seconds (0 when the container does not say)."""
    return float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0


def _copied(container: av.container.InputContainer, stream: av.stream.Stream, into: av.stream.Stream,
            shift_s: float) -> Iterator[av.Packet]:
    """The packets of `stream`, moved `shift_s` seconds earlier and re-addressed to the output stream `into`."""
    for packet in container.demux(stream):
        if not packet.size:  # the demuxer's end-of-stream marker
            continue
        if shift_s and packet.time_base:
            delta = round(shift_s / packet.time_base)
            packet.pts = None if packet.pts is None else packet.pts - delta
            packet.dts = None if packet.dts is None else packet.dts - delta
        packet.stream = into
        yield packet


def _encoded(container: av.container.InputContainer, stream: av.stream.Stream, into: av.stream.Stream,
             shift_s: float) -> Iterator[av.Packet]:
    """The audio of `stream` decoded and encoded by the output stream `into`, `shift_s` seconds earlier."""
    for packet in container.demux(stream):
        for frame in packet.decode():
            if shift_s and frame.pts is not None and frame.time_base:
                frame.pts -= round(shift_s / frame.time_base)
            yield from into.encode(frame)
    yield from into.encode(None)


def _timed(packets: Iterable[av.Packet]) -> Iterator[tuple[float, av.Packet]]:
    """(seconds, packet) pairs to interleave streams by; a packet without a time takes the previous one's."""
    t = float("-inf")
    for packet in packets:
        stamp = packet.dts if packet.dts is not None else packet.pts
        if stamp is not None and packet.time_base:
            t = float(stamp * packet.time_base)
        yield t, packet


def write_gif(frames: Iterable[np.ndarray], path: str | os.PathLike[str], fps: float | Fraction) -> int:
    """Write BGR frames (all the same size) as an animated GIF preview; returns the frame count."""
    rate = exact_rate(fps)
    count = 0
    with av.open(str(path), mode="w", format="gif") as container:
        stream = None
        for bgr in frames:
            if stream is None:
                stream = container.add_stream("gif", rate=rate)
                stream.height, stream.width = bgr.shape[:2]
                stream.pix_fmt = "rgb8"
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")
            frame.pts = count
            container.mux(stream.encode(frame))
            count += 1
        if stream is not None:
            container.mux(stream.encode(None))
    return count


def thumbnail_jpeg(bgr: np.ndarray, max_width: int = 320) -> bytes:
    """A JPEG of `bgr` scaled down (never up) to at most `max_width` pixels wide."""
    h, w = bgr.shape[:2]
    if w > max_width:
        bgr = cv2.resize(bgr, (max_width, max(1, round(h * max_width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, THUMBNAIL_JPEG_QUALITY])
    if not ok:
        raise ValueError("OpenCV could not encode the thumbnail as JPEG")
    return buf.tobytes()


__all__ = [
    "H264Writer",
    "add_audio",
    "VideoInfo",
    "exact_rate",
    "even_size",
    "iter_frames",
    "probe",
    "thumbnail_jpeg",
    "write_gif",
]
