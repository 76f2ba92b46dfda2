"""Tracking accuracy on ground truth you can trust (issue 15), in one process.

1. A generated clip (bench/synthclip.py): real people cut from the shared hall clip walk known paths
   over its empty background, crossing each other on a counting line, standing, passing behind one
   another. Every frame is detected with the `person` stage and tracked by `TrackerHub` in frame
   order. Against the truth (bench/motmetrics_lite.py, IoU >= 0.5): MOTA, IDF1, ID switches,
   fragmentations, mostly tracked, for confirmed tracks (what the master counts) and for every
   tracked detection, tentative ones too; and the line's crossings by direction, counted from
   confirmed tracks as the master does, against the paths' own (goal: exact). One clip is reported
   in full (which track followed whom, where ids switched); six more seeds (other people on the
   same paths, jittered) in a line each.
2. The shared hall clip: a counting line whose crossings were counted by eye
   (bench/data/hall_truth.json, "lines"), against the tracker's count; and the confirmed track ids
   each of its six people got (one each is right).
3. Out-of-order completions: the same detections completed by 1, 2 and 4 simulated workers (each
   takes the next frame when free, service time random, so results finish out of order by less than
   the reorder wait) must give the same track ids for every detection and the same line counts as
   feeding them in frame order. A fourth run with a reorder wait shorter than the disorder shows
   what the check catches when it fails.

Baseline, same detections, same run: association by IoU with the previous frame alone (optimal
assignment at IoU >= 0.3, no motion model, no memory of unmatched tracks, no confirmation), and
nearest box centre in the previous frame.

Detection is the slow part: detections are cached per clip (its bytes, the model's sha256, the
stage) under --cache-dir, so reruns take seconds; --no-cache detects everything again.
Needs ../shared/samples (or --samples DIR) and the model cache (`make setup`); exits 2 without them.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import logging
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import benchlib, synthclip  # noqa: E402
from bench.motmetrics_lite import Evaluation, evaluate  # noqa: E402
from common.tasks import Detection  # noqa: E402
from master.tracking import NO_TRACK, TrackedFrame, TrackerConfig, TrackerHub  # noqa: E402
from master.tracking.assign import iou_matrix, match  # noqa: E402
from master.tracking.lines import Line, LineCounter, foot_point  # noqa: E402

try:  # the writer may move to common/ (a parallel change); either place will do
    from common.video import H264Writer  # type: ignore[import-not-found]
except ImportError:
    from receiver.jobs.video import H264Writer

log = logging.getLogger("bench.tracking_accuracy")

TRUTH = Path(__file__).resolve().parent / "data" / "hall_truth.json"
DEFAULT_SAMPLES = benchlib.ROOT.parent / "shared" / "samples"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "framehive-bench"
STAGE = "person"  # the default stage; --stage picks another
CACHE_VERSION = 1
CAMERA = "cam"
FPS = synthclip.FPS
SEEDS = "15,1,2,3,4,5,6"  # the first is reported in full, every one in a line
# the generated clip's line: the middle of the floor, drawn upwards (first direction: to the right)
SYNTH_LINE = Line("middle", (0.5, 1.0), (0.5, 0.55), ("right", "left"))
IOU_ONLY_MIN = 0.3  # the tracker's own match_iou
NEAREST_MAX_STEP = 0.5  # of the previous box's height: the farthest a centre may move in a frame
WORKERS = (1, 2, 4)
WORKER_LOAD = 0.8  # each simulated worker is busy this share of the time on average
SERVICE_SPREAD = (0.5, 1.5)  # service time: the mean times a uniform draw from this range
STRAGGLERS = (0.05, 2.0)  # this share of frames takes this many times longer
SHORT_WAIT_S = 0.1  # the reorder wait of the run meant to fail

Tracks = dict[int, list[tuple[int, tuple[int, int, int, int]]]]  # frame -> [(track id, box)]


# ---------------------------------------------------------------------------------------------------
# Detection, cached


class DetectionCache:
    """Detections of one clip's frames, in a JSON file named by everything they depend on."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.frames: dict[int, list[Detection]] = {}
        self.detected = 0  # frames detected in this run
        self.detect_s = 0.0
        if path is not None and path.is_file():
            raw = json.loads(path.read_text())
            self.frames = {int(i): [Detection(d["label"], d["score"], tuple(d["box"])) for d in dets]
                           for i, dets in raw.items()}

    def fill(self, clip: Path, wanted: Iterable[int], detector: Detector) -> dict[int, list[Detection]]:
        """Detections of the frames `wanted`, running `detector` on those not cached yet."""
        want = set(wanted)
        missing = want - self.frames.keys()
        if missing:
            log.info("%s: detecting %d frames (%d cached)", clip.name, len(missing), len(want) - len(missing))
            for i, frame in synthclip.frames_at(clip, missing):
                t0 = time.perf_counter()
                self.frames[i] = list(detector(frame))
                self.detect_s += time.perf_counter() - t0
                self.detected += 1
            self.save()
        return {i: self.frames.get(i, []) for i in sorted(want)}

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({str(i): [d.to_wire() for d in dets] for i, dets in sorted(self.frames.items())}))
        tmp.replace(self.path)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Detector:
    """A detector stage as a worker builds it, named by what its detections depend on."""

    stage: str  # the stage spec, e.g. "person"
    model_sha: str  # sha256 of the ONNX model it runs
    run: Callable[[Any], list[Detection]]

    def __call__(self, image: Any) -> list[Detection]:
        return self.run(image)


