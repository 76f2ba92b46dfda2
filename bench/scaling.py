"""The scaling curve: results/s against ideal as logical workers go from 1 to 128, with many cameras.

Figure, for each worker count W: a real master (`python -m master`), real receivers (`python -m
receiver`, 250 UDP ports each) and real workers (`python -m worker --loops K`: K pull loops per
process, each registered as its own worker, 32 per process), running `sleep:MS`, a stage that holds
each task MS milliseconds without using the CPU, so the workers' cores stay free and what limits the
curve is coordination. Cameras are simulated by one bench process that paces UDP datagrams (one
synthetic 160x120 JPEG per datagram, the frame protocol's own encoder) to every camera port at
`--fps`, so up to 1,000 cameras cost one process instead of 1,000 publishers; the receivers
reassemble, buffer and forward them to the master as they would any camera's.

Each point runs two phases: a light one (cameras offering ~0.7 of the ideal, for latency when nothing
queues) and a saturated one (cameras offering `--overload` x the ideal, for throughput: results/s,
efficiency = results/s / ideal, master CPU per result). ideal = W / task time, capped by what the
cameras offered. Latency is capture -> result stored (`latency_ms` of sampled cameras' results).

Baseline, same run, same process layout: the same W loops running the same pipeline on the same
JPEG (decode + sleep) with no master, receiver or network: what W logical workers can do on this
machine with no coordination at all.

The knee: the last point whose efficiency is still >= 0.9; beyond it, added workers buy less than
0.9 of their ideal. The goal point (64 workers x 50 ms) runs twice and the better round counts (a
neighbour's burst only ever lowers a round; both are listed); before each point the bench waits a
few seconds for other processes to go quiet. Writes the curve as a PNG and the JSON with
--write-docs; docs/SCALING.md reads them.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import benchlib  # noqa: E402
from cluster.local import LocalCluster, free_udp_ports  # noqa: E402
from common.protocol import LOOPBACK_CHUNK_BYTES, encode_frame  # noqa: E402

log = logging.getLogger("bench.scaling")

WORKERS = (1, 2, 4, 8, 16, 32, 64, 128)
QUICK_WORKERS = (1, 8, 64)
TASK_MS = 50
SHORT_TASK = (20, (8, 16, 32, 64))  # the default run adds these points with 20 ms tasks
LOOPS_PER_PROCESS = 32  # logical workers per worker process
PORTS_PER_RECEIVER = 250  # a receiver takes at most 256 ports
MAX_CAMERAS = 1000
CAMERA_FPS = 3.0
OVERLOAD = 1.25  # saturated phase: cameras offer this many times the ideal
LIGHT_LOAD = 0.7  # light phase: ... and this share of it
FRAME = (160, 120)  # small, so decoding (~0.08 ms) stays far below the task time
LATENCY_PORTS = 64  # cameras whose results are read back for latency
GOAL_EFFICIENCY = 0.9
GOAL_ROUNDS = 2  # the goal point runs this many times; the best round is its figure, all are listed
QUIET_WAIT_S = 10.0  # before each point, wait at most this long for other processes to go quiet
GOAL_AT = (64, 50)  # workers, task ms
DOCS = benchlib.ROOT / "docs"


@dataclass(frozen=True)
class Phases:
    """How long each part of a point runs, in seconds."""

    light_warmup_s: float
    light_s: float
    sat_warmup_s: float
    sat_s: float
    bare_s: float


FULL = Phases(light_warmup_s=3.0, light_s=6.0, sat_warmup_s=4.0, sat_s=10.0, bare_s=3.0)
QUICK = Phases(light_warmup_s=2.0, light_s=4.0, sat_warmup_s=3.0, sat_s=6.0, bare_s=2.0)


def synthetic_jpeg(size: tuple[int, int] = FRAME) -> bytes:
    """A gradient with noise: decodes like a camera frame of that size, made here, no file needed."""
    import cv2
    import numpy as np

    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    img = np.dstack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h)]).astype(np.uint8)
    img = cv2.add(img, np.random.default_rng(7).integers(0, 40, (h, w, 3), dtype=np.uint8))
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()


# ----- the camera fleet: one process pacing every camera port -------------------------------------


class Fleet:
    """Controls shared with the camera process: how many cameras send now, and how many frames went."""

    def __init__(self, ctx: Any, ports: list[int], fps: float) -> None:
        self.ports, self.fps = ports, fps
        self.active = ctx.Value("i", 0)
        self.sent = ctx.Value("q", 0)
        self.late = ctx.Value("q", 0)
        self.stop = ctx.Event()
        self.proc = ctx.Process(target=run_cameras, name="cameras",
                                args=(ports, fps, self.active, self.sent, self.late, self.stop))

    def start(self, active: int) -> None:
        self.set_active(active)
        self.proc.start()

    def set_active(self, n: int) -> None:
        with self.active.get_lock():
            self.active.value = min(n, len(self.ports))

    def close(self) -> None:
        self.stop.set()
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


def run_cameras(ports: list[int], fps: float, active: Any, sent: Any, late: Any, stop: Any) -> None:
    """Send frame k of camera i at t0 + (k + i/n)/fps, n = the cameras active now: an even stream.
    Falling more than a second behind skips ahead (counted as late) instead of bursting."""
    jpeg = synthetic_jpeg()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    n, t0, k, seqs = 0, 0.0, 0, [0] * len(ports)
    while not stop.is_set():
        if active.value != n:
            n, t0, k = active.value, time.monotonic(), 0
        if n == 0:
            time.sleep(0.01)
            continue
        rate = n * fps
        due = int((time.monotonic() - t0) * rate)
        if due - k > rate:
            late.value += due - k
            k = due
        for j in range(k, due):
            i = j % n
            for datagram in encode_frame(jpeg, stream_id=i, seq=seqs[i], capture_ns=time.time_ns(),
                                         chunk_bytes=LOOPBACK_CHUNK_BYTES):
                sock.sendto(datagram, ("127.0.0.1", ports[i]))
            seqs[i] += 1
        if due > k:
            with sent.get_lock():
                sent.value += due - k
            k = due
        time.sleep(min(0.002, max(0.0, (k + 1) / rate - (time.monotonic() - t0))))
    sock.close()


# ----- the baseline: the same loops with nothing in between ---------------------------------------


def _bare_process(loops: int, pipeline: str, seconds: float, barrier: Any, out: Any) -> None:
    import cv2

    from worker.detectors import StageEnv
    from worker.pipeline import StageCache, process_payload

    cv2.setNumThreads(1)
    stages, jpeg = StageCache(StageEnv(threads=1)), synthetic_jpeg()
    process_payload(pipeline, jpeg, stages)
    counts = [0] * loops
    barrier.wait(60)
    end = time.monotonic() + seconds

    def loop(i: int) -> None:
        while time.monotonic() < end:
            process_payload(pipeline, jpeg, stages)
            counts[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(loops)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(sum(counts))


def bare_rate(workers: int, per_process: int, pipeline: str, seconds: float) -> float:
    """Tasks/s of `workers` loops (`per_process` per process) running the pipeline with no master."""
    layout = _layout(workers, per_process)
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(len(layout)), ctx.Queue()
    procs = [ctx.Process(target=_bare_process, args=(k, pipeline, seconds, barrier, out)) for k in layout]
    for p in procs:
        p.start()
    try:
        total = sum(out.get(timeout=seconds + 90) for _ in procs)
    finally:
        for p in procs:
            p.join(10)
    return total / seconds


def _layout(workers: int, per_process: int) -> list[int]:
    """Loops per worker process: full processes of `per_process`, the rest in one more."""
    full, rest = divmod(workers, per_process)
    return [per_process] * full + ([rest] if rest else [])


# ----- one point of the curve ---------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One measured configuration."""

    workers: int
    task_ms: int
    fps: float
    overload: float
    loops_per_process: int = LOOPS_PER_PROCESS

    @property
    def capacity(self) -> float:
        """Results/s the workers could give with free coordination."""
        return self.workers * 1000.0 / self.task_ms

    def cameras(self, load: float) -> int:
        return max(1, min(MAX_CAMERAS, math.ceil(load * self.capacity / self.fps)))


