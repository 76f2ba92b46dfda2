"""Counting lines: a track that crosses a line is counted once per crossing, by direction and label.

Pure. A line is two points in frame fractions (x right, y down) and two direction names: the first
for crossing to the right of a→b as someone walking from a to b on the screen sees it (a line drawn
upwards counts left-to-right moves as the first direction; one drawn rightwards, downward moves),
the second for the other way. A track's position is
the foot point of its box (bottom centre), the point that walks on the ground. Jitter on the line
does not count: a track must be `margin` (a fraction of the frame) clear of one side, then clear of
the other, and its crossing point must fall within the segment (extended by `margin` at both ends).

Tentative tracks (not yet confirmed: seen in fewer than 3 frames in a row) are followed too, but what
they cross is held, and counted only once the track is confirmed; a tentative track that dies (a
false detection, mostly) counts nothing. A track born near the line, e.g. after the detector missed
someone for a frame, is often confirmed only on the other side: following it from its first frame
keeps that crossing (bench/tracking_accuracy.py).
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

Point = tuple[float, float]
MAX_TRACKS_PER_LINE = 4096  # the least recently seen beyond this are forgotten
MAX_HELD_PER_TRACK = 4  # crossings of a tentative track held until it is confirmed


@dataclass(frozen=True)
class Line:
    """A counting line across a camera's frame."""

    name: str
    a: Point
    b: Point
    directions: tuple[str, str] = ("in", "out")  # to the right of a->b (on screen), to its left
    labels: tuple[str, ...] = ()  # counted labels; empty: every label
    margin: float = 0.02  # how far (frame fractions) clear of the line a side must be

    def __post_init__(self) -> None:
        if math.dist(self.a, self.b) < 0.01:
            raise ValueError(f"line {self.name!r}: its two points must be apart")
        if not all(0.0 <= v <= 1.0 for v in (*self.a, *self.b)):
            raise ValueError(f"line {self.name!r}: points are fractions of the frame, 0..1")
        if len(self.directions) != 2 or self.directions[0] == self.directions[1]:
            raise ValueError(f"line {self.name!r}: give two different direction names")
        if not 0.0 <= self.margin < 0.5:
            raise ValueError(f"line {self.name!r}: margin must be 0..0.5")

    def side(self, p: Point) -> float:
        """Signed distance of `p` from the line (frame fractions): > 0 right of a->b on screen, < 0 left."""
        (ax, ay), (bx, by) = self.a, self.b
        return ((bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax)) / math.dist(self.a, self.b)

    def along(self, p: Point) -> float:
        """Where `p` projects on the segment: 0 at a, 1 at b."""
        (ax, ay), (bx, by) = self.a, self.b
        return ((p[0] - ax) * (bx - ax) + (p[1] - ay) * (by - ay)) / math.dist(self.a, self.b) ** 2


@dataclass(frozen=True)
class Crossing:
    """One counted crossing."""

    line: str
    direction: str
    label: str
    track_id: int
    at: float  # capture time of the frame that completed it


class LineCounter:
    """Counts crossings of a camera's lines by tracked detections (`observe` once per frame, in order)."""

    def __init__(self, lines: Iterable[Line]) -> None:
        self.lines = tuple(lines)
        self.totals: Counter[tuple[str, str, str]] = Counter()  # (line, direction, label) -> crossings
        self._sides: dict[str, OrderedDict[int, tuple[int, Point]]] = {ln.name: OrderedDict() for ln in self.lines}
        self._held: OrderedDict[int, list[Crossing]] = OrderedDict()  # tentative track -> its crossings so far

    def observe(self, detections: Iterable[tuple[int, str, Point] | tuple[int, str, Point, bool]],
                at: float) -> list[Crossing]:
        """(track id, label, foot point in frame fractions[, confirmed]) of a frame's tracked detections
        (confirmed when left out) -> the crossings it completes, those a track made before it was
        confirmed included."""
        out: list[Crossing] = []
        for track_id, label, foot, *rest in detections:
            confirmed = rest[0] if rest else True
            if confirmed and track_id in self._held:
                out += self._count(self._held.pop(track_id))
            for line in self.lines:
                if line.labels and label not in line.labels:
                    continue
                crossing = self._step(line, track_id, label, foot, at)
                if crossing is None:
                    continue
                if confirmed:
                    out += self._count([crossing])
                else:
                    held = self._held.setdefault(track_id, [])
                    if len(held) < MAX_HELD_PER_TRACK:
                        held.append(crossing)
                    while len(self._held) > MAX_TRACKS_PER_LINE:
                        self._held.popitem(last=False)
        return out

    def _count(self, crossings: list[Crossing]) -> list[Crossing]:
        for c in crossings:
            self.totals[c.line, c.direction, c.label] += 1
        return crossings

    def adopt(self, old: LineCounter, names: set[str]) -> None:
        """Take where tracks stand relative to the lines in `names` from `old` (the same lines, reloaded)."""
        for name in names:
            if name in self._sides and name in old._sides:
                self._sides[name] = old._sides[name]

    def _step(self, line: Line, track_id: int, label: str, foot: Point, at: float) -> Crossing | None:
        sides = self._sides[line.name]
        d = line.side(foot)
        side = 1 if d > line.margin else -1 if d < -line.margin else 0
        before = sides.pop(track_id, None)
        if side == 0:  # on the line (within the margin): remember where it was clear, nothing else
            if before is not None:
                sides[track_id] = before
            return None
        sides[track_id] = (side, foot)
        while len(sides) > MAX_TRACKS_PER_LINE:
            sides.popitem(last=False)
        if before is None or before[0] == side:
            return None
        mid = ((before[1][0] + foot[0]) / 2, (before[1][1] + foot[1]) / 2)
        if not -line.margin <= line.along(mid) <= 1 + line.margin:
            return None  # it went round the end of the segment, not through it
        return Crossing(line.name, line.directions[0] if side > 0 else line.directions[1], label, track_id, at)


def foot_point(box: tuple[int, int, int, int], width: int, height: int) -> Point:
    """Bottom centre of a pixel box [x, y, w, h], in frame fractions."""
    x, y, w, h = box
    return (x + w / 2) / width, (y + h) / height
