"""The tracking-accuracy measures of bench/motmetrics_lite.py on small cases computed by hand."""

from __future__ import annotations

import pytest

from bench.motmetrics_lite import Switch, evaluate


def at(x: float, y: float = 0.0) -> tuple[float, float, float, float]:
    """A 10x10 box at (x, y)."""
    return (x, y, 10.0, 10.0)


def test_a_perfect_tracker_scores_one_everywhere():
    truth = {f: [(1, at(10 * f)), (2, at(100 - 10 * f, 50))] for f in range(4)}
    tracker = {f: [("a", at(10 * f)), ("b", at(100 - 10 * f, 50))] for f in range(4)}
    s = evaluate(truth, tracker).summary
    assert (s.mota, s.idf1, s.motp_iou, s.recall, s.precision) == (1.0, 1.0, 1.0, 1.0, 1.0)
    assert (s.matches, s.misses, s.false_positives, s.id_switches, s.fragmentations) == (8, 0, 0, 0, 0)
    assert (s.truth_objects, s.tracker_ids, s.mostly_tracked, s.fragmented_truths) == (2, 2, 2, 0)


def test_a_miss_and_a_false_box():
    # 2 objects x 3 frames = 6 truth boxes; object 2 missed in frame 1; a stray box in frame 2
    truth = {f: [(1, at(0)), (2, at(50))] for f in range(3)}
    tracker = {0: [("a", at(0)), ("b", at(50))], 1: [("a", at(0))], 2: [("a", at(0)), ("b", at(50)), ("c", at(200))]}
    ev = evaluate(truth, tracker)
    s = ev.summary
    assert (s.misses, s.false_positives, s.id_switches) == (1, 1, 0)
    assert s.mota == pytest.approx(1 - 2 / 6)
    assert s.idtp == 5 and s.idf1 == pytest.approx(2 * 5 / (6 + 6))  # 6 truth boxes, 6 tracker boxes
    assert s.fragmentations == 1 and ev.fragments == {2: (1,)}


def test_an_id_switch_costs_mota_one_box_and_idf1_half():
    truth = {f: [(1, at(10 * f))] for f in range(4)}
    tracker = {f: [("a" if f < 2 else "b", at(10 * f))] for f in range(4)}
    ev = evaluate(truth, tracker)
    s = ev.summary
    assert ev.switches == (Switch(2, 1, "a", "b"),)
    assert s.mota == pytest.approx(0.75)
    assert s.idtp == 2 and s.idf1 == pytest.approx(0.5)
    assert (s.fragmentations, s.fragmented_truths, s.tracker_ids) == (0, 1, 2)
    assert ev.tracks_of == {1: {"a": (2, 0, 1), "b": (2, 2, 3)}}


def test_a_match_that_still_holds_is_kept_over_a_better_overlap():
    # frame 1: "a" still overlaps object 1 at IoU 70/130 = 0.54; "b" sits exactly on it. CLEAR-MOT keeps
    # "a" (no switch) and counts "b" as a false positive; matching each frame afresh would switch.
    truth = {0: [(1, at(0))], 1: [(1, at(0))]}
    tracker = {0: [("a", at(0))], 1: [("a", at(3)), ("b", at(0))]}
    s = evaluate(truth, tracker).summary
    assert (s.id_switches, s.false_positives, s.matches) == (0, 1, 2)
    assert s.mota == pytest.approx(0.5)
    assert s.motp_iou == pytest.approx((1.0 + 70 / 130) / 2)


def test_the_iou_threshold_decides_a_match():
    truth = {0: [(1, at(0))]}
    tracker = {0: [("a", at(4))]}  # IoU 60 / 140 = 0.43
    s = evaluate(truth, tracker).summary
    assert (s.matches, s.misses, s.false_positives, s.mota) == (0, 1, 1, -1.0)
    assert evaluate(truth, tracker, iou_threshold=0.4).summary.matches == 1


def test_two_objects_whose_ids_swap_when_they_cross():
    truth = {f: [(1, at(10 * f)), (2, at(30 - 10 * f))] for f in range(4)}
    tracker = {f: [("a" if f < 2 else "b", at(10 * f)), ("b" if f < 2 else "a", at(30 - 10 * f))] for f in range(4)}
    ev = evaluate(truth, tracker)
    assert sorted((w.frame, w.truth_id) for w in ev.switches) == [(2, 1), (2, 2)]
    assert ev.summary.mota == pytest.approx(1 - 2 / 8)
    assert ev.summary.idf1 == pytest.approx(0.5)


