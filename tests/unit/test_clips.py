"""Event clips: the recorder core (pre-roll, windows, caps, clocks) and the encoder (real PyAV, real files)."""

from __future__ import annotations

import os
import random
import struct
import threading
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.tasks import Detection
from master.media.clips import ClipConfig, ClipFrame, ClipJob, ClipRecorder
from master.media.encoder import ClipEncoder, clip_rate, draw_boxes
from master.media.store import MediaDir

# ----- the recorder --------------------------------------------------------------------------------


def recorder(**cfg) -> ClipRecorder:
    return ClipRecorder(ClipConfig(**cfg))


def feed(r: ClipRecorder, times, *, camera="cam", seq0=0, now=0.0, size=10) -> None:
    """Frames seq0, seq0+1, ... captured at `times`, `size` bytes each."""
    for i, t in enumerate(times):
        r.frame(camera, seq0 + i, t, bytes([i % 256]) * size, now)


def seqs(job: ClipJob) -> list[int]:
    return [f.seq for f in job.frames]


def test_frames_arriving_out_of_order_come_out_sorted_by_capture_time():
    r = recorder(pre_s=1.0, post_s=1.0)
    assert r.open("ev", "cam", start_at=10.0, now=0.0)
    order = list(range(20))
    random.Random(7).shuffle(order)
    for seq in order:  # 10.0 .. 11.9, shuffled
        r.frame("cam", seq, 10.0 + seq / 10, b"x", now=0.0)
    assert r.close("ev", end_at=11.0, now=0.0)
    assert r.due(now=0.0) == []
    r.frame("cam", 20, 12.0, b"x", now=0.0)  # end + post reached
    [job] = r.due(now=0.0)
    assert seqs(job) == list(range(21))
    assert [f.captured_at for f in job.frames] == sorted(f.captured_at for f in job.frames)
    assert (job.event_id, job.camera, job.start_at, job.end_at, job.reason) == ("ev", "cam", 10.0, 11.0, "post_roll")


@settings(max_examples=50, deadline=None)
@given(st.permutations(list(range(30))), st.integers(0, 29))
def test_any_arrival_order_gives_the_same_clip(order, open_after):
    """Frames before the event go through the ring, the others straight into the recording."""
    r = recorder(pre_s=1.0, post_s=0.5, ring_slack_s=10.0)
    for i, seq in enumerate(order):
        if i == open_after:
            r.open("ev", "cam", start_at=2.0, now=0.0)
        r.frame("cam", seq, seq / 10, bytes([seq]), now=0.0)  # captured 0.0 .. 2.9
    r.close("ev", end_at=2.0, now=0.0)
    r.frame("cam", 99, 9.0, b"z", now=0.0)
    [job] = r.due(now=0.0)
    assert seqs(job) == list(range(10, 26))  # 1.0 .. 2.5
    assert all(f.jpeg == bytes([f.seq]) for f in job.frames)


def test_same_capture_time_is_ordered_by_seq():
    r = recorder()
    r.open("ev", "cam", 0.0, now=0.0)
    for seq in (3, 1, 2):
        r.frame("cam", seq, 1.0, b"x", now=0.0)
    r.close("ev", 1.0, now=0.0)
    [job] = r.due(now=100.0)
    assert seqs(job) == [1, 2, 3]


def test_preroll_is_trimmed_to_its_seconds_behind_the_newest_frame():
    r = recorder(pre_s=2.0, ring_slack_s=1.0)
    feed(r, [i / 10 for i in range(100)])  # 0.0 .. 9.9
    assert r.stats()["preroll_frames"] == 31  # 6.9 .. 9.9
    r.frame("cam", 500, 1.0, b"late", now=0.0)  # far behind the ring and no recording wants it
    assert r.counters["frames_too_old"] == 1
    assert r.open("ev", "cam", start_at=9.9, now=0.0)
    r.close("ev", 9.9, now=0.0)
    [job] = r.due(now=100.0)
    assert seqs(job) == list(range(79, 100))  # pre-roll from 7.9