def load_detector(stage: str, threads: int) -> Detector:
    """`stage` built as a worker builds it; SystemExit(2) when the NanoDet model is not installed."""
    from common.pipeline import parse_stage
    from worker.detectors import DETECTORS, StageEnv
    from worker.models.store import ModelStore

    store = ModelStore()
    if not store.ready():
        log.error("the NanoDet model is not installed in %s (%s): run `make setup`", store.dir, store.problem())
        raise SystemExit(2)
    spec = parse_stage(stage)
    sha = json.loads(store.manifest_path.read_text())["onnx_sha256"]
    return Detector(stage, sha, DETECTORS[spec.name](spec, StageEnv(threads=threads)))


def cache_for(cache_dir: Path | None, clip: Path, detector: Detector) -> DetectionCache:
    """The cache of `clip`'s detections by `detector` (None dir: in memory only)."""
    if cache_dir is None:
        return DetectionCache(None)
    key = f"{CACHE_VERSION}|{file_sha256(clip)}|{detector.model_sha}|{detector.stage}"
    return DetectionCache(cache_dir / f"tracking-{clip.stem}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.json")


# ---------------------------------------------------------------------------------------------------
# Tracking: the hub, fed in a given completion order, and two baselines


def run_hub(detections: Sequence[Sequence[Detection]], order: Iterable[tuple[float, int]],
            config: TrackerConfig | None = None) -> tuple[list[TrackedFrame], Counter[str]]:
    """Offer frame `seq`'s detections at master time `now` for each (now, seq); what comes out, in order."""
    hub = TrackerHub(config)
    out: list[TrackedFrame] = []
    for now, seq in order:
        out += hub.offer(CAMERA, seq, seq / FPS, detections[seq], now)
        out += hub.poll(now)
    out += hub.flush(CAMERA)
    return out, hub.counters


def in_order(n: int) -> list[tuple[float, int]]:
    return [(seq / FPS, seq) for seq in range(n)]


def hub_tracks(frames: Iterable[TrackedFrame], *, confirmed_only: bool) -> Tracks:
    return {f.seq: [(d.track_id, d.box) for d in f.detections
                    if d.track_id != NO_TRACK and (d.confirmed or not confirmed_only)] for f in frames}


def hub_flagged(frames: Iterable[TrackedFrame]) -> dict[int, list[tuple[int, Any, bool]]]:
    """Every tracked detection with whether its track is confirmed: what the master's lines are fed."""
    return {f.seq: [(d.track_id, d.box, d.confirmed) for d in f.detections if d.track_id != NO_TRACK]
            for f in frames}


