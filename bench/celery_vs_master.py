"""Task round trips through our master, through Celery alone, and through our master on Celery.

Same run, same 48 KB JPEG frames, same pipelines (`noop`: decode and find nothing; `person`: the
SSDLite detector), same two worker processes of one task at a time, same closed-loop window of
frames in flight:

- `master`: `python -m master` (builtin backend) and two `python -m worker` pull workers;
- `celery_raw`: a client that publishes `framehive.frame` tasks straight to Celery on Redis and reads
  the results from Redis (get_many, as Celery's own join does): raw Celery doing the same work;
- `master_celery`: `python -m master --backend celery` and two Celery workers: our layer on Celery.

Producers for the two master systems queue frames through MasterClient.add_tasks, one camera port
per frame in flight (so the per-camera newest-wins cap never drops one), and read results with
get_results. Latency is capture (submit) to the result being stored where users read it: the master's
own `latency_ms`, and Celery's stored `date_done` for raw Celery.

Goals (issue 5): master_celery >= 0.8 x celery_raw; master >= celery_raw on one machine.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import benchlib  # noqa: E402
from cluster.local import LocalCluster  # noqa: E402
from cluster.redisserver import RedisServer  # noqa: E402
from common.celeryconf import FRAME_TASK, QUEUES, lease_message, settings  # noqa: E402
from common.masterclient import MasterClient  # noqa: E402
from common.tasks import Lease, Task, TaskKind, TaskSpec  # noqa: E402

log = logging.getLogger("bench.celery")

FIRST_PORT = 6000
POLL_S = 0.002  # every client here polls for results; a tighter loop only steals the workers' CPU
WORKERS = 2


def master_loop(url: str, payload: bytes, pipeline: str, window: int, warmup_s: float,
                measure_s: float, first_port: int = FIRST_PORT) -> dict[str, Any]:
    """Closed loop through a master: `window` frames in flight, one per camera port. Each run on the same
    master needs ports of its own: an earlier run's results would read as answers to this run's frames."""
    ports = list(range(first_port, first_port + window))
    since = dict.fromkeys(ports, 0)
    seq = dict.fromkeys(ports, 0)
    busy: set[int] = set()
    latencies: list[float] = []
    done = 0
    start = time.monotonic()
    measure_from, end = start + warmup_s, start + warmup_s + measure_s
    with MasterClient(url) as c:
        while time.monotonic() < end:
            idle = [p for p in ports if p not in busy]
            if idle:
                now = time.time_ns()
                c.add_tasks([(TaskSpec(port=p, seq=seq[p], pipeline=pipeline, captured_ns=now, received_ns=now),
                              payload) for p in idle])
                for p in idle:
                    seq[p] += 1
                busy.update(idle)
            got = 0
            for p in list(busy):
                page = c.get_results(p, since[p], 10)
                if not page["results"]:
                    continue
                since[p] = page["next"]
                busy.discard(p)
                got += 1
                if time.monotonic() >= measure_from:
                    done += len(page["results"])
                    latencies += [r["latency_ms"] for r in page["results"]]
                    bad = [r for r in page["results"] if r["status"] != "ok"]
                    if bad:
                        raise RuntimeError(f"a frame failed: {bad[0]}")
            if not got:
                time.sleep(POLL_S)
    return {"round_trips_s": round(done / measure_s, 1), **benchlib.latency_summary(latencies)}


def celery_loop(redis_url: str, payload: bytes, pipeline: str, window: int, warmup_s: float,
                measure_s: float) -> dict[str, Any]:
    """Closed loop straight through Celery: publish, read results from the result backend."""
    from celery import Celery

    app = Celery("bench-raw")
    app.conf.update(settings(redis_url))
    backend = app.backend
    sent: dict[str, float] = {}
    latencies: list[float] = []
    done, n = 0, 0
    start = time.monotonic()
    measure_from, end = start + warmup_s, start + warmup_s + measure_s
    while time.monotonic() < end:
        while len(sent) < window:
            n += 1
            now = time.time_ns()
            spec = TaskSpec(port=FIRST_PORT, seq=n, pipeline=pipeline, captured_ns=now, received_ns=now)
            lease = Lease(Task(f"raw-{n}", spec, payload, now), "t", 10.0, 1)
            task_id = f"raw-{n}"
            app.send_task(FRAME_TASK, args=lease_message(lease), task_id=task_id, queue=QUEUES[TaskKind.FRAME])
            sent[task_id] = time.time()
        ready = list(backend.get_many(list(sent), interval=0, max_iterations=1, timeout=None))
        if not ready:
            time.sleep(POLL_S)
            continue
        for task_id, meta in ready:
            t0 = sent.pop(task_id)
            if meta["status"] != "SUCCESS":
                raise RuntimeError(f"raw Celery task failed: {meta}")
            if time.monotonic() >= measure_from:
                done += 1
                stored = datetime.fromisoformat(meta["date_done"]).timestamp()
                latencies.append((stored - t0) * 1000)
        backend.client.delete(*[backend.get_key_for_task(t) for t, _ in ready])
    return {"round_trips_s": round(done / measure_s, 1), **benchlib.latency_summary(latencies)}


def run(pipelines: list[str], window: int, warmup_s: float, measure_s: float) -> dict[str, Any]:
    payload, payload_info = benchlib.test_jpeg()
    out: dict[str, Any] = {"payload": payload_info, "window": window, "workers": WORKERS,
                           "warmup_s": warmup_s, "measure_s": measure_s, "pipelines": {}}
    with RedisServer() as redis, LocalCluster() as builtin, LocalCluster() as on_celery:
        for i, pipeline in enumerate(pipelines):
            ports = FIRST_PORT + 100 * i
            row: dict[str, Any] = {}
            log.info("%s: builtin master + %d pull workers", pipeline, WORKERS)
            if not builtin.master_port:
                builtin.start_master()
            workers = builtin.start_workers(WORKERS, "--threads", "1", "--preload", pipeline)
            row["master"] = master_loop(builtin.master_url, payload, pipeline, window, warmup_s, measure_s, ports)
            for w in workers:
                w.popen.terminate()
                w.popen.wait(60)  # a prefork pool may wait up to 30 s for its last messages
            builtin.procs = [p for p in builtin.procs if p not in workers]
            log.info("%s: Celery workers", pipeline)
            if not on_celery.master_port:
                on_celery.start_master("--backend", "celery", "--redis", redis.url, "--celery-in-flight",
                                       str(window))
            cworkers = on_celery.start_celery_workers(WORKERS, redis.url)
            log.info("%s: raw Celery", pipeline)
            row["celery_raw"] = celery_loop(redis.url, payload, pipeline, window, warmup_s, measure_s)
            log.info("%s: master on Celery", pipeline)
            row["master_celery"] = master_loop(on_celery.master_url, payload, pipeline, window, warmup_s,
                                               measure_s, ports)
            for w in cworkers:
                w.popen.terminate()
                w.popen.wait(60)  # a prefork pool may wait up to 30 s for its last messages
            on_celery.procs = [p for p in on_celery.procs if p not in cworkers]
            raw = row["celery_raw"]["round_trips_s"]
            row["ratios"] = {"master_celery_vs_celery_raw": benchlib.ratio(row["master_celery"]["round_trips_s"], raw),
                             "master_vs_celery_raw": benchlib.ratio(row["master"]["round_trips_s"], raw)}
            row["goals_met"] = {"master_celery_ge_0.8x_raw": (row["ratios"]["master_celery_vs_celery_raw"] or 0) >= 0.8,
                                "master_ge_celery_raw": (row["ratios"]["master_vs_celery_raw"] or 0) >= 1.0}
            out["pipelines"][pipeline] = row
            log.info("%s: %s", pipeline, row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short runs (3 s warm-up, 8 s measured)")
    p.add_argument("--pipelines", default="noop,person", help="comma list of pipelines to measure")
    p.add_argument("--window", type=int, default=8, help="frames in flight in every system")
    p.add_argument("--measure-s", type=float, default=20.0)
    p.add_argument("--warmup-s", type=float, default=5.0)
    args = p.parse_args(argv)
    benchlib.setup_logging()
    if args.quick:
        args.warmup_s, args.measure_s = 3.0, 8.0
    info = benchlib.machine()
    benchlib.wait_quiet(60)
    result = run([x for x in args.pipelines.split(",") if x], args.window, args.warmup_s, args.measure_s)
    benchlib.emit({"bench": "celery_vs_master", **result, "machine": benchlib.finish_machine(info)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