def test_preroll_slack_keeps_frames_for_an_event_that_opens_late():
    r = recorder(pre_s=2.0, ring_slack_s=3.0)
    feed(r, [i / 10 for i in range(100)])
    assert r.open("ev", "cam", start_at=8.0, now=0.0)  # the event began 1.9 s before the newest frame
    r.close("ev", 9.0, now=0.0)
    [job] = r.due(now=100.0)
    assert job.frames[0].captured_at == pytest.approx(6.0)


def test_preroll_is_trimmed_to_its_bytes_newest_kept():
    r = recorder(preroll_bytes=1000)
    feed(r, [i / 10 for i in range(20)], size=300)
    stats = r.stats()
    assert (stats["preroll_frames"], stats["preroll_bytes"]) == (3, 900)
    r.open("ev", "cam", 0.0, now=0.0)
    r.close("ev", 0.0, now=0.0)
    assert seqs(r.due(now=100.0)[0]) == [17, 18, 19]


def test_open_is_refused_beyond_max_open_and_counted():
    r = recorder(max_open=2)
    assert r.open("a", "cam", 0.0, now=0.0)
    assert r.open("b", "cam2", 0.0, now=0.0)
    assert r.open("a", "cam", 0.0, now=0.0)  # already open: no change, no refusal
    assert not r.open("c", "cam", 0.0, now=0.0)
    assert r.counters["clips_refused_busy"] == 1 and r.counters["clips_started"] == 2
    assert not r.is_open("c")
    assert r.cancel("a") and not r.cancel("a")
    assert r.open("c", "cam", 0.0, now=0.0)


def test_close_finishes_once_a_frame_past_the_post_roll_arrives():
    r = recorder(pre_s=1.0, post_s=2.0)
    feed(r, [0.0, 0.5, 1.0])
    r.open("ev", "cam", 1.0, now=0.0)
    feed(r, [1.5, 2.0, 3.0, 4.9], seq0=3)
    assert r.close("ev", end_at=3.0, now=1.0)
    assert r.due(now=1.0) == []  # the newest frame (4.9) is before end + post (5.0)
    r.frame("cam", 7, 5.2, b"after", now=1.0)  # past the window: finishes it, not part of it
    [job] = r.due(now=1.0)
    assert seqs(job) == [0, 1, 2, 3, 4, 5, 6]
    assert job.reason == "post_roll" and not r.is_open("ev")
    assert not r.close("ev", 3.0, now=1.0)


def test_a_close_after_the_frames_have_passed_its_post_roll_finishes_at_once():
    r = recorder(post_s=1.0)
    r.open("ev", "cam", 0.0, now=0.0)
    feed(r, [0.0, 1.0, 2.0, 3.0])
    r.close("ev", end_at=1.0, now=0.0)
    [job] = r.due(now=0.0)
    assert seqs(job) == [0, 1, 2]


def test_frames_of_other_cameras_neither_join_nor_finish_a_recording():
    r = recorder(post_s=1.0)
    r.open("ev", "cam", 0.0, now=0.0)
    r.close("ev", 0.5, now=0.0)
    feed(r, [0.0, 0.5, 9.0], camera="other")
    assert r.due(now=0.0) == []
    feed(r, [0.2, 9.0], camera="cam", seq0=100)
    assert seqs(r.due(now=0.0)[0]) == [100]


def test_close_finishes_by_the_wall_clock_when_frames_stop_coming():
    r = recorder(post_s=2.0, grace_s=10.0)
    r.open("ev", "cam", 0.0, now=100.0)
    feed(r, [0.0, 0.5], now=100.0)
    r.close("ev", end_at=0.5, now=105.0)
    assert r.due(now=116.9) == []
    [job] = r.due(now=117.0)
    assert (job.reason, job.end_at, seqs(job)) == ("grace", 0.5, [0, 1])
    assert r.counters["clips_finished_grace"] == 1