def iou_only(detections: Sequence[Sequence[Detection]], min_iou: float = IOU_ONLY_MIN) -> Tracks:
    """Baseline: each box takes the id of the previous frame's box it overlaps best (optimal one to one)."""
    out: Tracks = {}
    prev: list[tuple[int, tuple[int, int, int, int]]] = []
    next_id = 1
    for seq, dets in enumerate(detections):
        boxes = [d.box for d in dets]
        ids = [0] * len(boxes)
        for r, c in match(iou_matrix(boxes, [b for _, b in prev]), min_iou):
            ids[r] = prev[c][0]
        for r in range(len(ids)):
            if not ids[r]:
                ids[r], next_id = next_id, next_id + 1
        out[seq] = prev = list(zip(ids, boxes))
    return out


def nearest_centre(detections: Sequence[Sequence[Detection]], max_step: float = NEAREST_MAX_STEP) -> Tracks:
    """Baseline: each box takes the id of the nearest box centre of the previous frame (closest pairs first)."""
    def centre(b: tuple[int, int, int, int]) -> tuple[float, float]:
        return b[0] + b[2] / 2, b[1] + b[3] / 2

    out: Tracks = {}
    prev: list[tuple[int, tuple[int, int, int, int]]] = []
    next_id = 1
    for seq, dets in enumerate(detections):
        boxes = [d.box for d in dets]
        pairs = sorted((_dist(centre(b), centre(pb)), r, c) for r, b in enumerate(boxes)
                       for c, (_, pb) in enumerate(prev))
        ids, used = [0] * len(boxes), set()
        for dist, r, c in pairs:
            if not ids[r] and c not in used and dist <= max_step * prev[c][1][3]:
                ids[r] = prev[c][0]
                used.add(c)
        for r in range(len(ids)):
            if not ids[r]:
                ids[r], next_id = next_id, next_id + 1
        out[seq] = prev = list(zip(ids, boxes))
    return out


def _dist(a: tuple[float, float], b: tuple[float, float]) -> float:
    return ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5


def count_line(tracks: Any, line: Line, size: tuple[int, int]) -> tuple[dict[str, int], list[tuple[int, int, str]]]:
    """Crossings of `line` by these tracks, frame by frame in order, as the master counts them (entries of
    (id, box) are confirmed; (id, box, confirmed) from hub_flagged say it themselves)."""
    counter = LineCounter([line])
    events = []
    for seq in sorted(tracks):
        feet = [(tid, "person", foot_point(box, *size), *rest) for tid, box, *rest in tracks[seq]]
        events += [(c.track_id, seq, c.direction) for c in counter.observe(feet, seq / FPS)]
    counts = dict.fromkeys(line.directions, 0)
    for (_, direction, _), n in counter.totals.items():
        counts[direction] += n
    return counts, events


# ---------------------------------------------------------------------------------------------------
# 1. The generated clip


def generate(background: Any, sprites: Sequence[synthclip.Sprite], *, seed: int, frames: int,
             out: Path) -> tuple[list[synthclip.Walker], list[list[synthclip.TruthBox]]]:
    """Render the generated clip of `seed` to `out` (H.264 MP4); its walkers and per-frame truth."""
    walkers = synthclip.plan(seed, sprites)
    truth_frames = []
    with H264Writer(out, width=background.shape[1], height=background.shape[0], fps=FPS) as writer:
        for image, boxes in synthclip.render(background, sprites, walkers, frames):
            writer.write(image)
            truth_frames.append(boxes)
    for w in walkers:
        log.info("seed %d walker %d %s: %s (%s)", seed, w.id, w.name, sprites[w.sprite].who, w.what)
    return walkers, truth_frames