def _master_snapshot(client: Any, master_pid: int, pids: dict[str, list[int]], fleet: Fleet) -> dict[str, Any]:
    """Clocks, CPU and frames sent read just before asking for the master's counters, which it reads
    first thing: with 1,000 cameras a stats call takes long enough to skew a window read after it."""
    out = {"t": time.monotonic(), "sent": fleet.sent.value, "master_cpu_s": benchlib.cpu_seconds([master_pid]),
           "cpu_s": {role: benchlib.cpu_seconds(p) for role, p in pids.items()}}
    stats = client.get_stats()
    return {**out, "completed": int(stats["counters"].get("completed", 0)), "counters": dict(stats["counters"]),
            "receivers": _receiver_counters(stats)}


def _receiver_counters(stats: dict[str, Any]) -> dict[str, int]:
    """Every receiver's per-port counters, summed (frames complete, dropped while the master was slow...)."""
    total: dict[str, int] = {}
    for source in stats.get("sources", {}).values():
        for counters in source.get("ports", {}).values():
            for k, v in counters.items() if isinstance(counters, dict) else ():
                total[k] = total.get(k, 0) + int(v)
    return total


def _window(before: dict, after: dict) -> dict[str, Any]:
    seconds, sent = after["t"] - before["t"], after["sent"] - before["sent"]
    done = after["completed"] - before["completed"]
    master_ms = (after["master_cpu_s"] - before["master_cpu_s"]) * 1000
    drops = {k: after["counters"].get(k, 0) - before["counters"].get(k, 0)
             for k in ("dropped_overflow", "dropped_stale", "lease_expired", "stale_completions", "retried")}
    return {"seconds": round(seconds, 2), "results": done, "results_per_s": round(done / seconds, 1),
            "offered_per_s": round(sent / seconds, 1),
            "master_cpu_ms_per_result": round(master_ms / max(done, 1), 3),
            "master_cores": round(master_ms / 1000 / seconds, 3),
            "cores_by_role": {r: round((after["cpu_s"][r] - before["cpu_s"][r]) / seconds, 3) for r in after["cpu_s"]},
            "master_drops": {k: v for k, v in drops.items() if v},
            "receiver_counters": {k: v - before["receivers"].get(k, 0) for k, v in after["receivers"].items()
                                  if v - before["receivers"].get(k, 0)}}


