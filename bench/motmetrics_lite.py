"""Multi-object tracking accuracy against ground truth: CLEAR-MOT (MOTA, MOTP), ID measures (IDF1),
fragmentations and mostly-tracked shares. Pure; evaluation only (the bench, never the cluster).

Inputs are per-frame lists of (id, box), boxes (x, y, w, h) in pixels; a truth box and a tracker box
match when their IoU is at least `iou_threshold` (0.5 by default).

CLEAR-MOT (Bernardin and Stiefelhagen, 2008), frame by frame in frame order:
1. a pair matched in the previous frame stays matched while both are still there and still overlap
   enough, even if another pair now overlaps more (continuity before geometry);
2. the truth and tracker boxes still free are matched one to one, the most pairs first and then the
   largest total IoU (Hungarian method, master/tracking/assign.py);
3. a truth object matched to a tracker id other than the one it was last matched to (in any earlier
   frame) is an ID switch; unmatched truth boxes are misses, unmatched tracker boxes false positives.
MOTA = 1 - (misses + false positives + ID switches) / truth boxes; MOTP here is the mean IoU of the
matched pairs (higher is better).

Fragmentations: for each truth object, the times its matched run is interrupted (tracked in a frame,
missed in the next, tracked again later). Mostly tracked / lost: matched in >= 80 % / < 20 % of the
frames it is present in. A "fragmented truth" is one matched to more than one tracker id overall.

ID measures (Ristani et al., 2016): every truth trajectory is paired with at most one tracker
trajectory, and vice versa, to maximise IDTP, the number of frames where a pair's boxes match;
IDF1 = 2 IDTP / (truth boxes + tracker boxes), IDP = IDTP / tracker boxes, IDR = IDTP / truth boxes.

Don't-care regions (`ignore`, e.g. a person mostly outside the frame): a tracker box that matches
an ignore box and no truth box is removed before anything is counted, so finding such a person is
neither rewarded nor punished.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from master.tracking.assign import hungarian, iou_matrix

Box = tuple[float, float, float, float]  # x, y, w, h in pixels
Frames = Mapping[int, Sequence[tuple[Hashable, Box]]]  # frame -> [(id, box)]
IOU_THRESHOLD = 0.5
MOSTLY_TRACKED = 0.8  # share of its frames a truth object is matched in to count as mostly tracked
MOSTLY_LOST = 0.2  # below this share it is mostly lost


@dataclass(frozen=True)
class Switch:
    """A truth object taken over by another tracker id."""

    frame: int
    truth_id: Hashable
    before: Hashable  # the tracker id it was last matched to
    after: Hashable


@dataclass(frozen=True)
class Summary:
    """The figures of one evaluation (counts are boxes unless named otherwise)."""

    frames: int
    truth_boxes: int
    tracker_boxes: int
    matches: int
    misses: int
    false_positives: int
    id_switches: int
    fragmentations: int
    mota: float
    motp_iou: float  # mean IoU of matched pairs; 0 when nothing matched
    recall: float
    precision: float
    idtp: int
    idf1: float
    idp: float
    idr: float
    truth_objects: int
    tracker_ids: int
    mostly_tracked: int
    partly_tracked: int
    mostly_lost: int
    fragmented_truths: int  # truth objects matched to more than one tracker id

    def to_dict(self, digits: int = 4) -> dict[str, float | int]:
        return {k: round(v, digits) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Evaluation:
    """A summary and the events behind it, for finding where a tracker went wrong."""

    summary: Summary
    switches: tuple[Switch, ...]
    fragments: dict[Hashable, tuple[int, ...]]  # truth id -> frames where a matched run was interrupted
    hyp_of: dict[Hashable, Hashable | None]  # truth id -> the tracker id the ID measures paired it with
    tracks_of: dict[Hashable, dict[Hashable, tuple[int, int, int]]]  # truth id -> tracker id -> (frames, first, last)


def evaluate(truth: Frames, tracker: Frames, *, iou_threshold: float = IOU_THRESHOLD,
             ignore: Mapping[int, Sequence[Box]] | None = None) -> Evaluation:
    """Compare a tracker's output with the truth over every frame either of them names."""
    frames = sorted(set(truth) | set(tracker))
    hyps = {f: _drop_ignored(truth.get(f, ()), tracker.get(f, ()), (ignore or {}).get(f, ()), iou_threshold)
            for f in frames}
    clear = _Clear(iou_threshold)
    for f in frames:
        clear.step(f, truth.get(f, ()), hyps[f])
    idtp, hyp_of = _id_pairs({f: truth.get(f, ()) for f in frames}, hyps, iou_threshold)
    n_truth = sum(len(truth.get(f, ())) for f in frames)
    n_hyp = sum(len(h) for h in hyps.values())
    matched = clear.matches
    shares = [clear.tracked[o] / n for o, n in clear.present.items()]
    summary = Summary(
        frames=len(frames), truth_boxes=n_truth, tracker_boxes=n_hyp, matches=matched,
        misses=n_truth - matched, false_positives=n_hyp - matched, id_switches=len(clear.switches),
        fragmentations=sum(len(v) for v in clear.fragments().values()),
        mota=1.0 - ((n_truth - matched) + (n_hyp - matched) + len(clear.switches)) / n_truth if n_truth else 0.0,
        motp_iou=clear.iou_sum / matched if matched else 0.0,
        recall=matched / n_truth if n_truth else 0.0, precision=matched / n_hyp if n_hyp else 0.0,
        idtp=idtp, idf1=2 * idtp / (n_truth + n_hyp) if n_truth + n_hyp else 0.0,
        idp=idtp / n_hyp if n_hyp else 0.0, idr=idtp / n_truth if n_truth else 0.0,
        truth_objects=len(clear.present), tracker_ids=len({i for h in hyps.values() for i, _ in h}),
        mostly_tracked=sum(s >= MOSTLY_TRACKED for s in shares),
        partly_tracked=sum(MOSTLY_LOST <= s < MOSTLY_TRACKED for s in shares),
        mostly_lost=sum(s < MOSTLY_LOST for s in shares),
        fragmented_truths=sum(len(ids) > 1 for ids in clear.spans.values()))
    return Evaluation(summary, tuple(clear.switches), clear.fragments(), hyp_of,
                      {o: dict(spans) for o, spans in clear.spans.items()})