def generated_clip(background: Any, sprites: Sequence[synthclip.Sprite], detector: Detector, *, seed: int,
                   frames: int, cache_dir: Path | None, save: Path | None) -> dict[str, Any]:
    """Generate, detect, track and score the clip of one seed."""
    with tempfile.TemporaryDirectory(prefix="trackbench-") as tmp:
        path = save or Path(tmp) / f"generated-seed{seed}.mp4"
        walkers, truth_frames = generate(background, sprites, seed=seed, frames=frames, out=path)
        cache = cache_for(cache_dir, path, detector)
        found = cache.fill(path, range(frames), detector)
    detections = [found[i] for i in range(frames)]
    names = {w.id: w.name for w in walkers}
    gt = {f: [(t.id, t.box) for t in boxes if t.care] for f, boxes in enumerate(truth_frames)}
    ignore = {f: [t.box for t in boxes if not t.care] for f, boxes in enumerate(truth_frames)}
    size = (synthclip.WIDTH, synthclip.HEIGHT)
    released, _ = run_hub(detections, in_order(frames))
    runs = {"tracker_confirmed": hub_tracks(released, confirmed_only=True),
            "tracker_all": hub_tracks(released, confirmed_only=False),
            "iou_only": iou_only(detections), "nearest_centre": nearest_centre(detections)}
    evals = {name: evaluate(gt, tracks, ignore=ignore) for name, tracks in runs.items()}
    as_boxes = {f: [(("det", f, k), d.box) for k, d in enumerate(dets)] for f, dets in enumerate(detections)}
    detector_eval = evaluate(gt, as_boxes, ignore=ignore).summary
    true_events = synthclip.true_crossings(walkers, SYNTH_LINE.a, SYNTH_LINE.b, frames)
    true_counts = dict.fromkeys(SYNTH_LINE.directions, 0) | Counter(d for _, _, d in true_events)
    lines = {}
    fed = {**runs, "tracker_confirmed": hub_flagged(released)}
    for name in ("tracker_confirmed", "tracker_all", "iou_only", "nearest_centre"):
        counts, events = count_line(fed[name], SYNTH_LINE, size)
        lines[name] = {"counts": counts, "exact": counts == true_counts,
                       "events": [{"track": t, "frame": f, "direction": d,
                                   "walker": _walker_of(evals[name], t, f, names)} for t, f, d in events]}
    all_boxes = [t for boxes in truth_frames for t in boxes]
    return {
        "frames": frames, "seed": seed, "size": f"{size[0]}x{size[1]}", "fps": FPS,
        "walkers": [{"id": w.id, "name": w.name, "what": w.what, "person": sprites[w.sprite].who} for w in walkers],
        "truth": {"boxes": sum(len(v) for v in gt.values()), "dont_care_boxes": sum(len(v) for v in ignore.values()),
                  "hidden_over_half": sum(1 for t in all_boxes if t.care and t.seen < 0.5)},
        "detector": {"recall": round(detector_eval.recall, 4), "precision": round(detector_eval.precision, 4),
                     "boxes": detector_eval.tracker_boxes},
        "metrics": {name: ev.summary.to_dict() for name, ev in evals.items()},
        "line": {"name": SYNTH_LINE.name, "a": SYNTH_LINE.a, "b": SYNTH_LINE.b, "truth": true_counts,
                 "truth_events": [{"walker": names[w], "frame": f, "direction": d} for w, f, d in true_events],
                 **lines},
        "diagnosis": diagnosis(evals["tracker_confirmed"], names),
        "detection": {"frames_detected": cache.detected, "detect_s": round(cache.detect_s, 1)},
        "_detections": detections,
    }


def seed_summary(gen: dict[str, Any]) -> dict[str, Any]:
    """One seed's figures in a line: the tracker's and the IoU-only baseline's."""
    def brief(name: str) -> dict[str, Any]:
        m = gen["metrics"][name]
        return {"mota": m["mota"], "idf1": m["idf1"], "id_switches": m["id_switches"],
                "line_counts": gen["line"][name]["counts"], "line_exact": gen["line"][name]["exact"]}

    return {"seed": gen["seed"], "detector_recall": gen["detector"]["recall"], "line_truth": gen["line"]["truth"],
            "tracker_confirmed": brief("tracker_confirmed"), "tracker_all": brief("tracker_all"),
            "iou_only": brief("iou_only"),
            "switches": [f"{s['walker']}@{s['frame']}" for s in gen["diagnosis"]["switches"]],
            "tracks_on_several_walkers": gen["diagnosis"]["tracks_on_several_walkers"]}