def _latency(client: Any, ports: list[int], t0: float, t1: float) -> dict[str, Any]:
    """Capture -> stored latency of results completed between t0 and t1 (wall clock) on sampled cameras."""
    step = max(1, len(ports) // LATENCY_PORTS)
    lat: list[float] = []
    for port in ports[::step]:
        page = client.get_results(port, 0, 1000)
        lat += [r["latency_ms"] for r in page["results"] if t0 <= r["completed_at"] < t1 and r["status"] == "ok"]
    return benchlib.latency_summary(lat)


def _measure(cluster: LocalCluster, fleet: Fleet, seconds: float, pids: dict[str, list[int]],
             ports: list[int]) -> dict[str, Any]:
    master_pid = cluster.procs[0].popen.pid
    with cluster.client() as client:
        wall0 = time.time()
        meter = benchlib.CpuMeter([p for group in pids.values() for p in group] + [master_pid])
        meter.start()
        before = _master_snapshot(client, master_pid, pids, fleet)
        _wait_alive(cluster, seconds)
        cores, wall1 = meter.stop(), time.time()
        after = _master_snapshot(client, master_pid, pids, fleet)
        out = _window(before, after)
        out["latency"] = _latency(client, ports, wall0, wall1)
    out["machine_cores"] = cores
    return out


def _wait_alive(cluster: LocalCluster, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        dead = [p.name for p in cluster.procs if not p.alive()]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited during the run (logs in {cluster.log_dir})")
        time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))


