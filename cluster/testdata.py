"""Real pictures shipped by packages, and the facts about them, for the accuracy tests and bench.

scikit-image is installed without its dependencies and never imported: only its data files are read.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

Box = tuple[float, float, float, float]  # x, y, w, h

# Boxes inside astronaut.png (512x512), facts measured once and checked by eye on a saved PNG: the face
# stage on the original image returns exactly ASTRONAUT_FACE (chin to hairline, ear to ear); the person
# box is drawn by eye from the top of the hair to the bottom edge, left arm to right shoulder (the
# helmet she holds and the flag are not her). The person stage on the original returns
# (6, 21, 359, 460): IoU 0.89 with it.
ASTRONAUT_FACE: Box = (177, 67, 93, 93)
ASTRONAUT_PERSON: Box = (18, 14, 350, 498)
ASTRONAUT_SIZE = 512


def skimage_data() -> Path:
    """The folder of scikit-image's sample pictures."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("scikit-image is not installed: run `make setup` (it ships the test pictures)")
    return Path(spec.origin).parent / "data"


def sample_image(name: str) -> np.ndarray:
    """A BGR picture from scikit-image's data folder."""
    path = skimage_data() / name
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read {path}")
    return image


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def cut_clip(src: Path | str, dst: Path | str, start: int, n: int, fps: float = 25.0) -> str:
    """Frames start..start+n of a real clip, written as a clip of its own (mp4v, same size)."""
    cap = cv2.VideoCapture(str(src))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    out = None
    try:
        for _ in range(n):
            ok, frame = cap.read()
            if not ok:
                break
            if out is None:
                out = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, frame.shape[1::-1])
            out.write(frame)
    finally:
        cap.release()
        if out is not None:
            out.release()
    if out is None:
        raise FileNotFoundError(f"could not read frames from {src}")
    return str(dst)


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 16x16 JPEG whose frame header is rewritten to claim width x height pixels: a few hundred
    bytes that a decoder without a size check would expand to width x height x 3 (a decompression bomb)."""
    import struct

    data = bytearray(cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))[1].tobytes())
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def clip_with_sound(path: Path | str, *, seconds: float = 2.0, fps: int = 25, size: tuple[int, int] = (160, 120),
                    audio_codec: str = "aac", container: str = "mp4", sample_rate: int = 44100) -> str:
    """A small video with a sound track, made here with PyAV: a box moving across a gradient (H.264)
    and a 440 Hz sine (`audio_codec`, mono), both `seconds` long, interleaved as a muxer would."""
    import av  # only the callers that make sound tracks need PyAV

    width, height = size
    samples_per_frame = sample_rate // fps
    with av.open(str(path), mode="w", format=container) as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream(audio_codec, rate=sample_rate, layout="mono")
        for i in range(int(seconds * fps)):
            frame = np.zeros((height, width, 3), np.uint8)
            frame[:, :, 1] = np.linspace(0, 255, width, dtype=np.uint8)
            x = 4 * i % width
            cv2.rectangle(frame, (x, height // 3), (x + 20, height // 3 + 20), (255, 255, 255), -1)
            picture = av.VideoFrame.from_ndarray(frame, format="bgr24")
            picture.pts = i
            out.mux(video.encode(picture))
            start = i * samples_per_frame
            t = (start + np.arange(samples_per_frame)) / sample_rate
            sound = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :],
                                               format="flt", layout="mono")
            sound.sample_rate, sound.pts = sample_rate, start
            out.mux(audio.encode(sound))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    return str(path)