class _Clear:
    """The CLEAR-MOT state carried from frame to frame."""

    def __init__(self, iou_threshold: float) -> None:
        self.thr = iou_threshold
        self.previous: dict[Hashable, Hashable] = {}  # truth id -> tracker id, matched in the previous frame
        self.last: dict[Hashable, Hashable] = {}  # truth id -> tracker id it was last matched to, ever
        self.matches, self.iou_sum = 0, 0.0
        self.switches: list[Switch] = []
        self.present: Counter[Hashable] = Counter()  # truth id -> frames present
        self.tracked: Counter[Hashable] = Counter()  # truth id -> frames matched
        self.runs: dict[Hashable, list[tuple[int, bool]]] = defaultdict(list)  # truth id -> (frame, matched)
        self.spans: dict[Hashable, dict[Hashable, tuple[int, int, int]]] = defaultdict(dict)  # o -> h -> n, first, last

    def step(self, frame: int, truth: Sequence[tuple[Hashable, Box]], hyp: Sequence[tuple[Hashable, Box]]) -> None:
        iou = iou_matrix([b for _, b in truth], [b for _, b in hyp])
        t_ids, h_ids = [i for i, _ in truth], [i for i, _ in hyp]
        pairs = self._kept(iou, t_ids, h_ids)
        free_t = [r for r in range(len(truth)) if r not in {r for r, _ in pairs}]
        free_h = [c for c in range(len(hyp)) if c not in {c for _, c in pairs}]
        pairs += _best_pairs(iou, free_t, free_h, self.thr)
        current = {}
        for r, c in pairs:
            o, h = t_ids[r], h_ids[c]
            if o in self.last and self.last[o] != h:
                self.switches.append(Switch(frame, o, self.last[o], h))
            self.last[o] = current[o] = h
            n, first, _ = self.spans[o].get(h, (0, frame, frame))
            self.spans[o][h] = (n + 1, first, frame)
            self.iou_sum += float(iou[r, c])
        self.matches += len(pairs)
        for o in t_ids:
            self.present[o] += 1
            self.tracked[o] += o in current
            self.runs[o].append((frame, o in current))
        self.previous = current

    def _kept(self, iou: np.ndarray, t_ids: list[Hashable], h_ids: list[Hashable]) -> list[tuple[int, int]]:
        """The previous frame's pairs that are still both here and still overlap enough."""
        col = {h: c for c, h in enumerate(h_ids)}
        return [(r, col[self.previous[o]]) for r, o in enumerate(t_ids)
                if o in self.previous and self.previous[o] in col and iou[r, col[self.previous[o]]] >= self.thr]

    def fragments(self) -> dict[Hashable, tuple[int, ...]]:
        """Per truth id, the frames where a matched run broke off and a later frame matched again."""
        out = {}
        for o, run in self.runs.items():
            matched = [i for i, (_, m) in enumerate(run) if m]
            if not matched:
                continue
            span = run[matched[0]:matched[-1] + 1]
            breaks = tuple(f for (_, was), (f, now) in zip(span, span[1:]) if was and not now)
            if breaks:
                out[o] = breaks
        return out


