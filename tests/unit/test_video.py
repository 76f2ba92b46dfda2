"""Video files: H.264 MP4 writing (browser-ready), streaming decode, probing, and clear decode errors."""

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import psutil
import pytest

from cluster.local import packaged_clip
from common.errors import DecodeError
from receiver.video import H264Writer, VideoInfo, iter_frames, probe, thumbnail_jpeg, write_gif


def synthetic(i: int, width: int = 320, height: int = 240) -> np.ndarray:
    """A smooth frame: gradients and a box that moves with `i`."""
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (xx * 255 // max(1, width - 1)).astype(np.uint8)
    img[..., 1] = (yy * 255 // max(1, height - 1)).astype(np.uint8)
    img[..., 2] = 128
    cv2.rectangle(img, (10 + 2 * i, 60), (70 + 2 * i, 140), (240, 240, 240), -1)
    return img


def write(path: Path, n: int, *, width: int = 320, height: int = 240, fps=25) -> list[np.ndarray]:
    frames = [synthetic(i, width, height) for i in range(n)]
    with H264Writer(path, width=width, height=height, fps=fps) as w:
        for f in frames:
            w.write(f)
    return frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    return path, write(path, 50)


def test_written_file_is_browser_ready_h264_with_every_frame_at_the_given_rate(clip):
    path, _ = clip
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert c.format.name.startswith("mov,mp4")
        assert s.codec_context.name == "h264"
        assert s.codec_context.pix_fmt == "yuv420p"
        assert (s.width, s.height) == (320, 240)
        assert s.frames == 50
        assert s.average_rate == 25
        assert sum(1 for _ in c.decode(s)) == 50


def test_faststart_puts_moov_before_mdat(clip):
    data = clip[0].read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")


def test_frames_read_back_close_to_the_originals(clip):
    path, originals = clip
    decoded = list(iter_frames(path))
    assert [i for i, _ in decoded] == list(range(50))
    for i, bgr in decoded:
        assert bgr.shape == (240, 320, 3) and bgr.dtype == np.uint8
        assert np.abs(bgr.astype(int) - originals[i]).mean() < 8


def test_exact_ntsc_rate_is_preserved(tmp_path):
    path = tmp_path / "ntsc.mp4"
    write(path, 30, fps=Fraction(30000, 1001))
    assert probe(path).fps == Fraction(30000, 1001)
    float_path = tmp_path / "ntsc_float.mp4"
    write(float_path, 30, fps=30000 / 1001)
    assert probe(float_path).fps == Fraction(30000, 1001)


def test_odd_size_is_padded_by_one_pixel_repeating_the_last_row_and_column(tmp_path):
    path = tmp_path / "odd.mp4"
    originals = write(path, 10, width=321, height=241)
    assert probe(path) == VideoInfo(322, 242, Fraction(25), 10, "h264")
    for i, bgr in iter_frames(path):
        assert np.abs(bgr[:241, :321].astype(int) - originals[i]).mean() < 8
        assert np.abs(bgr[:, -1].astype(int) - bgr[:, -2]).mean() < 8  # padding repeats the edge


def test_writer_rejects_a_frame_of_the_wrong_size_and_writes_after_close(tmp_path):
    w = H264Writer(tmp_path / "x.mp4", width=320, height=240, fps=25)
    with pytest.raises(ValueError, match="320x3"):
        w.write(np.zeros((200, 320, 3), np.uint8))
    w.write(synthetic(0))
    w.close()
    w.close()  # idempotent
    with pytest.raises(ValueError, match="after close"):
        w.write(synthetic(1))
    assert probe(tmp_path / "x.mp4").frames == 1


def test_packaged_clip_decodes_from_a_path_and_from_a_file_object():
    path = packaged_clip("bikes.mp4")
    assert probe(path) == VideoInfo(640, 272, Fraction(25), 250, "h264")
    with open(path, "rb") as f:
        assert probe(f).frames == 250
    for source in (path, str(path)):
        shapes = {bgr.shape for _, bgr in iter_frames(source)}
        assert shapes == {(272, 640, 3)}
    with open(path, "rb") as f:
        indexes = [i for i, _ in iter_frames(f)]
    assert indexes == list(range(250))


@pytest.mark.parametrize("data", [b"", b"not a video at all " * 500, bytes(range(256)) * 40])
def test_garbage_raises_decode_error(tmp_path, data):
    path = tmp_path / "garbage.mp4"
    path.write_bytes(data)
    with pytest.raises(DecodeError, match="garbage.mp4: not a readable video"):
        probe(path)
    with pytest.raises(DecodeError, match="garbage.mp4: not a readable video"):
        list(iter_frames(path))


def test_truncated_file_raises_decode_error_saying_so(clip, tmp_path):
    data = clip[0].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DecodeError, match=r"cut.mp4: truncated: decoded \d+ of the 50 frames"):
        list(iter_frames(cut))
    header_only = tmp_path / "header.mp4"
    header_only.write_bytes(data[:100])
    with pytest.raises(DecodeError, match="header.mp4"):
        list(iter_frames(header_only))


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "nope.mp4")


def test_memory_does_not_grow_with_frame_count(tmp_path):
    proc = psutil.Process()
    path = tmp_path / "long.mp4"
    frame = synthetic(0)

    def encode_decode(n: int) -> int:
        with H264Writer(path, width=320, height=240, fps=25) as w:
            for i in range(n):
                frame[0, 0, 0] = i % 256  # cheap change so frames are not identical
                w.write(frame)
        return sum(1 for _ in iter_frames(path))

    assert encode_decode(30) == 30  # warm up codec and allocator
    before = proc.memory_info().rss
    assert encode_decode(300) == 300
    grown_mb = (proc.memory_info().rss - before) / 2**20
    assert grown_mb < 40, f"RSS grew {grown_mb:.1f} MB over 300 frames (300 raw frames would be ~66 MB)"


def test_gif_preview_and_jpeg_thumbnail(tmp_path):
    path = tmp_path / "preview.gif"
    assert write_gif((synthetic(i) for i in range(8)), path, fps=10) == 8
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "gif"
        assert sum(1 for _ in c.decode(video=0)) == 8
    jpeg = thumbnail_jpeg(np.zeros((480, 640, 3), np.uint8), max_width=320)
    assert jpeg[:2] == b"\xff\xd8"
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (240, 320, 3)
    small = thumbnail_jpeg(np.zeros((100, 200, 3), np.uint8), max_width=320)
    assert cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_COLOR).shape == (100, 200, 3)