def _walker_of(ev: Evaluation, track: int, frame: int, names: Mapping[int, str]) -> str | None:
    """The walker `track` was matched to nearest in time to `frame` (None: it matched nobody)."""
    spans = [(0 if a <= frame <= b else min(abs(frame - a), abs(frame - b)), o)
             for o, tracks in ev.tracks_of.items() if track in tracks for _, a, b in [tracks[track]]]
    return names[min(spans)[1]] if spans else None


def diagnosis(ev: Evaluation, names: Mapping[int, str]) -> dict[str, Any]:
    """Where the tracker went wrong: switches, interruptions, and which tracks followed whom."""
    walkers_of: dict[int, list[str]] = {}
    for o, spans in sorted(ev.tracks_of.items()):
        for h in spans:
            walkers_of.setdefault(h, []).append(names[o])
    return {
        "switches": [{"frame": s.frame, "walker": names[s.truth_id], "from_track": s.before, "to_track": s.after}
                     for s in ev.switches],
        "tracks_on_several_walkers": {str(h): w for h, w in sorted(walkers_of.items()) if len(w) > 1},
        "interrupted_at": {names[o]: list(frames) for o, frames in ev.fragments.items()},
        "tracks_per_walker": {names[o]: {str(h): {"frames": n, "first": a, "last": b} for h, (n, a, b) in spans.items()}
                              for o, spans in sorted(ev.tracks_of.items())},
    }


# ---------------------------------------------------------------------------------------------------
# 2. The hall clip


def hall_clip(clip: Path, truth: Mapping, hall: DetectionCache, detector: Detector, frames: int) -> dict[str, Any]:
    found = hall.fill(clip, range(frames), detector)
    detections = [found[i] for i in range(frames)]
    spec = truth["lines"][0]
    line = Line(spec["name"], tuple(spec["a"]), tuple(spec["b"]), tuple(spec["directions"]))
    true_counts = dict.fromkeys(line.directions, 0) | Counter(c["direction"] for c in spec["crossings"]
                                                                if c["frame"] < frames)
    released, _ = run_hub(detections, in_order(frames))
    size = (synthclip.WIDTH, synthclip.HEIGHT)
    runs = {"tracker_confirmed": hub_tracks(released, confirmed_only=True), "iou_only": iou_only(detections),
            "nearest_centre": nearest_centre(detections)}
    out: dict[str, Any] = {"frames": frames, "line": {k: spec[k] for k in ("name", "a", "b", "directions")},
                           "truth": true_counts, "how": spec["how"]}
    fed = {**runs, "tracker_confirmed": hub_flagged(released)}
    for name, tracks in runs.items():
        counts, events = count_line(fed[name], line, size)
        out[name] = {"counts": counts, "exact": counts == true_counts, "events": events,
                     **_ids_per_person(tracks, truth, frames)}
    out["_detections"] = detections
    return out


def _ids_per_person(tracks: Tracks, truth: Mapping, frames: int) -> dict[str, Any]:
    """Track ids seen during each person's visit (one each is right), and ids seen while nobody is there."""
    pad = truth["every"]
    visits = [(p["enters"] - pad, p["leaves"] + pad) for p in truth["people"] if p["enters"] < frames]
    per_person = [sorted({tid for f in range(a, min(b, frames)) for tid, _ in tracks.get(f, [])}) for a, b in visits]
    stray = sorted({tid for f, ts in tracks.items() if not any(a <= f < b for a, b in visits) for tid, _ in ts})
    return {"ids_per_person": [len(ids) for ids in per_person], "stray_ids": len(stray)}


# ---------------------------------------------------------------------------------------------------
# 3. Out-of-order completions