def test_an_event_never_closed_is_finished_at_max_s_plus_grace():
    r = recorder(max_s=20.0, grace_s=5.0)
    r.open("ev", "cam", 0.0, now=50.0)
    feed(r, [0.0, 1.0], now=50.0)
    assert r.due(now=74.9) == []
    [job] = r.due(now=75.0)
    assert (job.reason, job.end_at) == ("timeout", None)


def test_a_recording_with_no_frames_still_comes_out_empty():
    r = recorder()
    r.open("ev", "cam", 0.0, now=0.0)
    r.close("ev", 0.0, now=0.0)
    [job] = r.due(now=1000.0)
    assert job.frames == () and job.span_s == 0.0
    assert r.counters["clips_empty"] == 1


def test_max_s_caps_the_clip_from_the_start_of_its_preroll():
    r = recorder(pre_s=2.0, max_s=5.0)
    feed(r, [i / 2 for i in range(5)])  # 0.0 .. 2.0
    r.open("ev", "cam", start_at=2.0, now=0.0)  # window from 0.0, capped at 5.0
    feed(r, [2.5, 3.0, 3.5, 4.0, 4.5], seq0=5)
    assert r.due(now=0.0) == []
    feed(r, [5.0, 5.5], seq0=10)  # 5.0 is the clip's last; 5.5 comes before the next due()
    [job] = r.due(now=0.0)
    assert job.reason == "max_s" and job.end_at is None
    assert seqs(job) == list(range(11))
    assert job.span_s == pytest.approx(5.0)
    assert r.counters["frames_dropped_cap"] == 1


def test_clip_bytes_cap_stops_taking_frames_and_finishes_the_recording():
    r = recorder(clip_bytes=250)
    r.open("ev", "cam", 0.0, now=0.0)
    feed(r, [0.0, 0.1, 0.2], size=100)
    [job] = r.due(now=0.0)
    assert (job.reason, seqs(job)) == ("bytes", [0, 1])
    assert r.counters["frames_dropped_cap"] == 1


def test_boxes_come_later_and_travel_with_their_frame():
    r = recorder(pre_s=1.0, ring_slack_s=0.0)
    person = Detection("person", 0.9, (10, 20, 30, 40), track_id=7)
    car = Detection("car", 0.8, (1, 2, 3, 4), track_id=8)
    feed(r, [0.0, 0.5])
    assert r.boxes("cam", 1, [person], now=0.0)  # in the ring
    r.open("ev", "cam", 0.5, now=0.0)
    feed(r, [1.0, 2.0, 3.0], seq0=2)  # frames 0 and 1 leave the ring, stay in the recording
    assert r.boxes("cam", 0, [car], now=0.0)  # only the recording holds it
    assert not r.boxes("cam", 99, [car], now=0.0)
    assert not r.boxes("other", 1, [car], now=0.0)
    r.close("ev", 3.0, now=0.0)
    [job] = r.due(now=100.0)
    assert [f.detections for f in job.frames] == [(car,), (person,), (), (), ()]
    assert r.counters["boxes_attached"] == 2 and r.counters["boxes_unmatched"] == 2


def test_boxes_are_not_kept_when_drawing_is_off():
    r = recorder(draw=False)
    r.open("ev", "cam", 0.0, now=0.0)
    feed(r, [0.0])
    assert not r.boxes("cam", 0, [Detection("person", 0.9, (0, 0, 1, 1), 1)], now=0.0)
    r.close("ev", 0.0, now=0.0)
    assert r.due(now=100.0)[0].frames[0].detections == ()


def test_cancel_drops_a_recording_and_forget_finishes_the_cameras_recordings():
    r = recorder()
    feed(r, [0.0, 0.1])
    r.open("a", "cam", 0.0, now=0.0)
    r.open("b", "cam", 0.0, now=0.0)
    assert r.cancel("a")
    r.forget("cam")
    [job] = r.due(now=0.0)
    assert (job.event_id, job.reason, seqs(job)) == ("b", "forgotten", [0, 1])
    assert r.stats()["cameras"] == 0 and r.counters["clips_cancelled"] == 1