def _best_pairs(iou: np.ndarray, rows: list[int], cols: list[int], thr: float) -> list[tuple[int, int]]:
    """Rows matched to columns at IoU >= thr: the most pairs, then the largest total IoU."""
    if not rows or not cols:
        return []
    sub = iou[np.ix_(rows, cols)]
    allowed = sub >= thr
    if not allowed.any():
        return []
    bonus = float(min(len(rows), len(cols)) + 1)  # one more pair always outweighs any IoU total
    cost = np.where(allowed, -(bonus + sub), 0.0).tolist()
    return [(rows[i], cols[j]) for i, j in hungarian(cost) if allowed[i, j]]


def _drop_ignored(truth: Sequence[tuple[Hashable, Box]], hyp: Sequence[tuple[Hashable, Box]],
                  ignore: Sequence[Box], thr: float) -> list[tuple[Hashable, Box]]:
    """`hyp` without the boxes that match an ignore box and overlap no truth box enough."""
    if not ignore or not hyp:
        return list(hyp)
    near_truth = (iou_matrix([b for _, b in hyp], [b for _, b in truth]) >= thr).any(axis=1) if truth else \
        np.zeros(len(hyp), bool)
    candidates = [c for c in range(len(hyp)) if not near_truth[c]]
    iou = iou_matrix([hyp[c][1] for c in candidates], list(ignore))
    dropped = {candidates[r] for r, _ in _best_pairs(iou, list(range(len(candidates))), list(range(len(ignore))),
                                                     thr)}
    return [h for c, h in enumerate(hyp) if c not in dropped]


def _id_pairs(truth: Frames, hyp: Frames, thr: float) -> tuple[int, dict[Hashable, Hashable | None]]:
    """IDTP of the best one-to-one pairing of truth and tracker trajectories, and that pairing."""
    together: Counter[tuple[Hashable, Hashable]] = Counter()  # (truth id, tracker id) -> frames they match
    t_all: dict[Hashable, None] = {}
    h_all: dict[Hashable, None] = {}
    for f in truth:
        t, h = truth[f], hyp.get(f, ())
        t_all.update(dict.fromkeys(i for i, _ in t))
        h_all.update(dict.fromkeys(i for i, _ in h))
        iou = iou_matrix([b for _, b in t], [b for _, b in h])
        for r, c in zip(*np.nonzero(iou >= thr)):
            together[t[r][0], h[c][0]] += 1
    paired = {h for _, h in together}
    t_ids, h_ids = list(t_all), [h for h in h_all if h in paired]
    hyp_of: dict[Hashable, Hashable | None] = dict.fromkeys(t_ids)
    if not t_ids or not h_ids:
        return 0, hyp_of
    cost = [[-float(together[o, h]) for h in h_ids] for o in t_ids]
    idtp = 0
    for r, c in hungarian(cost):
        if together[t_ids[r], h_ids[c]]:
            idtp += together[t_ids[r], h_ids[c]]
            hyp_of[t_ids[r]] = h_ids[c]
    return idtp, hyp_of
