"""A generated clip whose truth is exact: real people, cut from the shared hall clip, pasted walking
known paths over the hall's own empty background.

Background: the per-pixel median of the hall frames marked empty by eye (bench/data/hall_truth.json).
The median of the whole clip keeps a ghost of the people, who stand at the table for most of it.

People: for each of the clip's six people, a few frames where the detector finds exactly one person
wholly inside the frame: walking ones from the moment their feet come into view as they walk in
(seen from behind), standing ones from the middle of their stay. The person is what differs from the
background by more than PERSON_LAB_DISTANCE (CIELAB), the background first taken from the empty frames
just before that person came in and mapped to the frame's exposure (the camera brightens the whole
picture while someone in dark clothes stands close). Shadows on the floor (darker, same colour) are
dropped; the mask is opened, closed, cut to its largest part with small holes filled, and to the
detector's box (the floor below the feet mirrors people). The frames they leave in are not used: the
walk past the table blurs its edges into the mask.

Scene (`plan`): SCRIPT's six walkers, each a polyline of (frame, foot x, foot y) waypoints in pixels
of the 768x432 frame at 10 fps, jittered by a seed: two people crossing each other on the counting
line, one standing still for 13 s, two passing behind her, one walking in from the bottom edge and
turning, one turning round. Sizes follow depth: a body is NEAR_HEIGHT px tall with its feet at
NEAR_FOOT_Y and FAR_HEIGHT at FAR_FOOT_Y (linear in between). People are pasted far to near (by foot
y), so nearer ones hide those behind.

Truth per frame (`render`): each person's box is the bounding box of their pasted mask, cut to the
frame, amodal (the whole body even where someone nearer hides it), with the share of their body inside
the frame and the share seen; boxes less than MIN_INSIDE inside the frame are left out, and those
less than CARE_INSIDE inside are don't-care (a sliver at the edge is nobody's fault). Line crossings
(`true_crossings`) come from the paths themselves, not from boxes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from common.tasks import Detection

SAMPLE = "one-by-one-person-detection.mp4"
WIDTH, HEIGHT, FPS = 768, 432, 10.0
FAR_FOOT_Y, FAR_HEIGHT = 265.0, 190.0  # px: feet just in front of the wall
NEAR_FOOT_Y, NEAR_HEIGHT = 425.0, 280.0  # px: feet at the bottom of the frame
FLOOR_ROW = 250  # background rows from here down are floor (where shadows fall)
PERSON_LAB_DISTANCE = 12.0  # CIELAB distance to the background above which a pixel is the person's
SHADOW_CHROMA = 16.0  # a darker pixel whose colour moved less than this (a/b) is a shadow on the floor
SHADOW_LIGHTNESS = (0.4, 1.0)  # ... and whose lightness is this share of the background's
MAX_HOLE_SHARE = 0.02  # holes in a mask smaller than this share of its box are filled (not the gap between legs)
EDGE_PX = 2  # a box this close to the frame's edge may be cut by it
FEET_CLEAR_PX = 8  # a walking frame's box ends at least this far above the bottom edge (feet in view)
WALK_CUTOUTS = 3
STAND_CUTOUTS = 8
STAND_STEP = 3  # frames between standing cutouts
MIN_INSIDE = 0.2  # share of a body inside the frame below which it is not in the truth at all
CARE_INSIDE = 0.5  # ... below which it is a don't-care box


@dataclass(frozen=True)
class Cutout:
    """One real person in one frame: their pixels, their mask, where their feet are."""

    image: np.ndarray  # BGR, the mask's bounding box
    alpha: np.ndarray  # float32 0..1, same size
    source: int  # frame of the hall clip

    @property
    def height(self) -> int:
        return self.alpha.shape[0]


@dataclass(frozen=True)
class Sprite:
    """One of the hall clip's people, walking and standing."""

    who: str
    walking: tuple[Cutout, ...]
    standing: tuple[Cutout, ...]

    @property
    def ref_height(self) -> float:
        """The body height (px) of the walking cutouts, the one scaled to the depth."""
        return float(np.median([c.height for c in self.walking]))


Waypoint = tuple[float, float, float]  # frame, foot x, foot y (px)