def test_duplicate_frames_are_dropped_and_counted():
    r = recorder()
    r.open("ev", "cam", 0.0, now=0.0)
    r.frame("cam", 1, 0.5, b"first", now=0.0)
    r.frame("cam", 1, 0.5, b"again", now=0.0)
    r.close("ev", 0.5, now=0.0)
    [job] = r.due(now=100.0)
    assert [f.jpeg for f in job.frames] == [b"first"]
    assert r.counters["frames_duplicate"] == 1


def test_cameras_are_bounded_least_recently_fed_dropped():
    r = recorder(max_cameras=2)
    feed(r, [0.0], camera="a")
    feed(r, [0.0], camera="b")
    feed(r, [0.1], camera="a", seq0=1)
    feed(r, [0.0], camera="c")
    assert r.stats()["cameras"] == 2 and r.counters["cameras_dropped"] == 1
    r.open("ev", "b", 0.0, now=0.0)
    r.close("ev", 0.0, now=0.0)
    assert r.due(now=100.0)[0].frames == ()  # b's pre-roll went with it


def test_stats_are_json_safe_and_describe_open_recordings():
    import json

    r = recorder()
    feed(r, [0.0, 0.1], size=5)
    r.open("ev", "cam", 0.0, now=0.0)
    stats = json.loads(json.dumps(r.stats()))
    assert stats["open"] == 1 and stats["open_bytes"] == 10 and stats["preroll_bytes"] == 10
    assert stats["recordings"] == [{"event_id": "ev", "camera": "cam", "frames": 2, "bytes": 10,
                                    "closed": False, "finished": False}]
    assert stats["counters"]["clips_started"] == 1


@pytest.mark.parametrize("bad", [{"pre_s": -1}, {"max_s": 5.0, "pre_s": 5.0}, {"grace_s": 0},
                                 {"max_open": 0}, {"clip_bytes": 0}, {"post_s": float("inf")}])
def test_config_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        ClipConfig(**bad)


def test_the_recorder_takes_frames_from_many_threads():
    r = recorder(pre_s=0.0, max_open=4)
    r.open("ev", "cam", 0.0, now=0.0)

    def worker(k: int) -> None:
        for i in range(250):
            seq = k * 250 + i
            r.frame("cam", seq, seq / 1000, b"x", now=0.0)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    r.close("ev", 1.0, now=0.0)
    [job] = r.due(now=100.0)
    assert seqs(job) == list(range(1000))


# ----- the encoder ---------------------------------------------------------------------------------


def jpeg(level: int, width: int = 320, height: int = 240) -> bytes:
    """A flat grey frame at `level`, so a decoded picture says which frame it was."""
    image = np.full((height, width, 3), level, np.uint8)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def oversized(data: bytes, width: int = 20000, height: int = 20000) -> bytes:
    """`data` with its SOF header claiming `width` x `height` (the scan data unchanged)."""
    at = data.index(b"\xff\xc0")
    return data[:at + 5] + struct.pack(">HH", height, width) + data[at + 9:]


def job_of(times, *, levels=None, event_id="ev1", camera="cam", size=(320, 240), jpegs=None, dets=None) -> ClipJob:
    levels = levels or [30 + (i * 7) % 200 for i in range(len(times))]
    frames = tuple(ClipFrame(t, i, jpegs[i] if jpegs and i in jpegs else jpeg(levels[i], *size),
                             dets[i] if dets and i in dets else ()) for i, t in enumerate(times))
    return ClipJob(event_id, camera, times[0] if times else 0.0, times[-1] if times else None, frames, "post_roll")


def top_level_boxes(path: Path) -> list[str]:
    """The MP4's top-level box types, in file order."""
    data, at, boxes = path.read_bytes(), 0, []
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        if size == 1:
            size = struct.unpack(">Q", data[at + 8:at + 16])[0]
        boxes.append(kind.decode("ascii"))
        if size < 8:
            break
        at += size
    return boxes


