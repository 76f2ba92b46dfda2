"""Video files: H.264 MP4 writing (browser-ready), streaming decode, probing, and clear decode errors."""

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import psutil
import pytest

from cluster.local import packaged_clip
from cluster.testdata import clip_with_sound
from common.errors import DecodeError
from common.video import H264Writer, VideoInfo, add_audio, iter_frames, probe, thumbnail_jpeg, write_gif


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


def spans_s(path: Path | str) -> dict[str, tuple[float, float]]:
    """(first time, duration) in seconds of the first video and audio streams, from their packets."""
    out = {}
    with av.open(str(path)) as f:
        streams = {"video": f.streams.video[0], "audio": f.streams.audio[0]}
        times: dict[str, list] = {"video": [], "audio": []}
        for p in f.demux(*streams.values()):
            if p.size and p.pts is not None:
                kind = "video" if p.stream is streams["video"] else "audio"
                times[kind].append((p.pts * p.time_base, (p.pts + (p.duration or 0)) * p.time_base))
    for kind, spans in times.items():
        start = min(a for a, _ in spans)
        out[kind] = (float(start), float(max(b for _, b in spans) - start))
    return out


def reencode(src: str, out: Path) -> Path:
    """What a file job writes before its sound goes back in: the source's frames as a video-only MP4."""
    info = probe(src)
    with H264Writer(out, width=info.width, height=info.height, fps=info.fps) as w:
        for _, frame in iter_frames(src):
            w.write(frame)
    return out


@pytest.mark.parametrize("codec,container,status", [
    ("aac", "mp4", "copied"), ("mp3", "mp4", "copied"),
    ("aac", "mpegts", "copied"),  # ADTS AAC, and a video that starts at 0.08 s: the sound moves with it
    ("pcm_s16le", "matroska", "transcoded pcm_s16le to aac")])
def test_the_sound_track_comes_back_whole_and_in_step(tmp_path, codec, container, status):
    src = clip_with_sound(tmp_path / f"in.{container}", seconds=2.0, fps=25, audio_codec=codec, container=container)
    out = reencode(src, tmp_path / "out.mp4")
    assert add_audio(out, src) == status
    with av.open(str(out)) as f:
        assert f.streams.video[0].codec_context.name == "h264"
        assert f.streams.audio[0].codec_context.codec.canonical_name == ("mp3" if codec == "mp3" else "aac")
        frames = sum(1 for p in f.demux(f.streams.video[0]) if p.size)
    assert frames == 50
    source, got = spans_s(src), spans_s(out)
    frame_s = 1 / 25
    # as long as the source's sound, and as far from the first picture (the output's pictures start at 0)
    assert abs(got["audio"][1] - source["audio"][1]) <= frame_s, (source, got)
    assert abs(got["audio"][0] - (source["audio"][0] - source["video"][0])) <= frame_s, (source, got)
    assert abs(got["audio"][1] - 2.0) <= 0.1 and got["video"][0] == 0.0
    assert out.read_bytes()[4:8] == b"ftyp" and b"moov" in out.read_bytes()[:4096]  # still fast-start
    assert not list(tmp_path.glob(".*.part"))


def test_a_source_file_object_works_too(tmp_path):
    src = clip_with_sound(tmp_path / "in.mp4")
    out = reencode(src, tmp_path / "out.mp4")
    with open(src, "rb") as f:
        assert add_audio(out, f) == "copied"
    assert abs(spans_s(out)["audio"][1] - spans_s(src)["audio"][1]) <= 1 / 25


def test_a_silent_source_leaves_the_video_as_it_was(clip, tmp_path):
    path, _ = clip
    out = tmp_path / "copy.mp4"
    out.write_bytes(path.read_bytes())
    assert add_audio(out, path) == "none"
    assert out.read_bytes() == path.read_bytes()


def test_an_unreadable_source_drops_the_sound_says_why_and_keeps_the_video(clip, tmp_path):
    path, _ = clip
    out = tmp_path / "copy.mp4"
    out.write_bytes(path.read_bytes())
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00not a video" * 100)
    status = add_audio(out, garbage)
    assert status.startswith("dropped: ") and "garbage.bin" in status
    assert out.read_bytes() == path.read_bytes() and not list(tmp_path.glob(".*.part"))