def completion_order(n: int, workers: int, seed: int) -> list[tuple[float, int]]:
    """(completion time, seq) by completion: frames captured at seq/FPS, each taken by the worker that
    is free first; service time is mean x U(SERVICE_SPREAD), a few stragglers take longer."""
    rng = random.Random(seed)
    mean = workers * WORKER_LOAD / FPS
    free = [0.0] * workers
    done = []
    for seq in range(n):
        start = max(seq / FPS, heapq.heappop(free))
        service = mean * rng.uniform(*SERVICE_SPREAD) * (STRAGGLERS[1] if rng.random() < STRAGGLERS[0] else 1.0)
        heapq.heappush(free, start + service)
        done.append((start + service, seq))
    return sorted(done)


def disorder(order: Sequence[tuple[float, int]]) -> dict[str, float]:
    """How far out of order: frames finished before an earlier one, and the longest any result had
    to wait for an earlier frame (seconds)."""
    finished = {seq: t for t, seq in order}
    behind, highest, latest, wait = 0, -1, 0.0, 0.0
    for _, seq in order:
        behind = max(behind, highest - seq)
        highest = max(highest, seq)
    for seq in sorted(finished):
        latest = max(latest, finished[seq])
        wait = max(wait, latest - finished[seq])
    return {"max_frames_behind": behind, "max_wait_s": round(wait, 3)}


def signature(frames: Sequence[TrackedFrame]) -> dict[int, tuple[tuple[int, bool], ...]]:
    return {f.seq: tuple((d.track_id, d.confirmed) for d in f.detections) for f in frames}


def out_of_order(detections: Sequence[Sequence[Detection]], line: Line, seed: int) -> dict[str, Any]:
    """The same detections through 1, 2 and 4 simulated workers against frame order."""
    size = (synthclip.WIDTH, synthclip.HEIGHT)
    n = len(detections)
    ref, _ = run_hub(detections, in_order(n))
    ref_sig = signature(ref)
    ref_counts, _ = count_line(hub_flagged(ref), line, size)
    runs = [(f"workers_{w}", w, None) for w in WORKERS] + [("workers_4_short_wait", 4, SHORT_WAIT_S)]
    out: dict[str, Any] = {"frame_order_counts": ref_counts}
    for name, workers, wait in runs:
        order = completion_order(n, workers, seed + workers)
        config = TrackerConfig(reorder_wait_s=wait) if wait else None
        released, counters = run_hub(detections, order, config)
        sig = signature(released)
        counts, _ = count_line(hub_flagged(released), line, size)
        differ = sum(1 for seq in ref_sig if sig.get(seq) != ref_sig[seq])
        out[name] = {**disorder(order), "reorder_wait_s": (config or TrackerConfig()).reorder_wait_s,
                     "in_frame_order": [f.seq for f in released] == sorted(f.seq for f in released),
                     "frames_differing": differ, "identical_tracks": differ == 0 and len(sig) == len(ref_sig),
                     "counts": counts, "identical_counts": counts == ref_counts,
                     "late_dropped": counters["late"], "gap_frames": counters["gap_frames"]}
    return out


# ---------------------------------------------------------------------------------------------------


