"""The tracker core with an injected clock: association, states, reordering, ids and bounds."""

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.tasks import Detection
from master.tracking import NO_TRACK, TrackerConfig, TrackerHub, TrackState
from master.tracking.assign import hungarian, iou_matrix, match

FPS = 30.0


def det(x, y, label="person", score=0.9, w=40, h=80):
    return Detection(label, score, (round(x), round(y), w, h))


def started(hub=None, camera="cam", **cfg):
    """A hub whose camera has released frame 0 (an empty frame), so later frames go out as they complete."""
    hub = hub or TrackerHub(TrackerConfig(**cfg))
    assert hub.offer(camera, 0, 0.0, [], now=0.0) == []
    assert [f.seq for f in hub.poll(now=1.0)] == [0]
    return hub


def feed(hub, frames, camera="cam", now=1.0):
    """Offer (seq, detections) in order, capture time seq/FPS; the tracked detections of each frame."""
    out = []
    for seq, dets in frames:
        out += hub.offer(camera, seq, seq / FPS, dets, now)
    return [f.detections for f in out]


def ids(frame):
    return [d.track_id for d in frame]


# --- assignment ---

@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.randoms(use_true_random=False))
def test_hungarian_finds_the_minimum_cost_of_brute_force(n, m, rnd):
    cost = [[rnd.randint(0, 20) for _ in range(m)] for _ in range(n)]
    pairs = hungarian(cost)
    assert len(pairs) == min(n, m)
    assert len({r for r, _ in pairs}) == len({c for _, c in pairs}) == len(pairs)
    best = (min(sum(cost[r][c] for r, c in zip(rows, range(m))) for rows in itertools.permutations(range(n), m))
            if n >= m else
            min(sum(cost[r][c] for r, c in zip(range(n), cols)) for cols in itertools.permutations(range(m), n)))
    assert sum(cost[r][c] for r, c in pairs) == best


def test_iou_matrix_and_gated_match_prefer_the_larger_total_overlap():
    iou = iou_matrix([(0, 0, 10, 10), (100, 100, 10, 10)], [(0, 0, 10, 10), (5, 0, 10, 10), (0, 0, 0, 0)])
    assert iou[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0]) and iou[1].tolist() == [0.0, 0.0, 0.0]
    # greedy would give row 0 its best column (0) and leave row 1 with nothing above 0.3
    import numpy as np
    assert match(np.array([[0.9, 0.8], [0.7, 0.1]]), 0.3) == [(0, 1), (1, 0)]


# --- association and states ---

def test_two_objects_crossing_paths_keep_their_ids():
    rng = random.Random(7)
    hub = started()
    frames = []
    for seq in range(1, 50):  # A goes right, B goes left; their boxes overlap for ~7 frames around seq 25
        a = det(6 * seq + rng.uniform(-2, 2), 100 + rng.uniform(-2, 2))
        b = det(300 - 6 * seq + rng.uniform(-2, 2), 112 + rng.uniform(-2, 2))
        frames.append((seq, [a] if seq == 26 else [a, b]))  # B hidden behind A for one frame, mid-crossing
    out = feed(hub, frames)
    assert max(iou_matrix([frames[24][1][0].box], [frames[24][1][1].box])[0]) > 0.3  # they did overlap
    a_ids = {f[0].track_id for f in out}
    b_ids = {f[1].track_id for f in out if len(f) == 2}
    assert len(a_ids) == len(b_ids) == 1 and a_ids != b_ids
    assert all(d.confirmed for f in out[2:] for d in f)


@pytest.mark.parametrize("low_score, keeps", [(0.1, True), (0.5, False)])
def test_a_flickering_detection_keeps_its_track_through_the_low_score_stage(low_score, keeps):
    hub = started(low_score=low_score)
    # confirmed by three confident frames, then the detector's score dips every other frame
    frames = [(seq, [det(100 + 2 * seq, 50, score=0.9 if seq <= 3 or seq % 2 else 0.3)]) for seq in range(1, 30)]
    out = feed(hub, frames)
    if keeps:
        assert {f[0].track_id for f in out} == {out[0][0].track_id} and all(f[0].confirmed for f in out[2:])
        assert hub.tracks("cam")[0].hits == 29
    else:  # with the second stage off (low_score = high_score) a dip loses the track, and the ids change
        assert out[3][0].track_id == NO_TRACK and len({f[0].track_id for f in out[5:]}) > 1


def test_a_low_score_detection_alone_never_starts_a_track():
    hub = started()
    out = feed(hub, [(seq, [det(10, 10, score=0.3)]) for seq in range(1, 5)])
    assert all(f[0].track_id == NO_TRACK and not f[0].confirmed for f in out) and hub.tracks("cam") == []


