"""End-to-end results per second of a local cluster running the person detector on a real clip.

Figure: LocalCluster with a master, a receiver (`--pipeline person`), 2 workers (`--threads 1`) and
2 publishers looping the clip at 1.5x what the workers can do; results/s counted from
MasterClient.get_results over a window after warm-up (by each result's `completed_at`), with the
capture-to-result latency (`latency_ms`) and the drops the master and receiver counted.

Baseline, same run: one process that decodes the same JPEGs (the clip's frames encoded as the
publisher encodes them) and runs the same detector code (worker.pipeline.process_payload) with
cv2.setNumThreads(1), before and after the cluster; the better of the two counts. The ideal for
2 single-threaded workers is twice that rate: ratio = results/s / (2 x baseline).
Drops are expected: saturating publishers outrun the workers, and the newest frame wins.

The machine is shared, so two more views are reported beside the ratio: the cluster against two
such loops run side by side just before it (what 2 workers could really get then), and results
per second of worker CPU against the loop's frames per CPU second (what the workers make of the
CPU they get). Publishers, receiver and master run on the same 2 cores as the workers.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import benchlib  # noqa: E402
from cluster.local import LocalCluster, free_udp_ports  # noqa: E402
from common.masterclient import MasterClient  # noqa: E402

log = logging.getLogger("bench.e2e")

# `--pipeline` reaches the spawned baseline loops through the environment (they import this module afresh)
PIPELINE_ENV = "FRAMEHIVE_BENCH_PIPELINE"
PIPELINE = os.environ.get(PIPELINE_ENV) or "person"
WORKERS = 2
PUBLISHERS = 2
GOAL_RATIO = 0.85
JPEG_QUALITY = 80  # the publisher's default
BASELINE_FRAMES = 60  # distinct clip frames the baseline cycles through
SATURATE = 1.5  # publishers offer this many times what the workers can do (one publisher per worker)
MIN_FPS, MAX_FPS = 5.0, 100.0
FIRST_RESULT_TIMEOUT_S = 90.0
POLL_S = 1.0


@dataclass(frozen=True)
class Plan:
    """How long each phase runs."""

    baseline_s: float
    warmup_s: float
    measure_s: float
    publisher_fps: float
    baseline_after: bool


# ----- the single-process baseline -----------------------------------------------------------------


def clip_jpegs(clip: Path) -> list[bytes]:
    """Frames spread over the clip, encoded as the publisher encodes them (same size, quality 80)."""
    import cv2

    cap = cv2.VideoCapture(str(clip))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    out = []
    for frame in benchlib.read_frames(clip, every=max(1, total // BASELINE_FRAMES), limit=BASELINE_FRAMES):
        ok, enc = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if ok:
            out.append(enc.tobytes())
    return out


def single_process_fps(jpegs: list[bytes], seconds: float, *, barrier: Any = None) -> dict[str, Any]:
    """Decode + detect in a loop, one OpenCV thread: frames/s and the per-stage times."""
    import cv2

    from worker.detectors import StageEnv
    from worker.pipeline import StageCache, process_payload

    cv2.setNumThreads(1)
    stages = StageCache(StageEnv(threads=1))  # onnxruntime on one thread too, as `--threads 1` workers
    for jpeg in jpegs[:3]:  # load the model and warm up
        process_payload(PIPELINE, jpeg, stages)
    if barrier is not None:  # concurrent loops start measuring together
        barrier.wait(60)
    n, decode, detect = 0, [], []
    meter = benchlib.CpuMeter([os.getpid()])
    meter.start()
    cpu0 = time.process_time()
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        out = process_payload(PIPELINE, jpegs[n % len(jpegs)], stages)
        decode.append(out.timings_ms["decode"])
        detect.append(out.timings_ms[PIPELINE])
        n += 1
    elapsed = time.perf_counter() - start
    cpu_s, cores = time.process_time() - cpu0, meter.stop()
    fps = n / elapsed
    log.info("single process, 1 thread: %.1f frames/s (%d frames, decode %.1f ms, detect %.1f ms); other "
             "processes used %.2f cores", fps, n, statistics.median(decode), statistics.median(detect),
             cores["other_cores"])
    return {"frames_per_s": round(fps, 2), "frames": n, "seconds": round(elapsed, 2),
            "frames_per_cpu_s": round(n / cpu_s, 2) if cpu_s else None,
            "decode_ms_p50": round(statistics.median(decode), 2), "detect_ms_p50": round(statistics.median(detect), 2),
            "cpu_cores": cores}


def _loop_process(clip: str, seconds: float, barrier: Any, out: Any) -> None:
    benchlib.setup_logging("WARNING")
    out.put(single_process_fps(clip_jpegs(Path(clip)), seconds, barrier=barrier))


def concurrent_fps(clip: Path, seconds: float, n: int) -> dict[str, Any]:
    """`n` single-thread loops in parallel processes: what `n` workers could do on this machine now."""
    ctx = mp.get_context("spawn")  # a fresh interpreter: no OpenCV state inherited across fork
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_loop_process, args=(str(clip), seconds, barrier, out), name=f"loop{i}")
             for i in range(n)]
    for proc in procs:
        proc.start()
    try:
        runs = [out.get(timeout=seconds + 90) for _ in procs]
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
    total = sum(r["frames_per_s"] for r in runs)
    log.info("%d concurrent single-thread loops: %.1f frames/s together", n, total)
    return {"frames_per_s": round(total, 2), "each_frames_per_s": [r["frames_per_s"] for r in runs],
            "detect_ms_p50": [r["detect_ms_p50"] for r in runs]}


# ----- the cluster ---------------------------------------------------------------------------------


class ResultReader:
    """Pages through get_results for each port, keeping results completed inside a window."""

    def __init__(self, client: MasterClient, ports: list[int]) -> None:
        self.client = client
        self.cursors = {p: 0 for p in ports}
        self.window: tuple[float, float] = (float("inf"), float("inf"))
        self.kept: list[dict[str, Any]] = []
        self.missed = 0
        self.seen = {p: 0 for p in ports}

    def poll(self) -> None:
        for port in self.cursors:
            while True:
                page = self.client.get_results(port, self.cursors[port], 1000)
                self.cursors[port] = page["next"]
                self.missed += page["missed"]
                self.seen[port] += len(page["results"])
                lo, hi = self.window
                self.kept += [r for r in page["results"] if lo <= r["completed_at"] < hi]
                if len(page["results"]) < 1000:
                    break


def _port_counters(stats: dict[str, Any], ports: list[int]) -> dict[str, int]:
    total: dict[str, int] = {}
    for port in ports:
        for k, v in stats["ports"].get(str(port), {}).items():
            total[k] = total.get(k, 0) + int(v)
    return total


def _receiver_counters(stats: dict[str, Any]) -> dict[str, int]:
    total: dict[str, int] = {}
    for source in stats.get("sources", {}).values():
        for port_counters in source.get("ports", {}).values():
            if isinstance(port_counters, dict):
                for k, v in port_counters.items():
                    total[k] = total.get(k, 0) + int(v)
    return total


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def _cpu_share(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Cores each role used during the window (1.0 = one core busy all the time)."""
    roles: dict[str, float] = {}
    for name, t in after.items():
        role = name.rstrip("0123456789") if not name.startswith("publisher") else "publisher"
        roles[role] = roles.get(role, 0.0) + (t - before.get(name, t)) / seconds
    return {k: round(v, 3) for k, v in sorted(roles.items())}


