"""Frame lifecycles per second through the master: add, lease, complete, with 48 KB JPEG payloads.

Figure: our master (`python -m master` as a subprocess). One producer process queues frames in
batches through MasterClient.add_tasks, as the receiver's Forwarder does; consumer processes lease
them through MasterClient.lease (the bytes come back, nothing is decoded) and report a small result
through MasterClient.complete, as the worker loop does.

Baseline, same run, same payloads and process layout: the seed design, a stock
xmlrpc.server.SimpleXMLRPCServer (single-threaded, HTTP/1.0, gzip on replies over 1,400 bytes) with
a minimal task queue, one XML-RPC call per operation, called through xmlrpc.client.ServerProxy.

The load is a closed loop: the producer keeps at most `window` frames queued or leased, so nothing
piles up and no frame is dropped; a lifecycle's latency is mostly its wait in that window.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import queue
import signal
import subprocess
import sys
import time
import xmlrpc.client
import xmlrpc.server
from collections import deque
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import benchlib  # noqa: E402
from cluster.local import LocalCluster  # noqa: E402
from common.masterclient import MasterClient  # noqa: E402
from common.tasks import Detection, Outcome, TaskSpec  # noqa: E402
from receiver.forward import BATCH_MAX  # noqa: E402
from worker.loop import WorkerConfig  # noqa: E402

log = logging.getLogger("bench.master")

FIRST_CAMERA_PORT = 5000
LEASE_WAIT_S = 1.0
POLL_EMPTY_S = 0.001  # the seed consumer's pause when the queue is empty
THROTTLE_S = 0.0005  # the producer's pause while its window is full
GOAL_FRAMES_S = 2000.0
SWEEP_LEASE_BATCHES = (4, 8)  # full runs also measure ours with larger lease batches
DETECTIONS = (Detection("person", 0.91, (120, 80, 64, 160)),)
SEED_RESULT = {"detections": [{"label": "person", "score": 0.91, "box": [120, 80, 64, 160]}]}


@dataclass(frozen=True)
class Load:
    """How hard and how long each system is driven."""

    warmup_s: float
    measure_s: float
    rounds: int
    consumers: int = 2
    add_batch: int = BATCH_MAX  # frames per add_tasks call, as the Forwarder's largest batch
    lease_batch: int = WorkerConfig.batch  # tasks per lease call, as the worker's default
    window: int = 128  # frames queued or leased at most
    ports: int = 16  # camera ports the frames are spread over


class Shared:
    """Counters and flags the bench process shares with its producer and consumers."""

    def __init__(self, ctx: Any) -> None:
        self.stop = ctx.Event()
        self.measuring = ctx.Event()
        self.added = ctx.Value("q", 0)
        self.completed = ctx.Value("q", 0)
        self.out = ctx.Queue()

    def bump(self, counter: Any, n: int) -> None:
        with counter.get_lock():
            counter.value += n

    def window_full(self, window: int) -> bool:
        return self.added.value - self.completed.value >= window


# ----- the seed design ----------------------------------------------------------------------------


class SeedQueue:
    """The seed design's task queue: a deque of frames and a dict of leased ones, no limits."""

    def __init__(self) -> None:
        self.pending: deque = deque()
        self.leased: dict[str, tuple] = {}
        self.results: deque = deque(maxlen=1000)
        self.next_id = 0
        self.added = self.completed = 0

    def add_task(self, frame: xmlrpc.client.Binary, captured_ns: str) -> str:
        self.next_id += 1
        task_id = str(self.next_id)
        self.pending.append((task_id, frame, captured_ns))
        self.added += 1
        return task_id

    def request_task(self) -> dict:
        if not self.pending:
            return {}
        task_id, frame, captured_ns = self.pending.popleft()
        self.leased[task_id] = (frame, captured_ns)
        return {"id": task_id, "frame": frame, "captured_ns": captured_ns}

    def complete_task(self, task_id: str, result: dict) -> bool:
        self.leased.pop(task_id)
        self.results.append((task_id, result))
        self.completed += 1
        return True

    def get_stats(self) -> dict:
        return {"added": self.added, "completed": self.completed, "pending": len(self.pending),
                "leased": len(self.leased)}


