"""Counting lines: once per crossing, by direction and label; jitter on the line and walks round its
end do not count."""

from __future__ import annotations

import pytest

from master.tracking.lines import Line, LineCounter, foot_point

DOOR = Line("door", (0.5, 1.0), (0.5, 0.0), ("in", "out"))  # drawn upwards: its right, "in", is the screen's right


def walk(counter: LineCounter, track: int, label: str, xs: list[float], y: float = 0.5) -> list[str]:
    found = []
    for i, x in enumerate(xs):
        found += [c.direction for c in counter.observe([(track, label, (x, y))], at=float(i))]
    return found


def test_a_walk_across_counts_once_in_its_direction():
    c = LineCounter([DOOR])
    assert walk(c, 1, "person", [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8]) == ["in"]
    assert walk(c, 2, "person", [0.9, 0.7, 0.3, 0.1]) == ["out"]
    assert c.totals == {("door", "in", "person"): 1, ("door", "out", "person"): 1}


def test_jitter_on_the_line_does_not_count_again():
    c = LineCounter([DOOR])
    xs = [0.3, 0.45, 0.51, 0.49, 0.515, 0.485, 0.51, 0.55, 0.6, 0.49, 0.505, 0.6]  # wobbles within the margin
    assert walk(c, 1, "person", xs) == ["in"]


def test_crossing_back_counts_the_other_way():
    c = LineCounter([DOOR])
    assert walk(c, 1, "person", [0.3, 0.7, 0.3, 0.7]) == ["in", "out", "in"]


def test_a_walk_round_the_end_of_a_segment_is_not_a_crossing():
    short = Line("gate", (0.5, 0.4), (0.5, 0.0))  # the upper part of the frame only
    c = LineCounter([short])
    assert walk(c, 1, "person", [0.2, 0.8], y=0.9) == []
    assert walk(c, 2, "person", [0.2, 0.8], y=0.2) == ["in"]


def test_labels_filter_and_are_counted_apart():
    c = LineCounter([Line("road", (0.0, 0.5), (1.0, 0.5), ("south", "north"), labels=("car", "bus"))])
    for track, label in ((1, "car"), (2, "bus"), (3, "person")):
        for i, y in enumerate((0.2, 0.8)):
            c.observe([(track, label, (0.5, y))], at=float(i))
    assert c.totals == {("road", "south", "car"): 1, ("road", "south", "bus"): 1}


def test_state_stays_bounded_with_endless_new_tracks():
    c = LineCounter([DOOR])
    for t in range(20_000):
        c.observe([(t, "person", (0.2, 0.5))], at=float(t))
    assert len(c._sides["door"]) <= 4096


@pytest.mark.parametrize("kwargs,words", [({"a": (0.5, 0.5), "b": (0.5, 0.502)}, "apart"),
                                          ({"b": (1.5, 0.5)}, "fractions"),
                                          ({"directions": ("in", "in")}, "two different")])
def test_a_bad_line_is_refused(kwargs, words):
    with pytest.raises(ValueError, match=words):
        Line("x", **{"a": (0.0, 0.0), "b": (1.0, 1.0), **kwargs})


def test_the_foot_point_is_the_bottom_centre():
    assert foot_point((100, 50, 40, 100), 400, 300) == (0.3, 0.5)


def test_a_crossing_made_while_the_track_was_tentative_counts_once_it_is_confirmed():
    c = LineCounter([DOOR])
    assert c.observe([(1, "person", (0.40, 0.5), False)], 0.0) == []
    assert c.observe([(1, "person", (0.60, 0.5), False)], 0.1) == []  # crossed, but not confirmed yet
    assert [x.direction for x in c.observe([(1, "person", (0.62, 0.5), True)], 0.2)] == ["in"]
    assert c.totals == {("door", "in", "person"): 1}


def test_a_tentative_track_that_never_confirms_counts_nothing():
    c = LineCounter([DOOR])
    c.observe([(2, "person", (0.40, 0.5), False)], 0.0)
    c.observe([(2, "person", (0.60, 0.5), False)], 0.1)
    c.observe([(3, "person", (0.70, 0.5), True)], 0.2)  # another track
    assert c.totals == {}