def headline(gen: dict[str, Any], hall: dict[str, Any], seeds: list[dict[str, Any]], name: str) -> dict[str, Any]:
    m = gen["metrics"][name]
    return {"mota": m["mota"], "idf1": m["idf1"], "id_switches": m["id_switches"],
            "fragmentations": m["fragmentations"],
            "mostly_tracked_share": round(m["mostly_tracked"] / m["truth_objects"], 3) if m["truth_objects"] else 0,
            "line_counts": gen["line"][name]["counts"], "line_truth": gen["line"]["truth"],
            "line_exact": gen["line"][name]["exact"],
            "line_exact_seeds": f"{sum(s[name]['line_exact'] for s in seeds)}/{len(seeds)}",
            "mean_idf1_seeds": round(sum(s[name]["idf1"] for s in seeds) / len(seeds), 4),
            "hall_line_counts": hall[name]["counts"], "hall_line_truth": hall["truth"],
            "hall_line_exact": hall[name]["exact"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES, help="directory of the shared sample clips")
    p.add_argument("--frames", type=int, default=0, help="at most this many frames of each clip (0: all)")
    p.add_argument("--seeds", default=SEEDS, help="generated clips to make (the first is reported in full)")
    p.add_argument("--quick", action="store_true", help="the first seed only and 150 frames of each clip")
    p.add_argument("--stage", default=STAGE, help="the detector stage (e.g. person:0.3)")
    p.add_argument("--threads", type=int, default=2, help="detector threads")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where detections are cached")
    p.add_argument("--no-cache", action="store_true", help="detect every frame again (the cache is not used)")
    p.add_argument("--save-clip", type=Path, help="keep the first seed's generated clip (MP4) here")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    benchlib.setup_logging(args.log_level)
    clip = args.samples / synthclip.SAMPLE
    if not clip.is_file():
        log.error("sample clip %s not found: pass --samples DIR (the directory holding %s)", clip, synthclip.SAMPLE)
        return 2
    started, machine = time.monotonic(), benchlib.machine()
    seeds = [int(v) for v in args.seeds.split(",")][:1 if args.quick else None]
    limit = 150 if args.quick and not args.frames else args.frames
    truth = json.loads(TRUTH.read_text())
    detector = load_detector(args.stage, args.threads)
    cache_dir = None if args.no_cache else args.cache_dir
    hall_cache = cache_for(cache_dir, clip, detector)
    gen_frames = min(limit, synthclip.SCRIPT_FRAMES) if limit else synthclip.SCRIPT_FRAMES
    total = frame_count(clip)
    hall_frames = min(limit, total) if limit else total
    hall_dets = hall_cache.fill(clip, synthclip.wanted_frames(truth["people"], truth["every"]), detector)
    background, sprites = synthclip.sprites_from(clip, truth, hall_dets)
    runs = [generated_clip(background, sprites, detector, seed=seed, frames=gen_frames, cache_dir=cache_dir,
                           save=args.save_clip if k == 0 else None) for k, seed in enumerate(seeds)]
    gen, summaries = runs[0], [seed_summary(r) for r in runs]
    hall = hall_clip(clip, truth, hall_cache, detector, hall_frames)
    spec = truth["lines"][0]
    hall_line = Line(spec["name"], tuple(spec["a"]), tuple(spec["b"]), tuple(spec["directions"]))
    disorder_runs = {"generated": out_of_order(gen.pop("_detections"), SYNTH_LINE, seeds[0]),
                     "hall": out_of_order(hall.pop("_detections"), hall_line, seeds[0])}
    for r in runs[1:]:
        r.pop("_detections")
    identical = all(r[f"workers_{w}"]["identical_tracks"] and r[f"workers_{w}"]["identical_counts"]
                    for r in disorder_runs.values() for w in WORKERS)
    figure = headline(gen, hall, summaries, "tracker_confirmed")
    baseline = headline(gen, hall, summaries, "iou_only")
    figure["out_of_order_identical"] = identical
    exact = all(s["tracker_confirmed"]["line_exact"] for s in summaries) and figure["hall_line_exact"]
    result: dict[str, Any] = {
        "bench": "tracking_accuracy",
        "figure": figure,
        "baseline": baseline,
        "ratio": benchlib.ratio(figure["idf1"], baseline["idf1"]),
        "ratio_of": f"IDF1 on the generated clip (seed {seeds[0]}): confirmed tracks / IoU-only association",
        "goal": {"line_counts_exact": exact, "out_of_order_identical": identical, "met": exact and identical},
        "generated": gen,
        "seeds": summaries,
        "hall": hall,
        "out_of_order": disorder_runs,
        "timing": {"frames_detected": hall_cache.detected + sum(r["detection"]["frames_detected"] for r in runs),
                   "detect_s": round(hall_cache.detect_s + sum(r["detection"]["detect_s"] for r in runs), 1),
                   "wall_s": round(time.monotonic() - started, 1)},
        "params": {"stage": args.stage, "iou_threshold": 0.5, "seeds": seeds, "frames_limit": limit,
                   "cache": str(cache_dir) if cache_dir else None, "workers": list(WORKERS)},
        "machine": benchlib.finish_machine(machine),
    }
    benchlib.emit(result)
    return 0


def frame_count(clip: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(clip))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


if __name__ == "__main__":
    sys.exit(main())
