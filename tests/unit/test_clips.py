"""Event clips: the recorder core (pre-roll, windows, caps, clocks)."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.tasks import Detection
from master.media.clips import ClipConfig, ClipJob, ClipRecorder

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