def test_a_tentative_track_that_misses_is_dropped_without_being_confirmed():
    hub = started()
    out = feed(hub, [(1, [det(10, 10)]), (2, [det(12, 10)]), (3, [])])
    assert out[0][0].track_id == out[1][0].track_id and not out[1][0].confirmed
    assert hub.tracks("cam") == []
    [again] = feed(hub, [(4, [det(14, 10)])])
    assert again[0].track_id > out[0][0].track_id


def test_confirmed_then_lost_then_found_again_then_removed_after_max_lost_s():
    hub = started()
    out = feed(hub, [(seq, [det(10 * seq, 10)]) for seq in range(1, 5)])
    tid = out[-1][0].track_id
    feed(hub, [(5, []), (6, [])])
    [info] = hub.tracks("cam")
    assert info.state is TrackState.LOST and info.box[0] == pytest.approx(60, abs=2)  # predicted forward
    assert info.velocity[0] == pytest.approx(10 * FPS)
    [back] = feed(hub, [(7, [det(70, 10)])])
    assert back[0].track_id == tid and back[0].confirmed
    feed(hub, [(seq, []) for seq in range(8, 8 + int(1.5 * FPS) + 2)])
    assert hub.tracks("cam") == []


def test_a_gap_is_predicted_across_and_the_same_id_continues():
    hub = started()
    before = feed(hub, [(seq, [det(15 * seq, 10)]) for seq in range(1, 6)])
    assert hub.offer("cam", 12, 12 / FPS, [det(15 * 12, 10)], now=1.0) == []  # 6..11 never come
    [after] = hub.poll(now=2.0)
    # 105 px from its last box: no overlap at all without the motion model
    assert after.seq == 12 and after.detections[0].track_id == before[-1][0].track_id
    assert hub.counters["gap_frames"] == 6


def test_an_explicit_skip_closes_the_gap_at_once():
    hub = started()
    before = feed(hub, [(seq, [det(15 * seq, 10)]) for seq in range(1, 6)])
    assert hub.offer("cam", 8, 8 / FPS, [det(120, 10)], now=1.0) == []
    assert hub.skip("cam", 6, now=1.0) == []
    [after] = hub.skip("cam", 7, now=1.0)
    assert after.seq == 8 and after.detections[0].track_id == before[-1][0].track_id
    assert hub.counters["gap_frames"] == 0


def test_labels_never_share_a_track():
    hub = started()
    out = feed(hub, [(seq, [det(10, 10), det(10, 10, label="car")]) for seq in range(1, 5)])
    assert len({*ids(out[-1])}) == 2 and all(d.confirmed for d in out[-1])
    person = out[-1][0].track_id
    later = feed(hub, [(5, [det(10, 10, label="car"), det(10, 10, label="car")])])
    assert person not in ids(later[0])


# --- order ---

def test_results_completed_out_of_order_are_released_in_frame_order():
    hub = started()
    assert [f.seq for f in hub.offer("cam", 1, 1 / FPS, [det(10, 10)], now=1.0)] == [1]
    assert hub.offer("cam", 3, 3 / FPS, [det(14, 10)], now=1.1) == []
    assert hub.held("cam") == 1
    assert [f.seq for f in hub.offer("cam", 2, 2 / FPS, [det(12, 10)], now=1.2)] == [2, 3]
    assert hub.offer("cam", 2, 2 / FPS, [det(12, 10)], now=1.3) == [] and hub.counters["late"] == 1


def test_the_first_frame_waits_for_an_earlier_one():
    hub = TrackerHub()
    assert hub.offer("cam", 5, 5 / FPS, [det(10, 10)], now=0.0) == []
    assert hub.offer("cam", 4, 4 / FPS, [det(8, 10)], now=0.5) == []
    assert hub.poll(now=0.9) == []
    assert [f.seq for f in hub.poll(now=1.0)] == [4, 5]


def test_a_frame_number_far_behind_means_the_camera_started_again():
    hub = started()
    feed(hub, [(5000, [det(10, 10)])], now=1.0)
    hub.poll(now=3.0)
    [f] = feed(hub, [(0, [det(10, 10)])], now=3.0)
    assert f[0].track_id != NO_TRACK and hub.counters["restarts"] == 1


def _scenario(rnd, n):
    """n frames of three objects moving steadily, some frames missing, some skipped explicitly."""
    objs = [(rnd.uniform(0, 400), rnd.uniform(0, 300), rnd.uniform(-8, 8), rnd.uniform(-8, 8), label)
            for label in ("person", "person", "car")]
    frames = []
    for seq in range(n):
        kind = rnd.choices(["ok", "skip", "missing"], [8, 1, 1])[0]
        dets = [det(x + vx * seq + rnd.uniform(-2, 2), y + vy * seq, label=lab, score=rnd.choice([0.9, 0.9, 0.3]))
                for x, y, vx, vy, lab in objs if rnd.random() > 0.1]
        frames.append((seq, kind, dets))
    return frames