@dataclass(frozen=True)
class Walker:
    """A pasted person: which real person, and their path (linear between waypoints)."""

    id: int
    name: str
    what: str
    sprite: int  # index into the sprites (the hall clip's people, in hall_truth order)
    mirror: bool
    path: tuple[Waypoint, ...]

    def foot(self, frame: int) -> tuple[float, float] | None:
        """Foot point (px) at `frame`, None before the first waypoint or after the last."""
        if not self.path[0][0] <= frame <= self.path[-1][0]:
            return None
        for (f0, x0, y0), (f1, x1, y1) in zip(self.path, self.path[1:]):
            if f0 <= frame <= f1:
                k = (frame - f0) / (f1 - f0) if f1 > f0 else 1.0
                return x0 + k * (x1 - x0), y0 + k * (y1 - y0)
        return self.path[-1][1:]

    def moving(self, frame: int) -> bool:
        a, b = self.foot(frame - 1), self.foot(frame)
        return a is None or b is None or math.dist(a, b) > 0.5


@dataclass(frozen=True)
class TruthBox:
    """One person in one generated frame."""

    id: int
    box: tuple[int, int, int, int]  # x, y, w, h: the pasted mask's bounds, cut to the frame
    inside: float  # share of the body inside the frame
    seen: float  # share of the body inside the frame and not hidden by someone nearer

    @property
    def care(self) -> bool:
        return self.inside >= CARE_INSIDE


# name, what it tests, waypoints (frame, foot x, foot y) for a 300-frame clip
SCRIPT: tuple[tuple[str, str, tuple[Waypoint, ...]], ...] = (
    ("A", "walks right, near; crosses B on the counting line", ((5, -80, 400), (57, 850, 400))),
    ("B", "walks left a step further back; crosses A on the line", ((12, 850, 382), (64, -80, 382))),
    ("C", "walks in from the right, stands still 13 s right of the line, walks back out",
     ((40, 860, 412), (66, 470, 412), (200, 470, 412), (226, 860, 412))),
    ("D", "far back, walks left behind the standing C and over the line",
     ((90, 850, 292), (160, -80, 292))),
    ("E", "comes in at the bottom edge left of centre, walks up, turns right, passes behind C",
     ((150, 250, 500), (165, 250, 340), (205, 850, 340))),
    ("F", "far back, walks right over the line, turns round, walks back over it",
     ((210, -80, 272), (250, 520, 272), (256, 520, 272), (296, -80, 280))),
)
SCRIPT_FRAMES = 300
STANDER = "C"  # needs a person whose standing frames show them whole
JITTER_PX = 6.0
JITTER_FRAMES = 2


def height_at(foot_y: float) -> float:
    """Body height (px) of a person whose feet are at row `foot_y`."""
    k = (foot_y - FAR_FOOT_Y) / (NEAR_FOOT_Y - FAR_FOOT_Y)
    return FAR_HEIGHT + k * (NEAR_HEIGHT - FAR_HEIGHT)


def plan(seed: int, sprites: Sequence[Sprite]) -> list[Walker]:
    """SCRIPT's walkers, their waypoints jittered and their people drawn by `seed`."""
    rng = random.Random(seed)
    can_stand = [i for i, s in enumerate(sprites) if s.standing]
    if not can_stand:
        raise ValueError("no person has standing cutouts")
    stander = rng.choice(can_stand)
    others = [i for i in range(len(sprites)) if i != stander]
    rng.shuffle(others)
    walkers = []
    movers = iter(others * len(SCRIPT))  # each person once while there are enough
    for wid, (name, what, path) in enumerate(SCRIPT, start=1):
        sprite = stander if name == STANDER else next(movers)
        shift = rng.randint(-JITTER_FRAMES, JITTER_FRAMES)
        moved: dict[tuple[float, float], tuple[float, float]] = {}  # a point stood on twice moves once
        points = []
        for f, x, y in path:
            dx, dy = moved.setdefault((x, y), (rng.uniform(-JITTER_PX, JITTER_PX), rng.uniform(-JITTER_PX, JITTER_PX)))
            points.append((float(f + shift), x + dx, y + dy))
        walkers.append(Walker(wid, name, what, sprite, rng.random() < 0.5, tuple(points)))
    return walkers


# ---------------------------------------------------------------------------------------------------
# Cutting people out of the hall clip


