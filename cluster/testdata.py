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


# ----- a walkway clip with known behaviour -----------------------------------------------------

WALKWAY_SIZE = (768, 432)
WALKWAY_FPS = 10
WALKWAY_ZONE = ((0.35, 0.5), (0.65, 0.5), (0.65, 1.0), (0.35, 1.0))  # the middle of the floor
WALKWAY_LINE = ((0.8, 0.2), (0.8, 1.0))  # drawn downwards: crossing to the screen's right is its 2nd direction


def walkway_clip(path: Path | str, person_height: int = 260) -> dict[str, object]:
    """Write a clip with exactly known behaviour; returns its truth.

    The astronaut (cut from astronaut.png at ASTRONAUT_PERSON, `person_height` px tall, feet 10 px
    above the bottom) is pasted on scikit-image's gravel at 768x432, 10 fps. First she walks in from
    the left to the middle (3 s), stands in WALKWAY_ZONE for 6 s, and walks out through the right
    edge (3 s), crossing WALKWAY_LINE to the right once. After 0.5 s with nobody, she walks back
    (mirrored) from the right edge to the left edge in 4 s without stopping, crossing the line to the
    left once and passing the zone in about 1.2 s. Foot positions are in the truth, per frame.
    """
    from common.video import H264Writer

    width, height = WALKWAY_SIZE
    background = cv2.resize(sample_image("gravel.png"), WALKWAY_SIZE)
    x, y, w, h = (int(v) for v in ASTRONAUT_PERSON)
    sprite = cv2.resize(sample_image("astronaut.png")[y:y + h, x:x + w], (round(w * person_height / h), person_height))
    walk_in = list(np.linspace(0.08, 0.5, 3 * WALKWAY_FPS)) + [0.5] * (6 * WALKWAY_FPS) + \
        list(np.linspace(0.5, 1.1, 4 * WALKWAY_FPS))
    gap = [None] * (WALKWAY_FPS // 2)
    walk_back = list(np.linspace(1.1, -0.1, 4 * WALKWAY_FPS))
    feet: list[float | None] = [*walk_in, *gap, *walk_back]
    with H264Writer(path, width=width, height=height, fps=WALKWAY_FPS) as out:
        for i, fx in enumerate(feet):
            frame = background.copy()
            if fx is not None:
                image = sprite if i < len(walk_in) else sprite[:, ::-1]
                left, top = round(fx * width) - image.shape[1] // 2, height - 10 - person_height
                a, b = max(left, 0), min(left + image.shape[1], width)
                if b > a:
                    frame[top:top + person_height, a:b] = image[:, a - left:b - left]
            out.write(frame)
    left_edge, right_edge = min(p[0] for p in WALKWAY_ZONE), max(p[0] for p in WALKWAY_ZONE)
    stay = sum(1 for fx in walk_in if left_edge <= fx <= right_edge) / WALKWAY_FPS  # walking in and out included
    return {"frames": len(feet), "fps": WALKWAY_FPS, "feet_x": feet, "crossings": {"right": 1, "left": 1},
            "stands_s": 6.0, "in_zone_s": stay, "zone_pass_s": 1.2}


def walkway_camera(port: int, clip: str | Path, *, dwell_s: float = 3, webhook: str = "", cross: bool = False) -> str:
    """The [cameras.walkway] section of a cluster file for the walkway clip: its zone `middle`, its line
    `exit` (directions in, out) and a dwell rule `loiter` (and a cross rule `crossing` on the line)."""
    zone = ", ".join(f"[{x}, {y}]" for x, y in WALKWAY_ZONE)
    (ax, ay), (bx, by) = WALKWAY_LINE
    text = (f'\n[cameras.walkway]\nsource = "{clip}"\nport = {port}\nfps = {WALKWAY_FPS}\npipeline = "person"\n'
            f'\n[cameras.walkway.zones.middle]\npoints = [{zone}]\n'
            f'\n[cameras.walkway.lines.exit]\na = [{ax}, {ay}]\nb = [{bx}, {by}]\ndirections = ["in", "out"]\n'
            f'\n[[rule]]\nname = "loiter"\nkind = "dwell"\nlabel = "person"\nzone = "middle"\nseconds = {dwell_s}\n')
    if webhook:
        text += f'webhook = "{webhook}"\n'
    if cross:
        text += '\n[[rule]]\nname = "crossing"\nkind = "cross"\nlabel = "person"\nline = "exit"\n'
    return text