def start_roles(cluster: LocalCluster, point: Point, ports: list[int], master_args: list[str]) -> dict[str, list[int]]:
    """Master, receivers (PORTS_PER_RECEIVER each), worker processes; the pids of each role."""
    pipeline = f"sleep:{point.task_ms}"
    # every role is on 127.0.0.1 here: one "host" holds all the workers' connections (see docs/SCALING.md)
    cluster.start_master("--log-level", "WARNING", "--max-connections-per-host", "256", *master_args)
    receivers = []
    for r, first in enumerate(range(0, len(ports), PORTS_PER_RECEIVER)):
        receivers.append(cluster.start_receiver(ports[first:first + PORTS_PER_RECEIVER], "--pipeline", pipeline,
                                                name=f"receiver{r}"))
    workers = [cluster.spawn(f"worker{i}", "worker", "--master", cluster.master_url, "--name", f"w{i}",
                             "--loops", str(k), "--threads", "1", "--preload", pipeline, "--log-level", "WARNING")
               for i, k in enumerate(_layout(point.workers, point.loops_per_process))]
    cluster.wait_workers(point.workers, 60)
    return {"receivers": [p.popen.pid for p in receivers], "workers": [p.popen.pid for p in workers]}


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the most results/s (a neighbour's burst only ever lowers a round), listing all."""
    best = max(runs, key=lambda r: r["results_per_s"])
    return {**best, "rounds_efficiency": [r["efficiency"] for r in runs],
            "rounds_other_cores": [r["saturated"]["machine_cores"]["other_cores"] for r in runs]}


def run_point(point: Point, phases: Phases, master_args: list[str]) -> dict[str, Any]:
    """Start a cluster for `point`, run the light then the saturated phase, stop; one curve point."""
    busy_before = benchlib.wait_quiet(QUIET_WAIT_S)  # a neighbour's burst halves a point: let it pass first
    sat_cams, light_cams = point.cameras(point.overload), point.cameras(LIGHT_LOAD)
    ports = free_udp_ports(sat_cams)
    ctx = mp.get_context("spawn")
    fleet = Fleet(ctx, ports, point.fps)
    log.info("%d workers x %d ms: %d cameras at %.1f fps saturated, %d light", point.workers, point.task_ms,
             sat_cams, point.fps, light_cams)
    with LocalCluster() as cluster:
        pids = start_roles(cluster, point, ports, master_args)
        fleet.start(light_cams)
        pids["cameras"] = [fleet.proc.pid]
        try:
            _wait_alive(cluster, phases.light_warmup_s)
            light = _measure(cluster, fleet, phases.light_s, pids, ports[:light_cams])
            fleet.set_active(sat_cams)
            _wait_alive(cluster, phases.sat_warmup_s)
            sat = _measure(cluster, fleet, phases.sat_s, pids, ports)
            late = fleet.late.value
        finally:
            fleet.close()
    ideal = min(point.capacity, sat["offered_per_s"])
    eff = round(sat["results_per_s"] / ideal, 3) if ideal else None
    log.info("%d workers: %.0f results/s of ideal %.0f (efficiency %.3f), master %.3f ms CPU/result, light p50 "
             "%s ms p95 %s ms; other processes used %.2f cores", point.workers, sat["results_per_s"], ideal, eff,
             sat["master_cpu_ms_per_result"], light["latency"]["p50_ms"], light["latency"]["p95_ms"],
             sat["machine_cores"]["other_cores"])
    return {"workers": point.workers, "task_ms": point.task_ms, "cameras": sat_cams, "light_cameras": light_cams,
            "camera_fps": point.fps, "ideal_per_s": round(ideal, 1), "results_per_s": sat["results_per_s"],
            "efficiency": eff, "master_cpu_ms_per_result": sat["master_cpu_ms_per_result"],
            "latency_light": light["latency"], "latency_saturated": sat["latency"],
            "saturated": sat, "light": light, "camera_frames_late": late, "busy_cores_before": busy_before}


# ----- the curve ----------------------------------------------------------------------------------


def find_knee(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The last point (in worker order) with efficiency >= GOAL_EFFICIENCY before the first below it."""
    knee = None
    for p in sorted(points, key=lambda p: p["workers"]):
        if (p["efficiency"] or 0) < GOAL_EFFICIENCY:
            break
        knee = p
    ceiling = max(points, key=lambda p: p["results_per_s"])
    return {"workers": knee["workers"] if knee else None,
            "results_per_s": knee["results_per_s"] if knee else None,
            "ceiling_results_per_s": ceiling["results_per_s"], "ceiling_at_workers": ceiling["workers"],
            "rule": f"last worker count with efficiency >= {GOAL_EFFICIENCY} before the first below it"}


def draw(curves: dict[int, list[dict[str, Any]]], knee: dict[str, Any], path: Path, title: str) -> None:
    """Results/s against ideal and the bare loops, efficiency, latency and master CPU, by worker count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(17, 9))
    (ax_rate, ax_eff, ax_cores), (ax_lat, ax_sat, ax_cpu) = axes
    for task_ms, pts in sorted(curves.items(), reverse=True):
        pts = sorted(pts, key=lambda p: p["workers"])
        w = [p["workers"] for p in pts]
        ax_rate.plot(w, [p["results_per_s"] for p in pts], "o-", label=f"framehive, {task_ms} ms tasks")
        ax_rate.plot(w, [p["ideal_per_s"] for p in pts], "--", color="grey", alpha=0.7,
                     label=f"ideal (W / {task_ms} ms, capped by offered)")
        if all(p.get("bare_per_s") for p in pts):
            ax_rate.plot(w, [p["bare_per_s"] for p in pts], ":", label=f"bare loops, no master ({task_ms} ms)")
        ax_eff.plot(w, [p["efficiency"] for p in pts], "o-", label=f"{task_ms} ms tasks")
        ax_lat.plot(w, [p["latency_light"]["p50_ms"] for p in pts], "o-", label=f"p50, {task_ms} ms, ~0.7 load")
        ax_lat.plot(w, [p["latency_light"]["p95_ms"] for p in pts], "s--", label=f"p95, {task_ms} ms, ~0.7 load")
        ax_sat.plot(w, [p["latency_saturated"]["p50_ms"] for p in pts], "o-", label=f"p50, {task_ms} ms, saturated")
        ax_sat.plot(w, [p["latency_saturated"]["p95_ms"] for p in pts], "s--", label=f"p95, {task_ms} ms, saturated")
        ax_cpu.plot(w, [p["master_cpu_ms_per_result"] for p in pts], "o-", label=f"{task_ms} ms tasks")
    _cores(ax_cores, sorted(curves.get(TASK_MS) or next(iter(curves.values())), key=lambda p: p["workers"]))
    ax_eff.axhline(GOAL_EFFICIENCY, color="red", lw=0.8, ls="--", label=f"goal {GOAL_EFFICIENCY}")
    if knee.get("workers"):
        for ax in (ax_rate, ax_eff):
            ax.axvline(knee["workers"], color="orange", lw=0.8, ls=":",
                       label=f"knee ({TASK_MS} ms): {knee['workers']} workers")
    for ax, ylabel in ((ax_rate, "results/s"), (ax_eff, "results/s / ideal"), (ax_cores, "cores, saturated phase"),
                       (ax_lat, "capture -> result, ms (light load)"), (ax_sat, "capture -> result, ms (saturated)"),
                       (ax_cpu, "master CPU ms per result")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("logical workers")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax_rate.set_yscale("log")
    ax_eff.set_ylim(0, 1.1)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _cores(ax: Any, pts: list[dict[str, Any]]) -> None:
    """Where the 2 cores went in each point's saturated window: each role, then everyone else's."""
    w = [p["workers"] for p in pts]
    roles = ["master", *sorted({r for p in pts for r in p["saturated"]["cores_by_role"]})]
    layers = [[p["saturated"]["master_cores"] if r == "master" else p["saturated"]["cores_by_role"].get(r, 0.0)
               for p in pts] for r in roles]
    layers.append([p["saturated"]["machine_cores"]["other_cores"] for p in pts])
    ax.stackplot(w, *layers, labels=[*roles, "other sessions"], alpha=0.8)
    ax.axhline(benchlib.machine()["cores"], color="black", lw=0.8, ls="--", label="cores on this machine")
    ax.set_title(f"{pts[0]['task_ms']} ms tasks", fontsize=9)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"workers {QUICK_WORKERS}, short phases")
    p.add_argument("--workers", default="", help=f"comma list of worker counts (default {WORKERS})")
    p.add_argument("--task-ms", default="", help=f"comma list of task times for every worker count (default: "
                   f"{TASK_MS} for each, and {SHORT_TASK[0]} for {SHORT_TASK[1]} unless --workers or --quick)")
    p.add_argument("--fps", type=float, default=CAMERA_FPS, help="frames per second per camera")
    p.add_argument("--overload", type=float, default=OVERLOAD, help="saturated phase: offered load / ideal")
    p.add_argument("--loops-per-process", type=int, default=LOOPS_PER_PROCESS,
                   help="logical workers (pull loops) per worker process")
    p.add_argument("--goal-rounds", type=int, default=GOAL_ROUNDS,
                   help=f"rounds of the goal point ({GOAL_AT[0]} workers x {GOAL_AT[1]} ms); the best counts")
    p.add_argument("--no-bare", action="store_true", help="skip the no-master baseline loops")
    p.add_argument("--master-arg", action="append", default=[], help="extra flag for the master (repeatable)")
    p.add_argument("--write-docs", action="store_true", help="write docs/scaling.json and docs/images/scaling.png")
    p.add_argument("--png", type=Path, default=None, help="draw the curve here")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    benchlib.setup_logging(args.log_level)
    workers = tuple(int(w) for w in args.workers.split(",")) if args.workers else (
        QUICK_WORKERS if args.quick else WORKERS)
    phases = QUICK if args.quick else FULL
    machine = benchlib.machine()
    started = time.monotonic()
    curves: dict[int, list[dict[str, Any]]] = {}
    plan = [(int(t), workers) for t in args.task_ms.split(",")] if args.task_ms else (
        [(TASK_MS, workers)] + ([] if args.workers or args.quick else [SHORT_TASK]))
    for task_ms, counts in plan:
        for w in counts:
            spec = Point(w, task_ms, args.fps, args.overload, args.loops_per_process)
            rounds = args.goal_rounds if (w, task_ms) == GOAL_AT else 1
            point = best_of([run_point(spec, phases, args.master_arg) for _ in range(rounds)])
            if not args.no_bare:
                point["bare_per_s"] = round(bare_rate(w, args.loops_per_process, f"sleep:{task_ms}", phases.bare_s), 1)
                point["vs_bare"] = benchlib.ratio(point["results_per_s"], min(point["bare_per_s"],
                                                                               point["saturated"]["offered_per_s"]))
            curves.setdefault(task_ms, []).append(point)
    main_curve = curves.get(GOAL_AT[1]) or next(iter(curves.values()))
    knee = find_knee(main_curve)
    knees = {str(k): find_knee(v) for k, v in curves.items()}
    at_goal = next((p for p in main_curve if p["workers"] == GOAL_AT[0] and p["task_ms"] == GOAL_AT[1]), None)
    result = {
        "bench": "scaling",
        "figure": {"results_per_s": at_goal["results_per_s"] if at_goal else None,
                   "efficiency": at_goal["efficiency"] if at_goal else None,
                   "curves": {str(k): [_row(p) for p in v] for k, v in curves.items()}, "knee": knee,
                   "knees_by_task_ms": knees},
        "baseline": {"ideal_per_s": at_goal["ideal_per_s"] if at_goal else None,
                     "bare_per_s": at_goal.get("bare_per_s") if at_goal else None,
                     "design": "ideal = workers / task time, capped by the offered load; bare_per_s: the same "
                               "loops in the same process layout running the same pipeline with no master"},
        "ratio": at_goal["efficiency"] if at_goal else None,
        "goal": {"efficiency": GOAL_EFFICIENCY, "at": {"workers": GOAL_AT[0], "task_ms": GOAL_AT[1]},
                 "met": bool(at_goal and (at_goal["efficiency"] or 0) >= GOAL_EFFICIENCY) if at_goal else None},
        "points": [p for v in curves.values() for p in v],
        "machine": benchlib.finish_machine(machine),
        "params": {"quick": args.quick, "plan": {str(t): list(c) for t, c in plan}, "camera_fps": args.fps,
                   "overload": args.overload, "light_load": LIGHT_LOAD, "frame": f"{FRAME[0]}x{FRAME[1]}",
                   "jpeg_bytes": len(synthetic_jpeg()), "loops_per_process": args.loops_per_process,
                   "ports_per_receiver": PORTS_PER_RECEIVER, "phases": asdict(phases),
                   "master_args": args.master_arg, "seconds": round(time.monotonic() - started, 1)},
    }
    png = args.png or (DOCS / "images" / "scaling.png" if args.write_docs else None)
    if png is not None:
        draw(curves, knee, png, f"framehive scaling: sleep:MS tasks, cameras at {args.fps:g} fps, offered "
                                f"{args.overload:g}x ideal; 2-core VM, every role on it")
    if args.write_docs:
        (DOCS / "scaling.json").write_text(json.dumps(result, indent=1) + "\n")
    benchlib.emit(result)
    return 0


def _row(p: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of one point."""
    keys = ("workers", "task_ms", "cameras", "ideal_per_s", "results_per_s", "efficiency", "bare_per_s",
            "master_cpu_ms_per_result")
    return {**{k: p.get(k) for k in keys}, "light_p50_ms": p["latency_light"]["p50_ms"],
            "light_p95_ms": p["latency_light"]["p95_ms"], "saturated_p50_ms": p["latency_saturated"]["p50_ms"],
            "saturated_p95_ms": p["latency_saturated"]["p95_ms"]}


if __name__ == "__main__":
    sys.exit(main())