def test_id_pairing_is_the_global_optimum_not_the_greedy_one():
    # X (5 frames) is "a" for 3 frames then "b" for 2; Y (2 frames, later) is "a". Greedy pairs X-a (3)
    # and leaves Y with nothing: IDTP 3. The optimum pairs X-b and Y-a: IDTP 4.
    truth = {f: [("X", at(0))] for f in range(5)} | {f: [("Y", at(100))] for f in (5, 6)}
    tracker = {f: [("a" if f < 3 else "b", at(0))] for f in range(5)} | {f: [("a", at(100))] for f in (5, 6)}
    ev = evaluate(truth, tracker)
    assert ev.summary.idtp == 4 and ev.summary.idf1 == pytest.approx(8 / 14)
    assert ev.hyp_of == {"X": "b", "Y": "a"}
    assert ev.summary.id_switches == 1 and ev.summary.mota == pytest.approx(1 - 1 / 7)


def test_mostly_tracked_partly_tracked_mostly_lost():
    truth = {f: [(1, at(0)), (2, at(100)), (3, at(200))] for f in range(10)}
    tracker = {f: [("a", at(0))] * (f < 9) + [("b", at(100))] * (f < 5) + [("c", at(200))] * (f < 1)
               for f in range(10)}
    s = evaluate(truth, tracker).summary
    assert (s.mostly_tracked, s.partly_tracked, s.mostly_lost) == (1, 1, 1)
    assert s.misses == 1 + 5 + 9 and s.fragmentations == 0  # misses at the end break no run


def test_a_box_on_a_dont_care_region_is_no_false_positive():
    truth = {0: [(1, at(0))], 1: [(1, at(0))]}
    tracker = {0: [("a", at(0)), ("z", at(300))], 1: [("a", at(0))]}
    plain = evaluate(truth, tracker).summary
    cared = evaluate(truth, tracker, ignore={0: [at(301)]}).summary
    assert plain.false_positives == 1 and cared.false_positives == 0
    assert cared.mota == 1.0 and cared.idf1 == 1.0 and cared.tracker_boxes == 2
    # a don't-care box never takes away a tracker box that matches a real truth box
    assert evaluate(truth, tracker, ignore={0: [at(1)]}).summary.matches == 2


def test_nothing_to_compare_gives_zeros_not_errors():
    s = evaluate({}, {}).summary
    assert (s.frames, s.truth_boxes, s.mota, s.idf1) == (0, 0, 0.0, 0.0)
    only_boxes = evaluate({}, {0: [("a", at(0))]}).summary
    assert (only_boxes.false_positives, only_boxes.precision) == (1, 0.0)


def test_an_object_back_after_a_miss_under_another_id_is_a_switch():
    truth = {f: [(1, at(0))] for f in range(3)}
    tracker = {0: [("a", at(0))], 2: [("b", at(0))]}
    ev = evaluate(truth, tracker)
    assert ev.switches == (Switch(2, 1, "a", "b"),) and ev.fragments == {1: (1,)}
    assert ev.summary.mota == pytest.approx(1 - (1 + 0 + 1) / 3)


def test_a_frame_is_matched_for_the_most_pairs_before_the_most_overlap():
    # 10x10 boxes 3.3 apart overlap at IoU 0.504. Truth a and b sit under tracker boxes x and y
    # (IoU 1 each); truth c and tracker z overlap x and b at 0.504, and a overlaps y too. The largest IoU
    # total is {a-x, b-y} (2.0, two pairs); the most pairs is {c-x, a-y, b-z} (three, 1.51).
    d = 3.3
    truth = {0: [("a", at(0)), ("b", at(d)), ("c", at(-d))]}
    tracker = {0: [("x", at(0)), ("y", at(d)), ("z", at(2 * d))]}
    s = evaluate(truth, tracker).summary
    assert (s.matches, s.misses, s.false_positives) == (3, 0, 0)
    assert s.motp_iou == pytest.approx(6.7 / 13.3)