def empty_runs(empty: Sequence[int], every: int) -> list[list[int]]:
    """Runs of frames marked empty, each run's frames `every` apart."""
    runs: list[list[int]] = []
    for i in sorted(empty):
        if runs and i - runs[-1][-1] <= every:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def frames_at(path: Path, wanted: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(index, BGR frame) of `path` at the indices `wanted`, in order, decoding the clip once."""
    want = set(wanted)
    last = max(want, default=-1)
    cap = cv2.VideoCapture(str(path))
    try:
        i = 0
        while i <= last:
            ok, frame = cap.read()
            if not ok:
                break
            if i in want:
                yield i, frame
            i += 1
    finally:
        cap.release()


def read_at(path: Path, wanted: Iterable[int]) -> dict[int, np.ndarray]:
    """The frames of `path` at the indices `wanted` (hold few: each 768x432 frame is 1 MB)."""
    return dict(frames_at(path, wanted))


def median_background(frames: Sequence[np.ndarray]) -> np.ndarray:
    return np.median(np.stack(frames), axis=0).astype(np.uint8)


def exposure_matched(bg: np.ndarray, frame: np.ndarray, box: tuple[int, int, int, int], margin: int = 20) -> np.ndarray:
    """`bg` with each channel mapped to `frame`'s exposure, learnt from the pixels away from `box`."""
    x, y, w, h = box
    away = np.ones(frame.shape[:2], bool)
    away[max(0, y - margin):y + h + margin, max(0, x - margin):x + w + margin] = False
    out = np.empty_like(bg)
    for c in range(3):
        src, dst = bg[..., c][away], frame[..., c][away].astype(np.float64)
        sums, counts = np.bincount(src, weights=dst, minlength=256), np.bincount(src, minlength=256)
        known = np.flatnonzero(counts >= 20)
        if len(known) < 2:
            out[..., c] = bg[..., c]
            continue
        lut = np.interp(np.arange(256), known, sums[known] / counts[known])
        out[..., c] = np.clip(lut[bg[..., c]], 0, 255).astype(np.uint8)
    return out


def person_mask(crop: np.ndarray, bg: np.ndarray, top_row: int) -> np.ndarray:
    """0/1 mask of what in `crop` is a person rather than the background `bg` (same size); `top_row`
    is the crop's first row in the frame (rows from FLOOR_ROW down may hold shadows)."""
    a = cv2.cvtColor(crop, cv2.COLOR_BGR2LAB).astype(np.float32)
    b = cv2.cvtColor(bg, cv2.COLOR_BGR2LAB).astype(np.float32)
    distance = np.sqrt(((a - b) ** 2).sum(axis=2))
    lightness = (a[..., 0] + 1) / (b[..., 0] + 1)
    chroma = np.sqrt(((a[..., 1:] - b[..., 1:]) ** 2).sum(axis=2))
    floor = (np.arange(crop.shape[0]) + top_row >= FLOOR_ROW)[:, None]
    shadow = floor & (lightness > SHADOW_LIGHTNESS[0]) & (lightness < SHADOW_LIGHTNESS[1]) & (chroma < SHADOW_CHROMA)
    mask = ((distance > PERSON_LAB_DISTANCE) & ~shadow).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    if n <= 1:
        return np.zeros_like(mask)
    mask = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(1 - mask, connectivity=4)
    border = set(labels[0]) | set(labels[-1]) | set(labels[:, 0]) | set(labels[:, -1])
    for k in range(1, n):
        if k not in border and stats[k, cv2.CC_STAT_AREA] <= MAX_HOLE_SHARE * mask.size:
            mask[labels == k] = 1
    return mask


def cut(frame: np.ndarray, bg: np.ndarray, box: tuple[int, int, int, int], source: int) -> Cutout | None:
    """The person in `box` of `frame` against the empty `bg`, trimmed to their mask (None if empty)."""
    x, y, w, h = box
    x0, y0, x1, y1 = max(0, x - 6), max(0, y - 6), min(frame.shape[1], x + w + 6), min(frame.shape[0], y + h)
    matched = exposure_matched(bg, frame, box)
    mask = person_mask(frame[y0:y1, x0:x1], matched[y0:y1, x0:x1], y0)
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return None
    r0, r1, c0, c1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (3, 3), 0)[r0:r1, c0:c1]  # soft edge, as a camera sees one
    return Cutout(frame[y0 + r0:y0 + r1, x0 + c0:x0 + c1].copy(), alpha, source)