def _check_alive(cluster: LocalCluster) -> None:
    dead = [p.name for p in cluster.procs if not p.alive()]
    if dead:
        raise RuntimeError(f"{', '.join(dead)} exited during the run (logs in {cluster.log_dir})")


def _wait_first_results(reader: ResultReader, cluster: LocalCluster) -> None:
    deadline = time.monotonic() + FIRST_RESULT_TIMEOUT_S
    while time.monotonic() < deadline:
        reader.poll()
        if all(reader.seen.values()):
            return
        _check_alive(cluster)
        time.sleep(0.2)
    raise RuntimeError(f"no results on every port within {FIRST_RESULT_TIMEOUT_S}s (logs in {cluster.log_dir})")


def run_cluster(clip: Path, plan: Plan) -> dict[str, Any]:
    """Start the cluster, warm up, count results completed inside the window, stop."""
    ports = free_udp_ports(PUBLISHERS)
    with LocalCluster() as cluster:
        log.info("starting the cluster (logs in %s)", cluster.log_dir)
        cluster.start_master("--log-level", "WARNING")
        cluster.start_receiver(ports, "--pipeline", PIPELINE)
        cluster.start_workers(WORKERS, "--threads", "1", "--preload", PIPELINE)
        for port in ports:
            cluster.start_publisher(port, str(clip), "--loop", "--fps", str(plan.publisher_fps),
                                    "--quality", str(JPEG_QUALITY), "--log-level", "WARNING")
        with MasterClient(cluster.master_url) as client:
            reader = ResultReader(client, ports)
            _wait_first_results(reader, cluster)
            time.sleep(plan.warmup_s)
            reader.poll()
            stats0, cpu0 = client.get_stats(), benchlib.process_cpu_s(cluster)
            meter = benchlib.CpuMeter([p.popen.pid for p in cluster.procs] + [os.getpid()])
            meter.start()
            t0 = time.time()
            reader.window = (t0, t0 + plan.measure_s)
            while time.time() < t0 + plan.measure_s:
                time.sleep(min(POLL_S, max(0.0, t0 + plan.measure_s - time.time())))
                reader.poll()
                _check_alive(cluster)
            t1 = time.time()
            stats1, cpu1, cores = client.get_stats(), benchlib.process_cpu_s(cluster), meter.stop()
            time.sleep(0.2)
            reader.poll()
        log.info("stopping the cluster")
    out = _summarise(reader, ports, plan.measure_s, (stats0, stats1), _cpu_share(cpu0, cpu1, t1 - t0))
    out["cpu_cores"] = cores
    return out