def serve_seed(port: int) -> int:
    """`--seed-server PORT`: the baseline server, stock settings except request logging (off)."""
    server = xmlrpc.server.SimpleXMLRPCServer(("127.0.0.1", port), logRequests=False)
    server.register_instance(SeedQueue())

    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


# ----- clients (each in its own process) ----------------------------------------------------------


def _ours_producer(url: str, jpeg: bytes, load: Load, shared: Shared) -> None:
    client = MasterClient(url)
    seq = 0
    while not shared.stop.is_set():
        if shared.window_full(load.window):
            time.sleep(THROTTLE_S)
            continue
        items = []
        for _ in range(load.add_batch):
            now = time.time_ns()
            spec = TaskSpec(port=FIRST_CAMERA_PORT + seq % load.ports, seq=seq & 0x7FFFFFFF, pipeline="person",
                            captured_ns=now, received_ns=now, meta={"source": "127.0.0.1:40000"})
            items.append((spec, jpeg))
            seq += 1
        reply = client.add_tasks(items)
        shared.bump(shared.added, sum(1 for task_id in reply["ids"] if task_id))
    client.close()


def _ours_consumer(url: str, index: int, load: Load, shared: Shared) -> list[float]:
    client = MasterClient(url)
    worker = client.register_worker(f"bench-consumer{index}")["worker_id"]
    latencies: list[float] = []
    leases: list = []
    while not shared.stop.is_set():
        # as the worker does: report a batch and lease the next one in the same request
        leases = leases or client.lease(worker, load.lease_batch, LEASE_WAIT_S)
        if not leases:
            continue
        started = time.time_ns()
        outcomes = [Outcome(x.task.id, x.token, DETECTIONS, {"decode": 0.0, "person": 0.0}, "", started, started)
                    for x in leases]
        done_leases = leases
        reply, leases = client.complete(worker, outcomes, lease_max=load.lease_batch, wait_s=LEASE_WAIT_S)
        accepted = len(reply["accepted"])
        done = time.time_ns()
        shared.bump(shared.completed, accepted)
        if shared.measuring.is_set():
            latencies.extend((done - x.task.spec.captured_ns) / 1e6 for x in done_leases)
    client.close()
    return latencies


def _seed_producer(url: str, jpeg: bytes, load: Load, shared: Shared) -> None:
    proxy = xmlrpc.client.ServerProxy(url)
    frame = xmlrpc.client.Binary(jpeg)
    while not shared.stop.is_set():
        if shared.window_full(load.window):
            time.sleep(THROTTLE_S)
            continue
        proxy.add_task(frame, str(time.time_ns()))
        shared.bump(shared.added, 1)


def _seed_consumer(url: str, index: int, load: Load, shared: Shared) -> list[float]:
    proxy = xmlrpc.client.ServerProxy(url)
    latencies: list[float] = []
    while not shared.stop.is_set():
        task = proxy.request_task()
        if not task:
            time.sleep(POLL_EMPTY_S)
            continue
        _ = task["frame"].data  # the frame's bytes arrived; like ours, nothing decodes them
        proxy.complete_task(task["id"], SEED_RESULT)
        done = time.time_ns()
        shared.bump(shared.completed, 1)
        if shared.measuring.is_set():
            latencies.append((done - int(task["captured_ns"])) / 1e6)
    return latencies


def _run_client(role: str, system: str, url: str, index: int, jpeg: bytes, load: Load, shared: Shared) -> None:
    """Entry point of one client process; reports its latencies (or its error) on shared.out."""
    benchlib.setup_logging("WARNING")
    try:
        if role == "producer":
            (_ours_producer if system == "framehive" else _seed_producer)(url, jpeg, load, shared)
            shared.out.put((role, index, [], ""))
        else:
            lat = (_ours_consumer if system == "framehive" else _seed_consumer)(url, index, load, shared)
            shared.out.put((role, index, lat, ""))
    except Exception as e:  # reported to the bench process, which fails the run
        logging.getLogger("bench.client").exception("%s %d failed", role, index)
        shared.out.put((role, index, [], f"{type(e).__name__}: {e}"))