def _whole(box: tuple[int, int, int, int], bottom_clear: int) -> bool:
    x, y, w, h = box
    return x >= EDGE_PX and y >= EDGE_PX and x + w <= WIDTH - EDGE_PX and y + h <= HEIGHT - bottom_clear


def cutout_frames(detections: Mapping[int, Sequence[Detection]], enters: int, leaves: int,
                  every: int) -> tuple[list[int], list[int]]:
    """Frames to cut one person from: walking (feet in view, as they come in), standing (mid-stay).

    `enters`/`leaves` are the marked frames (every `every`-th) around the person's visit.
    """
    def single(i: int, clear: int) -> bool:
        dets = detections.get(i, ())
        return len(dets) == 1 and _whole(dets[0].box, clear)

    walking = [i for i in range(enters - every, enters + 6 * every) if single(i, FEET_CLEAR_PX)][:WALK_CUTOUTS]
    mid = (enters + leaves) // 2
    around = sorted(range(enters + 4 * every, leaves - 4 * every, STAND_STEP), key=lambda i: abs(i - mid))
    standing = sorted([i for i in around if single(i, EDGE_PX)][:STAND_CUTOUTS])
    return walking, standing


def wanted_frames(people: Sequence[Mapping[str, int]], every: int) -> list[int]:
    """Every frame `cutout_frames` may look at, for the detector to run on first."""
    out: set[int] = set()
    for p in people:
        out.update(range(p["enters"] - every, p["enters"] + 6 * every))
        out.update(range(p["enters"] + 4 * every, p["leaves"] - 4 * every, STAND_STEP))
    return sorted(out)


def sprites_from(clip: Path, truth: Mapping, detections: Mapping[int, Sequence[Detection]]) -> tuple[
        np.ndarray, list[Sprite]]:
    """The hall's empty background and its people as sprites (`truth`: bench/data/hall_truth.json)."""
    every, runs = truth["every"], empty_runs(truth["empty"], truth["every"])
    picks = [cutout_frames(detections, p["enters"], p["leaves"], every) for p in truth["people"]]
    needed = {i for run in runs for i in run} | {i for w, s in picks for i in (*w, *s)}
    frames = read_at(clip, needed)
    background = median_background([frames[i] for run in runs for i in run])
    sprites = []
    for person, (walking, standing) in zip(truth["people"], picks):
        before = max((run for run in runs if run[-1] < person["enters"]), key=lambda r: r[-1], default=runs[0])
        local = median_background([frames[i] for i in before])

        def cuts(indices: list[int], local: np.ndarray = local) -> tuple[Cutout, ...]:
            found = (cut(frames[i], local, detections[i][0].box, i) for i in indices)
            return tuple(c for c in found if c is not None)

        walks = cuts(walking)
        if walks:
            sprites.append(Sprite(person["who"], walks, cuts(standing)))
    if len(sprites) < 2:
        raise ValueError(f"only {len(sprites)} people could be cut from {clip}")
    return background, sprites


# ---------------------------------------------------------------------------------------------------
# Rendering and truth


