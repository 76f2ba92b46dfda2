"""The generated clip's truth (bench/synthclip.py): paths, line crossings, pasted boxes, occlusion, masks."""

from __future__ import annotations

import numpy as np
import pytest

from bench import synthclip as sc
from bench.synthclip import Cutout, Sprite, Walker

LINE = ((0.5, 1.0), (0.5, 0.55))  # the middle of the floor, drawn upwards


def walker(path, wid=1, sprite=0, mirror=False):
    return Walker(wid, f"w{wid}", "", sprite, mirror, tuple((float(f), float(x), float(y)) for f, x, y in path))


def block(h=100, w=40, colour=(0, 0, 255)) -> Sprite:
    c = Cutout(np.full((h, w, 3), colour, np.uint8), np.ones((h, w), np.float32), 0)
    return Sprite("block", (c,), (c,))


def test_a_walker_moves_linearly_between_waypoints_and_is_absent_outside_them():
    w = walker([(10, 0, 400), (20, 100, 400), (30, 100, 400), (40, 100, 300)])
    assert w.foot(9) is None and w.foot(41) is None
    assert w.foot(15) == (50.0, 400.0) and w.foot(35) == (100.0, 350.0)
    assert w.moving(15) and not w.moving(25) and w.moving(31)


def test_crossings_by_direction_and_only_through_the_segment():
    across = walker([(0, 300, 400), (10, 500, 400)], wid=1)  # rightwards over x = 384
    back = walker([(0, 300, 400), (10, 500, 400), (20, 300, 400)], wid=2)  # there and back
    below = walker([(0, 300, 200), (10, 500, 200)], wid=3)  # above the segment's top end (y 0.55 = 237.6)
    found = sc.true_crossings([across, back, below], *LINE, frames=30)
    assert [(w, d) for w, _, d in found] == [(1, "right"), (2, "right"), (2, "left")]
    assert found[0][1] == 5  # 300 + 20 * 5 = 400: the first frame past 384
    assert sc.true_crossings([back], *LINE, frames=10) == [(2, 5, "right")]  # only frames < 10


def test_standing_on_the_line_and_going_back_is_no_crossing():
    w = walker([(0, 364, 400), (2, 384, 400), (8, 384, 400), (10, 364, 400)])
    assert sc.true_crossings([w], *LINE, frames=20) == []
    on_then_over = walker([(0, 364, 400), (2, 384, 400), (8, 384, 400), (10, 404, 400)])
    assert sc.true_crossings([on_then_over], *LINE, frames=20) == [(1, 9, "right")]


def test_the_pasted_box_is_the_sprite_scaled_to_its_depth_with_its_feet_on_the_path():
    bg = np.zeros((sc.HEIGHT, sc.WIDTH, 3), np.uint8)
    w = walker([(0, 384, sc.NEAR_FOOT_Y), (5, 384, sc.NEAR_FOOT_Y)])
    frames = list(sc.render(bg, [block()], [w], 1))
    image, truth = frames[0]
    scale = sc.NEAR_HEIGHT / 100
    assert truth == [sc.TruthBox(1, (384 - 56, 425 - 280, 112, 280), 1.0, 1.0)] and scale == 2.8
    assert tuple(image[300, 384]) == (0, 0, 255) and tuple(image[300, 300]) == (0, 0, 0)


def test_a_nearer_person_hides_a_farther_one_and_the_truth_says_how_much():
    bg = np.zeros((sc.HEIGHT, sc.WIDTH, 3), np.uint8)
    far = walker([(0, 384, 400), (5, 384, 400)], wid=1, sprite=0)
    near = walker([(0, 384, 425), (5, 384, 425)], wid=2, sprite=1)
    image, truth = next(sc.render(bg, [block(colour=(255, 0, 0)), block()], [far, near], 1))
    by_id = {t.id: t for t in truth}
    assert by_id[2].seen == 1.0 and by_id[1].inside == 1.0 and by_id[1].seen < 0.1
    assert tuple(image[300, 384]) == (0, 0, 255)  # the nearer one's colour on top


def test_people_mostly_outside_the_frame_are_dont_care_or_left_out():
    bg = np.zeros((sc.HEIGHT, sc.WIDTH, 3), np.uint8)
    edge = walker([(0, 0, 425), (1, -30, 425), (2, -50, 425)])  # 112 px wide at x = 0, -30, -50
    shares = [(t[0].inside, t[0].care) if t else None for _, t in sc.render(bg, [block()], [edge], 3)]
    assert shares[0] == (0.5, True)
    assert shares[1][0] == pytest.approx(26 / 112, abs=0.01) and shares[1][1] is False
    assert shares[2] is None  # 6 of 112 columns inside: below MIN_INSIDE


def test_the_plan_is_fixed_by_its_seed_and_uses_each_person_once():
    sprites = [block() for _ in range(6)]
    a, b, c = sc.plan(7, sprites), sc.plan(7, sprites), sc.plan(8, sprites)
    assert a == b and a != c
    assert sorted(w.sprite for w in a) == list(range(6))
    assert [w.name for w in a] == [name for name, _, _ in sc.SCRIPT]


def test_the_stander_is_someone_with_standing_cutouts():
    walking_only = Sprite("w", block().walking, ())
    sprites = [walking_only, block(), walking_only]
    for seed in range(10):
        stander = next(w for w in sc.plan(seed, sprites) if w.name == sc.STANDER)
        assert stander.sprite == 1


def test_the_mask_keeps_the_person_and_drops_a_shadow_on_the_floor():
    bg = np.zeros((200, 120, 3), np.uint8)
    bg[:] = (60, 110, 170)  # floor-like brown (BGR)
    frame = bg.copy()
    frame[20:180, 40:80] = (40, 40, 40)  # a dark figure
    frame[150:180, 80:115] = (40, 73, 113)  # its shadow: the floor at two thirds of its light
    mask = sc.person_mask(frame, bg, top_row=sc.FLOOR_ROW)
    assert mask[100, 60] == 1 and mask[165, 100] == 0 and mask[10, 10] == 0
    assert 0.9 < mask[20:180, 40:80].mean() <= 1.0


def test_marked_empty_frames_group_into_runs():
    assert sc.empty_runs([0, 5, 10, 205, 210, 455], 5) == [[0, 5, 10], [205, 210], [455]]