# ----- one measured run ---------------------------------------------------------------------------


class Server:
    """The system under test as a subprocess: our master or the seed server."""

    def __init__(self, system: str) -> None:
        self.system = system
        self.port = benchlib.free_tcp_port()
        self.cluster: LocalCluster | None = None
        self.popen: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}" + ("" if self.system == "framehive" else "/RPC2")

    def start(self) -> None:
        if self.system == "framehive":
            self.cluster = LocalCluster(master_port=self.port)
            self.popen = self.cluster.start_master("--max-pending-per-port", "100000", "--log-level", "WARNING").popen
            return
        self.popen = subprocess.Popen([sys.executable, __file__, "--seed-server", str(self.port)],
                                      env=benchlib.child_env(), stdin=subprocess.DEVNULL)
        if not benchlib.wait_tcp(self.port, 15.0):
            raise RuntimeError("the seed XML-RPC server did not come up")

    def stats(self) -> dict[str, Any]:
        if self.system == "framehive":
            with MasterClient(self.url) as c:
                s = c.get_stats()
            return {"counters": s["counters"], "pending": s["pending"], "in_progress": s["in_progress"]}
        return xmlrpc.client.ServerProxy(self.url).get_stats()

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        elif self.popen is not None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def _wait_checked(shared: Shared, procs: list, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(p.exitcode not in (None, 0) for p in procs) or not shared.out.empty():
            raise RuntimeError("a client process failed (see its traceback above)")
        time.sleep(0.1)


def _collect(shared: Shared, procs: list, timeout_s: float) -> list[float]:
    latencies: list[float] = []
    errors = []
    deadline = time.monotonic() + timeout_s
    for _ in procs:
        try:
            role, index, lat, err = shared.out.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            errors.append("a client did not report")
            break
        latencies.extend(lat)
        if err:
            errors.append(f"{role} {index}: {err}")
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            p.terminate()
            p.join(5)
    if errors:
        raise RuntimeError("; ".join(errors))
    return latencies


def run_once(system: str, jpeg: bytes, load: Load) -> dict[str, Any]:
    """Drive one system for warm-up + measurement; frames/s, latency, CPU per frame, server stats."""
    ctx = mp.get_context("fork")
    server = Server(system)
    server.start()
    shared = Shared(ctx)
    procs = [ctx.Process(target=_run_client, name=f"consumer{i}",
                         args=("consumer", system, server.url, i, jpeg, load, shared)) for i in range(load.consumers)]
    procs.append(ctx.Process(target=_run_client, name="producer",
                             args=("producer", system, server.url, 0, jpeg, load, shared)))
    try:
        for p in procs:
            p.start()
        _wait_checked(shared, procs, load.warmup_s)
        pids = [p.pid for p in procs]
        c0, t0 = shared.completed.value, time.monotonic()
        server_cpu0, client_cpu0 = benchlib.cpu_seconds([server.popen.pid]), benchlib.cpu_seconds(pids)
        meter = benchlib.CpuMeter([server.popen.pid, *pids, os.getpid()])
        meter.start()
        shared.measuring.set()
        _wait_checked(shared, procs, load.measure_s)
        c1, t1 = shared.completed.value, time.monotonic()
        server_cpu1, client_cpu1 = benchlib.cpu_seconds([server.popen.pid]), benchlib.cpu_seconds(pids)
        cores = meter.stop()
        shared.measuring.clear()
        shared.stop.set()
        latencies = _collect(shared, procs, LEASE_WAIT_S + 10.0)
        stats = server.stats()
    finally:
        shared.stop.set()
        for p in procs:
            if p.is_alive():
                p.terminate()
        server.stop()
    frames = c1 - c0
    seconds = t1 - t0
    out = {"frames_per_s": round(frames / seconds, 1), "frames": frames, "seconds": round(seconds, 2),
           "lifecycle": benchlib.latency_summary(latencies),
           "server_cpu_ms_per_frame": round((server_cpu1 - server_cpu0) * 1000 / max(frames, 1), 3),
           "clients_cpu_ms_per_frame": round((client_cpu1 - client_cpu0) * 1000 / max(frames, 1), 3),
           "cpu_cores": cores,
           "server_stats": stats}
    log.info("%s: %.0f frames/s (%d in %.1fs), lifecycle p50 %s ms, server CPU %.3f ms/frame, other "
             "processes on this machine used %.2f cores", system, out["frames_per_s"], frames, seconds,
             out["lifecycle"]["p50_ms"], out["server_cpu_ms_per_frame"], cores["other_cores"])
    return out


def _drops(stats: dict[str, Any]) -> dict[str, int]:
    c = stats.get("counters", {})
    return {k: int(c.get(k, 0)) for k in ("dropped_overflow", "dropped_stale", "rejected_full",
                                           "stale_completions", "lease_expired")}


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return max(runs, key=lambda r: r["frames_per_s"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one short round per system")
    p.add_argument("--seed-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--consumers", type=int, default=2)
    p.add_argument("--window", type=int, default=Load.window, help="frames queued or leased at most")
    p.add_argument("--lease-batch", type=int, default=Load.lease_batch, help="tasks per lease call")
    p.add_argument("--add-batch", type=int, default=Load.add_batch, help="frames per add_tasks call")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if args.seed_server is not None:
        return serve_seed(args.seed_server)
    benchlib.setup_logging(args.log_level)
    shape = {"consumers": args.consumers, "window": args.window, "lease_batch": args.lease_batch,
             "add_batch": args.add_batch}
    load = (Load(warmup_s=1.0, measure_s=3.0, rounds=1, **shape) if args.quick
            else Load(warmup_s=2.0, measure_s=8.0, rounds=2, **shape))
    machine = benchlib.machine()
    jpeg, jpeg_info = benchlib.test_jpeg()
    ours, seed = [], []
    for r in range(load.rounds):  # interleaved, so a noisy neighbour hurts both alike
        log.info("round %d/%d", r + 1, load.rounds)
        ours.append(run_once("framehive", jpeg, load))
        seed.append(run_once("seed", jpeg, load))
    sweep = {}
    if not args.quick:  # where the time goes: HTTP requests per frame (see docs/BENCHMARKS.md)
        for batch in SWEEP_LEASE_BATCHES:
            run = run_once("framehive", jpeg, replace(load, lease_batch=batch, warmup_s=1.0, measure_s=4.0))
            sweep[str(batch)] = {k: run[k] for k in ("frames_per_s", "server_cpu_ms_per_frame")}
    best_ours, best_seed = _best(ours), _best(seed)
    drops = {k: sum(_drops(r["server_stats"])[k] for r in ours) for k in _drops({})}
    figure = {**{k: v for k, v in best_ours.items() if k != "server_stats"}, "drops": drops,
              "rounds_frames_per_s": [r["frames_per_s"] for r in ours], "by_lease_batch": sweep,
              "server_counters": best_ours["server_stats"]["counters"]}
    baseline = {**{k: v for k, v in best_seed.items() if k != "server_stats"},
                "rounds_frames_per_s": [r["frames_per_s"] for r in seed], "server": best_seed["server_stats"],
                "design": "stock SimpleXMLRPCServer (single thread, HTTP/1.0, gzip over 1400 B, logRequests off), "
                          "one XML-RPC call per add/request/complete, frame as Binary"}
    benchlib.emit({
        "bench": "master_throughput",
        "figure": figure,
        "baseline": baseline,
        "ratio": benchlib.ratio(best_ours["frames_per_s"], best_seed["frames_per_s"]),
        "goal": {"frames_per_s": GOAL_FRAMES_S, "met": best_ours["frames_per_s"] >= GOAL_FRAMES_S},
        "machine": benchlib.finish_machine(machine),
        "params": {**asdict(load), "quick": args.quick, "payload": jpeg_info, "lease_wait_s": LEASE_WAIT_S,
                   "master_flags": "--max-pending-per-port 100000", "headline": "best round of each system"},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