def decoded(path: Path) -> tuple[av.video.stream.VideoStream, list[np.ndarray], float]:
    """(stream facts, BGR frames, duration in seconds) of an MP4."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        facts = (stream.codec_context.name, stream.codec_context.pix_fmt, stream.width, stream.height)
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(stream)]
        return facts, frames, c.duration / av.time_base


class Done:
    """on_done that records every report and lets a test wait for them."""

    def __init__(self) -> None:
        self.reports: dict[str, tuple[Path | None, dict]] = {}
        self.changed = threading.Condition()

    def __call__(self, event_id: str, path: Path | None, info: dict) -> None:
        with self.changed:
            self.reports[event_id] = (path, info)
            self.changed.notify_all()

    def wait(self, *event_ids: str, timeout: float = 30.0) -> list[tuple[Path | None, dict]]:
        with self.changed:
            assert self.changed.wait_for(lambda: all(e in self.reports for e in event_ids), timeout), event_ids
            return [self.reports[e] for e in event_ids]


@pytest.fixture
def media(tmp_path: Path) -> MediaDir:
    return MediaDir(tmp_path / "media")


@pytest.fixture
def encoders():
    """Makes ClipEncoders; every one is stopped and joined at the end of the test."""
    made: list[ClipEncoder] = []

    def make(media: MediaDir, on_done, *, start: bool = True, **kw) -> ClipEncoder:
        enc = ClipEncoder(media, on_done, **kw)
        made.append(enc)
        if start:
            enc.start()
        return enc

    yield make
    for enc in made:
        enc.stop()
    for enc in made:
        assert enc.join(10), "the encoder thread did not stop"


def test_a_clip_is_a_browser_ready_mp4_lasting_as_long_as_it_was_captured(media, encoders):
    done = Done()
    enc = encoders(media, done)
    times = [1000.0 + i / 10 for i in range(31)]  # 10 fps for 3.0 s
    assert enc.submit(job_of(times))
    [(path, info)] = done.wait("ev1")
    assert path == media.clip_path("cam", "ev1") == media.find("ev1")
    assert path.is_file() and not list(path.parent.glob("*.part"))
    (codec, pix_fmt, w, h), frames, duration = decoded(path)
    assert (codec, pix_fmt, w, h) == ("h264", "yuv420p", 320, 240)
    assert len(frames) == 31 and duration == pytest.approx(3.1, abs=0.01)  # span + one frame
    assert info == {"frames": 31, "bad_frames": 0, "fps": 10, "ticks": 31, "seconds": pytest.approx(3.1),
                    "bytes": path.stat().st_size, "error": "", "encode_s": info["encode_s"]}
    boxes = top_level_boxes(path)
    assert boxes.index("moov") < boxes.index("mdat"), boxes  # faststart: playable while it downloads
    assert media.total_bytes == info["bytes"]
    assert enc.counters["clips_written"] == 1


def test_a_gap_in_the_frames_holds_the_last_picture_so_the_clip_plays_in_real_time(media, encoders):
    done = Done()
    enc = encoders(media, done)
    times = [0.0, 0.2, 0.4, 0.6, 2.6, 2.8]  # 5 fps, then nothing for 2 s (gated out as still)
    levels = [40, 70, 100, 130, 160, 190]
    enc.submit(job_of(times, levels=levels))
    [(path, info)] = done.wait("ev1")
    _, frames, duration = decoded(path)
    assert info["fps"] == 5 and len(frames) == 15 and duration == pytest.approx(3.0, abs=0.01)
    shown = [int(round(float(f.mean()))) for f in frames]
    expected = [40, 70, 100] + [130] * 10 + [160, 190]
    assert all(abs(a - b) <= 3 for a, b in zip(shown, expected)), shown


def test_frames_faster_than_30_fps_are_thinned_and_the_duration_kept(media, encoders):
    done = Done()
    enc = encoders(media, done)
    times = [i / 60 for i in range(121)]  # 60 fps for 2 s
    enc.submit(job_of(times))
    [(path, info)] = done.wait("ev1")
    _, frames, duration = decoded(path)
    assert info["fps"] == 30 and len(frames) == 61 and duration == pytest.approx(61 / 30, abs=0.01)


def test_frames_of_another_size_are_resized_to_the_first(media, encoders):
    done = Done()
    enc = encoders(media, done)
    times = [i / 10 for i in range(10)]
    jpegs = {i: jpeg(200, 640, 480) for i in range(5, 10)}
    enc.submit(job_of(times, jpegs=jpegs))
    [(path, info)] = done.wait("ev1")
    (_, _, w, h), frames, _ = decoded(path)
    assert (w, h) == (320, 240) and len(frames) == 10 and info["frames"] == 10
    assert abs(float(frames[-1].mean()) - 200) < 3


def test_garbage_and_oversized_jpegs_are_skipped_and_counted(media, encoders):
    done = Done()
    enc = encoders(media, done, max_pixels=1000 * 1000)
    times = [i / 10 for i in range(10)]
    levels = [50 + 15 * i for i in range(10)]
    jpegs = {3: b"\xff\xd8 not a jpeg at all", 6: oversized(jpeg(100))}
    enc.submit(job_of(times, levels=levels, jpegs=jpegs))
    [(path, info)] = done.wait("ev1")
    assert info["bad_frames"] == 2 and info["frames"] == 8 and info["ticks"] == 10
    assert enc.counters["frames_bad"] == 2
    _, frames, _ = decoded(path)
    shown = [int(round(float(f.mean()))) for f in frames]
    held = [levels[i] if i not in jpegs else levels[i - 1] for i in range(10)]  # a bad frame holds the last one
    assert all(abs(a - b) <= 3 for a, b in zip(shown, held)), shown


def test_a_clip_whose_first_frames_are_bad_starts_at_the_first_good_one(media, encoders):
    done = Done()
    enc = encoders(media, done)
    enc.submit(job_of([0.0, 0.1, 0.2, 0.3], jpegs={0: b"junk", 1: b"\xff\xd8\xff"}))
    [(path, info)] = done.wait("ev1")
    assert (info["frames"], info["bad_frames"], info["ticks"]) == (2, 2, 2)


def test_a_clip_with_no_good_frame_or_no_frame_at_all_has_no_file(media, encoders):
    done = Done()
    enc = encoders(media, done)
    enc.submit(job_of([0.0, 0.1], jpegs={0: b"junk", 1: b"junk"}, event_id="bad"))
    enc.submit(ClipJob("empty", "cam", 0.0, 1.0, (), "grace"))
    [(bad, bad_info), (empty, empty_info)] = done.wait("bad", "empty")
    assert bad is None and "none of the 2 frames decodes" in bad_info["error"]
    assert empty is None and empty_info["error"] == "the recording has no frames"
    assert enc.counters["clips_failed"] == 1 and enc.counters["clips_empty"] == 1
    assert media.find("bad") is None and not list((media.root / "clips" / "cam").glob("*"))


def test_boxes_are_drawn_in_a_colour_per_track():
    image = np.zeros((100, 200, 3), np.uint8)
    draw_boxes(image, [Detection("person", 0.9, (10, 40, 50, 50), 1), Detection("car", 0.9, (120, 40, 50, 50), 2),
                       Detection("dog", 0.4, (70, 60, 30, 30), 0)])
    a, b, untracked = tuple(image[60, 10]), tuple(image[60, 120]), tuple(image[75, 70])
    assert a != (0, 0, 0) and b != (0, 0, 0) and a != b
    assert untracked == (160, 160, 160)  # no track: grey


def test_the_encoder_draws_boxes_on_the_clip(media, encoders):
    done = Done()
    enc = encoders(media, done)
    person = Detection("person", 0.9, (100, 60, 80, 120), track_id=3)
    enc.submit(job_of([0.0, 0.1, 0.2], levels=[0, 0, 0], dets={1: (person,)}))
    [(path, _)] = done.wait("ev1")
    _, frames, _ = decoded(path)
    edge = (slice(100, 160), slice(98, 103))  # the box's left edge, 2 px wide
    assert frames[0][edge].max() < 40 and frames[1][edge].max() > 100 and frames[2][edge].max() < 40


def test_a_full_disk_gives_no_clip_and_the_encoder_goes_on(media, encoders):
    done = Done()
    enc = encoders(media, done)
    full = media.clip_path("cam", "full")
    full.parent.mkdir(parents=True)
    os.symlink("/dev/full", str(full) + ".part")  # every write to it fails with ENOSPC, as on a full disk
    enc.submit(job_of([0.0, 0.1, 0.2], event_id="full"))
    [(path, info)] = done.wait("full")
    assert path is None and "No space left on device" in info["error"]
    assert not os.path.lexists(str(full) + ".part") and not full.exists() and media.find("full") is None
    enc.submit(job_of([0.0, 0.1, 0.2], event_id="next"))
    [(path, info)] = done.wait("next")
    assert path is not None and path.is_file() and info["error"] == ""
    assert enc.counters["clips_failed"] == 1 and enc.counters["clips_written"] == 1


def test_an_unwritable_media_directory_gives_no_clip_and_the_encoder_goes_on(media, encoders):
    done = Done()
    enc = encoders(media, done)
    (media.root / "clips").mkdir(parents=True)
    (media.root / "clips" / "blocked").write_bytes(b"a file where the camera's directory should be")
    enc.submit(job_of([0.0, 0.1], camera="blocked", event_id="a"))
    enc.submit(job_of([0.0, 0.1], camera="fine", event_id="b"))
    [(a, a_info), (b, _)] = done.wait("a", "b")
    assert a is None and a_info["error"].startswith(("FileExistsError", "NotADirectoryError"))
    assert b is not None and b.is_file()


def test_an_unsafe_camera_name_gives_no_clip(media, encoders):
    done = Done()
    enc = encoders(media, done)
    enc.submit(job_of([0.0], camera="../../etc", event_id="x"))
    [(path, info)] = done.wait("x")
    assert path is None and info["error"].startswith("ValueError")
    assert not (media.root.parent / "etc").exists()


def test_submit_never_blocks_it_refuses_when_the_queue_is_full(media, encoders):
    done = Done()
    enc = encoders(media, done, start=False, max_queue=2)
    results = [enc.submit(job_of([0.0], event_id=f"e{i}")) for i in range(3)]
    assert results == [True, True, False] and enc.counters["clips_refused_full"] == 1
    assert enc.stats()["queued"] == 2
    enc.start()
    paths = [p for p, _ in done.wait("e0", "e1")]
    assert all(p is not None and p.is_file() for p in paths)
    assert "e2" not in done.reports


def test_stopping_reports_the_queued_clips_as_abandoned(media, encoders):
    done = Done()
    enc = encoders(media, done, start=False)
    enc.submit(job_of([0.0], event_id="a"))
    enc.submit(job_of([0.0], event_id="b"))
    enc.stop()
    assert not enc.submit(job_of([0.0], event_id="c"))
    enc.start()
    assert enc.join(10)
    assert [p for p, _ in done.wait("a", "b")] == [None, None]
    assert enc.counters["clips_abandoned"] == 2 and "c" not in done.reports


def test_a_failing_on_done_does_not_stop_the_encoder(media, encoders):
    done = Done()
    calls: list[str] = []

    def on_done(event_id, path, info):
        calls.append(event_id)
        if event_id == "boom":
            raise RuntimeError("the caller's bug")
        done(event_id, path, info)

    enc = encoders(media, on_done)
    enc.submit(job_of([0.0], event_id="boom"))
    enc.submit(job_of([0.0], event_id="after"))
    [(path, _)] = done.wait("after")
    assert path is not None and calls == ["boom", "after"] and enc.counters["on_done_failed"] == 1


def test_recorder_to_encoder_end_to_end(media, encoders):
    done = Done()
    enc = encoders(media, done)
    r = recorder(pre_s=1.0, post_s=1.0)
    person = Detection("person", 0.9, (10, 10, 40, 80), track_id=1)
    for i in range(20):  # 10 fps, 0.0 .. 1.9; the event from 1.0
        r.frame("cam", i, i / 10, jpeg(20 + 10 * i), now=0.0)
        r.boxes("cam", i, [person], now=0.0)
        if i == 10:
            assert r.open("ev-1", "cam", start_at=1.0, now=0.0)
    r.close("ev-1", end_at=1.5, now=0.0)
    r.frame("cam", 25, 3.0, jpeg(255), now=0.0)
    [job] = r.due(now=0.0)
    assert seqs(job)[0] == 0 and seqs(job)[-1] == 19
    assert all(f.detections == (person,) for f in job.frames)
    enc.submit(job)
    [(path, info)] = done.wait("ev-1")
    assert path == media.find("ev-1") and info["frames"] == 20 and info["seconds"] == pytest.approx(2.0)


@pytest.mark.parametrize(("times", "fps"), [
    ([0.0], 1), ([0.0, 0.0], 1), ([0.0, 0.1, 0.2], 10), ([i / 60 for i in range(10)], 30),
    ([0.0, 2.0, 4.0], 1), ([0.0, 0.066, 0.134, 0.2, 1.5, 1.567], 15), ([0.0, 0.04, 0.08, 0.12], 25),
])
def test_clip_rate_is_the_median_interval_rounded_and_capped(times, fps):
    assert clip_rate(times) == fps


def test_finish_encodes_the_queued_clips_before_stopping(media, encoders):
    """A stopping master: the clips queued are still written, within the budget."""
    done = Done()
    enc = encoders(media, done, start=False)
    for name in ("a", "b"):
        assert enc.submit(job_of([0.0, 0.1, 0.2], event_id=name))
    enc.finish(60.0)
    assert not enc.submit(job_of([0.0], event_id="c")), "no new clip once stopping"
    enc.start()
    assert enc.join(30)
    assert all(p is not None for p, _ in done.wait("a", "b"))
    assert enc.counters["clips_written"] == 2 and enc.counters["clips_abandoned"] == 0


def test_finish_abandons_what_the_budget_does_not_cover(media, encoders):
    done = Done()
    enc = encoders(media, done, start=False)
    for name in ("a", "b"):
        assert enc.submit(job_of([0.0, 0.1], event_id=name))
    enc.finish(0.0)  # no time at all: as stop()
    enc.start()
    assert enc.join(10)
    assert [p for p, _ in done.wait("a", "b")] == [None, None] and enc.counters["clips_abandoned"] == 2


def test_finish_all_cuts_every_open_recording_where_it_is():
    r = recorder(pre_s=1.0, post_s=5.0)
    feed(r, [i / 10 for i in range(10)])
    assert r.open("ev-open", "cam", start_at=0.5, now=0.0) and r.open("ev-ending", "cam", start_at=0.2, now=0.0)
    r.close("ev-ending", end_at=0.8, now=0.0)  # its post-roll would run to 5.8
    feed(r, [1.0, 1.1], seq0=10)
    jobs = {j.event_id: j for j in r.finish_all()}
    assert set(jobs) == {"ev-open", "ev-ending"} and all(j.reason == "stopped" for j in jobs.values())
    assert seqs(jobs["ev-open"]) == list(range(12)) and not r.is_open("ev-open")
    assert r.finish_all() == [] and r.stats()["counters"]["clips_finished_stopped"] == 2


def test_a_stopping_event_media_writes_the_clip_of_an_event_still_going(tmp_path):
    """The master stops mid-event: its clip is cut at the last frame and written, not abandoned."""
    from master.media.events import EventMedia

    states: dict[str, str] = {}
    em = EventMedia(tmp_path / "media", lambda event_id, state: states.__setitem__(event_id, state),
                    clip=ClipConfig(pre_s=1.0, post_s=2.0))
    em.start()
    try:
        for i in range(10):
            em.frame("cam", i, i / 10, jpeg(40 + 10 * i), [], now=0.0)
        assert em.recorder.open("ev-1", "cam", 0.3, now=0.0)
        for i in range(10, 20):
            em.frame("cam", i, i / 10, jpeg(40 + 10 * i), [], now=0.0)
    finally:
        em.stop()
        assert em.join(10)
    assert states == {"ev-1": "ready"} and em.clip_path("ev-1") is not None