def _run(frames, order):
    hub = TrackerHub()
    out = []
    for i, k in enumerate(order):  # one arrival per frame interval
        seq, kind, dets = frames[k]
        if kind == "ok":
            out += hub.offer("cam", seq, seq / FPS, dets, now=i / FPS)
        elif kind == "skip":
            out += hub.skip("cam", seq, now=i / FPS)
    out += hub.poll(now=1000.0)
    return [(f.seq, f.detections) for f in out], hub.counters["late"]


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.lists(st.integers(0, 10), min_size=60, max_size=60))
def test_arrival_order_within_the_window_does_not_change_the_tracks(rnd, delays):
    frames = _scenario(rnd, 60)
    in_order, _ = _run(frames, range(60))
    shuffled = sorted(range(60), key=lambda s: (s + delays[s], s))  # each arrives at most 10 frames late
    assert _run(frames, shuffled) == (in_order, 0)
    assert [s for s, _ in in_order] == [s for s, k, _ in frames if k == "ok"]


# --- ids and bounds ---

def test_ids_are_never_reused_after_removal_forgetting_or_a_restart():
    hub = started(max_lost_s=0.1)
    first = feed(hub, [(seq, [det(10, 10)]) for seq in range(1, 5)])[0][0].track_id
    feed(hub, [(seq, []) for seq in range(5, 12)])
    assert hub.tracks("cam") == []
    second = feed(hub, [(12, [det(10, 10)])])[0][0].track_id
    hub.forget("cam")
    third = feed(started(hub), [(1, [det(10, 10)])])[0][0].track_id
    assert first < second < third
    after_restart = feed(started(TrackerHub(id_floor=hub.next_id - 1)), [(1, [det(10, 10)])])[0][0].track_id
    assert after_restart == hub.next_id


def test_ten_thousand_frames_of_random_detections_stay_within_every_bound():
    cfg = TrackerConfig(max_tracks=20, max_window_frames=8, max_cameras=3, reorder_wait_s=0.2)
    hub = TrackerHub(cfg)
    rng = random.Random(3)
    cameras = [f"cam{i}" for i in range(5)]
    next_seq = dict.fromkeys(cameras, 0)
    now = 0.0
    for _ in range(10_000):
        cam = rng.choices(cameras, [30, 30, 30, 1, 1])[0]  # two rare cameras push out an idle one
        seq = next_seq[cam] + rng.randint(-6, 3)
        next_seq[cam] = max(next_seq[cam], seq + 1)
        dets = [det(rng.uniform(0, 600), rng.uniform(0, 400), label=rng.choice(["person", "car", "dog"]),
                    score=rng.random(), w=rng.randint(0, 120), h=rng.randint(0, 120))
                for _ in range(rng.randint(0, 30))]
        now += 0.01
        for f in hub.offer(cam, max(seq, 0), now, dets, now) + hub.poll(now):
            assert len(f.detections) <= 30
        assert len(hub.cameras()) <= 3
        assert all(len(hub.tracks(c)) <= 20 and hub.held(c) <= 8 for c in hub.cameras())
    assert hub.counters["frames_tracked"] > 5000 and hub.counters["cameras_forgotten"] > 0


def test_a_full_camera_makes_room_by_removing_its_oldest_lost_track():
    hub = started(max_tracks=2, confirm_hits=1)
    first = feed(hub, [(1, [det(0, 0), det(100, 0)])])[0]
    later = feed(hub, [(2, [det(0, 0)]), (3, [det(0, 0), det(300, 0)])])
    assert {i.track_id for i in hub.tracks("cam")} == {first[0].track_id, later[1][1].track_id}


def test_config_is_checked():
    with pytest.raises(ValueError, match="low_score"):
        TrackerConfig(low_score=0.6, high_score=0.5)
    with pytest.raises(ValueError, match="max_tracks"):
        TrackerConfig(max_tracks=0)


def test_an_unseen_box_keeps_its_size_while_its_centre_moves_on():
    from master.tracking.motion import BoxFilter

    f = BoxFilter((100, 100, 60, 120), 0.0, alpha=0.6, beta=0.2)
    f.update((110, 100, 50, 100), 0.1)  # shrinking while it is being hidden
    x, y, w, h = f.box(1.0)  # 0.9 s unseen
    assert (w, h) == (50, 100), "the size is held, not extrapolated down to nothing"
    assert x + w / 2 == pytest.approx(135 + 50 * 0.9), "the centre goes on at its speed (130 -> 135 in 0.1 s)"