def _summarise(reader: ResultReader, ports: list[int], seconds: float, stats: tuple[dict, dict],
               cpu: dict[str, float]) -> dict[str, Any]:
    results = reader.kept
    ok = [r for r in results if r["status"] == "ok"]
    per_port = {str(p): sum(1 for r in results if r["port"] == p) for p in ports}
    master = _delta(_port_counters(stats[1], ports), _port_counters(stats[0], ports))
    receiver = _delta(_receiver_counters(stats[1]), _receiver_counters(stats[0]))
    timings = {k: round(statistics.median([r["timings_ms"][k] for r in ok if k in r["timings_ms"]]), 2)
               for k in ("decode", PIPELINE) if any(k in r["timings_ms"] for r in ok)}
    fps = len(results) / seconds
    log.info("cluster: %.1f results/s (%d in %.0fs), latency p50 %s ms, cores used %s", fps, len(results), seconds,
             benchlib.latency_summary([r["latency_ms"] for r in results])["p50_ms"], cpu)
    return {"results_per_s": round(fps, 2), "results": len(results), "errors": len(results) - len(ok),
            "seconds": seconds, "per_port": per_port,
            "latency": benchlib.latency_summary([r["latency_ms"] for r in results]),
            "worker_stage_ms_p50": timings,
            "with_detections": sum(1 for r in ok if r["detections"]),
            "saturated": master.get("dropped_overflow", 0) > 0,  # the queue overflowed: publishers outran workers
            "drops": {"master_dropped_overflow": master.get("dropped_overflow", 0),
                      "master_dropped_stale": master.get("dropped_stale", 0),
                      "receiver_dropped": receiver.get("dropped_stale", 0),
                      "receiver_frames_incomplete": receiver.get("frames_incomplete", 0),
                      "results_missed_by_reader": reader.missed},
            "frames_in": {"received": receiver.get("frames_complete", 0), "queued": master.get("added", 0),
                          "completed": master.get("completed", 0)},
            "cpu_cores_used": cpu}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short phases")
    p.add_argument("--fps", type=float, default=0.0,
                   help=f"frames per second per publisher (0: {SATURATE:g} x the single-loop rate, so that "
                        "the publishers outrun the workers on any machine)")
    p.add_argument("--pipeline", default=PIPELINE,
                   help="what the workers run (default person; `person-ssd` is the SSDLite stage person used to be)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if args.pipeline != PIPELINE:  # run again with it in place, for this process and its spawned loops
        os.environ[PIPELINE_ENV] = args.pipeline
        os.execv(sys.executable, [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:])])
    benchlib.setup_logging(args.log_level)
    machine = benchlib.machine()
    clip = benchlib.clip_path()
    jpegs = clip_jpegs(clip)
    baseline_s = 3.0 if args.quick else 6.0
    baselines = [single_process_fps(jpegs, baseline_s)]
    concurrent = None if args.quick else concurrent_fps(clip, baseline_s, WORKERS)
    per_worker = max(baselines[0]["frames_per_s"], concurrent["frames_per_s"] / WORKERS if concurrent else 0.0)
    fps = args.fps or min(MAX_FPS, max(MIN_FPS, round(SATURATE * per_worker)))
    plan = (Plan(baseline_s=baseline_s, warmup_s=2.0, measure_s=6.0, publisher_fps=fps, baseline_after=False)
            if args.quick else
            Plan(baseline_s=baseline_s, warmup_s=5.0, measure_s=20.0, publisher_fps=fps, baseline_after=True))
    figure = run_cluster(clip, plan)
    if plan.baseline_after:
        baselines.append(single_process_fps(jpegs, plan.baseline_s))
    best = max(baselines, key=lambda b: b["frames_per_s"])
    ideal = WORKERS * best["frames_per_s"]
    r = benchlib.ratio(figure["results_per_s"], ideal)
    worker_cores = figure["cpu_cores_used"].get("worker", 0.0)
    best_cpu = max((b["frames_per_cpu_s"] or 0.0) for b in baselines)
    figure["per_worker_cpu_s"] = {  # how well the workers use the CPU they get, whatever the noise
        "results": round(figure["results_per_s"] / worker_cores, 2) if worker_cores else None,
        "baseline_frames": best_cpu,
        "ratio": benchlib.ratio(figure["results_per_s"] / worker_cores, best_cpu) if worker_cores else None}
    if concurrent is not None:  # the machine is shared: what 2 loops really got side by side
        figure["vs_concurrent_loops"] = {**concurrent,
                                         "ratio": benchlib.ratio(figure["results_per_s"], concurrent["frames_per_s"])}
    benchlib.emit({
        "bench": "cluster_e2e",
        "figure": figure,
        "baseline": {**best, "ideal_results_per_s": round(ideal, 2),
                     "runs_frames_per_s": [b["frames_per_s"] for b in baselines],
                     "design": f"one process: cv2.imdecode + the '{PIPELINE}' stage, cv2.setNumThreads(1); "
                               f"ideal = {WORKERS} x its rate"},
        "ratio": r,
        "goal": {"ratio": GOAL_RATIO, "met": (r or 0) >= GOAL_RATIO},
        "machine": benchlib.finish_machine(machine),
        "params": {"quick": args.quick, "clip": clip.name, "frame": _frame_size(jpegs[0]),
                   "jpeg_bytes_median": int(statistics.median(len(j) for j in jpegs)),
                   "workers": WORKERS, "worker_threads": 1, "publishers": PUBLISHERS,
                   "publisher_fps": plan.publisher_fps, "publisher_fps_rule": "--fps" if args.fps else
                   f"{SATURATE:g} x the single-loop rate", "pipeline": PIPELINE, "warmup_s": plan.warmup_s,
                   "measure_s": plan.measure_s, "baseline_s": plan.baseline_s},
    })
    return 0


def _frame_size(jpeg: bytes) -> str:
    import cv2

    img = cv2.imdecode(benchlib.memoryview_u8(jpeg), cv2.IMREAD_COLOR)
    return f"{img.shape[1]}x{img.shape[0]}"


if __name__ == "__main__":
    sys.exit(main())