def _cutout_at(walker: Walker, sprite: Sprite, frame: int) -> Cutout:
    if not walker.moving(frame) and sprite.standing:
        return sprite.standing[(frame // 2) % len(sprite.standing)]
    n = len(sprite.walking)
    cycle = list(range(n)) + list(range(n - 2, 0, -1))  # there and back: 0 1 2 1 0 1 2 ...
    return sprite.walking[cycle[int(frame) % len(cycle)]]


def _placed(walker: Walker, sprite: Sprite, frame: int) -> tuple[np.ndarray, np.ndarray, int, int] | None:
    """The walker's scaled image and alpha and their top-left corner in the frame (may be off it)."""
    foot = walker.foot(frame)
    if foot is None:
        return None
    c = _cutout_at(walker, sprite, frame)
    scale = height_at(foot[1]) / sprite.ref_height
    w, h = max(1, round(c.alpha.shape[1] * scale)), max(1, round(c.alpha.shape[0] * scale))
    image = cv2.resize(c.image, (w, h), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(c.alpha, (w, h), interpolation=cv2.INTER_AREA)
    if walker.mirror:
        image, alpha = image[:, ::-1], alpha[:, ::-1]
    return image, alpha, round(foot[0] - w / 2), round(foot[1] - h)


def render(background: np.ndarray, sprites: Sequence[Sprite], walkers: Sequence[Walker],
           frames: int) -> Iterator[tuple[np.ndarray, list[TruthBox]]]:
    """Each generated frame (BGR uint8) and its truth, one at a time."""
    height, width = background.shape[:2]
    base = background.astype(np.float32)
    for f in range(frames):
        canvas = base.copy()
        layers = []  # (walker, alpha on the frame's window, window)
        present = [(w, p) for w in walkers if (p := _placed(w, sprites[w.sprite], f)) is not None]
        for walker, (image, alpha, x, y) in sorted(present, key=lambda item: item[0].foot(f)[1]):
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + alpha.shape[1], width), min(y + alpha.shape[0], height)
            if x1 <= x0 or y1 <= y0:
                layers.append((walker, alpha, None, (x, y)))
                continue
            a = alpha[y0 - y:y1 - y, x0 - x:x1 - x, None]
            window = canvas[y0:y1, x0:x1]
            window *= 1.0 - a
            window += a * image[y0 - y:y1 - y, x0 - x:x1 - x]
            layers.append((walker, alpha, (x0, y0, x1, y1), (x, y)))
        yield canvas.round().clip(0, 255).astype(np.uint8), _truth(layers, width, height)


def _truth(layers: list, width: int, height: int) -> list[TruthBox]:
    """Boxes, shares inside and seen, nearest first painted last: walk back from the nearest."""
    clear = np.ones((height, width), np.float32)  # how much of each pixel nobody nearer covers
    out = []
    for walker, alpha, window, (x, y) in reversed(layers):
        total = float(alpha.sum())
        if window is None or total <= 0:
            continue
        x0, y0, x1, y1 = window
        a = alpha[y0 - y:y1 - y, x0 - x:x1 - x]
        inside = float(a.sum()) / total
        seen = float((a * clear[y0:y1, x0:x1]).sum()) / total
        clear[y0:y1, x0:x1] *= 1.0 - a
        rows, cols = np.nonzero(a > 0.5)
        if inside < MIN_INSIDE or not len(rows):
            continue
        box = (x0 + int(cols.min()), y0 + int(rows.min()), int(cols.max() - cols.min() + 1),
               int(rows.max() - rows.min() + 1))
        out.append(TruthBox(walker.id, box, round(inside, 3), round(seen, 3)))
    return sorted(out, key=lambda t: t.id)


def true_crossings(walkers: Sequence[Walker], a: tuple[float, float], b: tuple[float, float], frames: int,
                   size: tuple[int, int] = (WIDTH, HEIGHT)) -> list[tuple[int, int, str]]:
    """(walker id, frame, "right" or "left" of a->b as seen on screen) each time a walker's foot, frame
    by frame over the first `frames` frames, passes through the segment a-b (frame fractions). A foot
    exactly on the line belongs to neither side: the crossing completes when it leaves on the other."""
    ax, ay, bx, by = a[0] * size[0], a[1] * size[1], b[0] * size[0], b[1] * size[1]

    def side(p: tuple[float, float]) -> float:
        return (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax)

    def along(p: tuple[float, float], q: tuple[float, float], sp: float, sq: float) -> float:
        k = sp / (sp - sq)  # where on p->q the side changes sign
        cx, cy = p[0] + k * (q[0] - p[0]), p[1] + k * (q[1] - p[1])
        return ((cx - ax) * (bx - ax) + (cy - ay) * (by - ay)) / ((bx - ax) ** 2 + (by - ay) ** 2)

    out = []
    for w in walkers:
        last: tuple[tuple[float, float], float] | None = None  # last foot off the line, and its side
        for f in range(max(0, math.ceil(w.path[0][0])), min(frames, math.floor(w.path[-1][0]) + 1)):
            q = w.foot(f)
            sq = side(q)
            if sq == 0:
                continue
            if last is not None and (last[1] > 0) != (sq > 0) and 0.0 <= along(last[0], q, last[1], sq) <= 1.0:
                out.append((w.id, f, "right" if sq > 0 else "left"))
            last = (q, sq)
    return out
