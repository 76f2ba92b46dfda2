"""Overload with real processes: two cameras offering ~3x what one `person` worker can do.

Newest frame wins, so latency stays bounded; every drop is counted by reason (master and receiver);
no process grows. The default run is 20 s; `pytest -m slow` adds 60 s and a 10-minute soak.
"""

from __future__ import annotations

import json
import signal
import time

import psutil
import pytest

from cluster.local import LocalCluster, free_udp_ports
from tests.conftest import wait_until

FPS = 50  # per camera; one worker with `person` does ~35 frames/s on an idle machine here: 100 offered is ~3x
P95_BOUND_MS = 5000  # capture to result. Bounded queues give ~1 s here; a FIFO would reach ~2/3 of the run
RSS_GROWTH_MB = 20  # allowed growth per process from the end of warm-up to the end ...
RSS_GROWTH_FRAC = 0.10  # ... or this fraction of its warm RSS, whichever is larger


@pytest.fixture
def cluster(tmp_path):
    with LocalCluster(log_dir=tmp_path / "logs") as c:
        yield c


def rss_mb(cluster: LocalCluster) -> dict[str, float]:
    return {p.name: psutil.Process(p.popen.pid).memory_info().rss / 2**20 for p in cluster.procs if p.alive()}


def all_results(cluster: LocalCluster, port: int) -> list[dict]:
    """Every result the master still holds for `port` (its ring keeps the newest 1000)."""
    out: list[dict] = []
    cursor = 0
    with cluster.client() as c:
        while True:
            page = c.get_results(port, cursor, 1000)
            out += page["results"]
            if not page["results"]:
                return out
            cursor = page["next"]


def run_overload(cluster: LocalCluster, clip, duration_s: float, warmup_s: float) -> dict:
    ports = free_udp_ports(2)
    cluster.start_master()
    cluster.start_receiver(ports, "--pipeline", "person")
    cluster.start_workers(1, "--threads", "1", "--preload", "person")
    pubs = [cluster.start_publisher(p, str(clip), "--fps", str(FPS), "--loop") for p in ports]
    t0 = time.monotonic()
    time.sleep(warmup_s)
    assert all(p.alive() for p in cluster.procs), [p.log_text()[-2000:] for p in cluster.procs if not p.alive()]
    warm = rss_mb(cluster)
    with cluster.client() as c:
        done_warm = c.get_stats()["counters"].get("completed", 0)
    samples = [(round(time.monotonic() - t0), warm)]
    while (left := duration_s - (time.monotonic() - t0)) > 0:
        time.sleep(min(left, 30))
        samples.append((round(time.monotonic() - t0), rss_mb(cluster)))
    end = samples[-1][1]
    t_end = time.time()
    with cluster.client() as c:
        done_end = c.get_stats()["counters"].get("completed", 0)
    capacity = (done_end - done_warm) / (duration_s - warmup_s)  # frames/s the cluster finished

    for p in pubs:  # stop the cameras, then let the master finish what it holds
        p.popen.send_signal(signal.SIGTERM)
    sent = {}
    for p, port in zip(pubs, ports):
        assert p.popen.wait(20) == 0, p.log_text()[-2000:]
        sent[port] = json.loads(p.log_text().strip().splitlines()[-1])["sent"]

    def settled() -> dict | None:
        """The master holds no task and has every frame the receiver says it forwarded."""
        with cluster.client() as c:
            stats = c.get_stats()
        rx = stats["sources"].get("receiver", {}).get("ports", {})
        tallied = all(str(p) in rx and rx[str(p)]["forwarded"] == stats["ports"][str(p)]["added"] for p in ports)
        return stats if tallied and stats["pending"] == stats["in_progress"] == 0 else None

    stats = wait_until(settled, 30, interval=0.5)

    # latency: results that finished in the last third of the run
    recent = [r["latency_ms"] for p in ports for r in all_results(cluster, p)
              if t_end - duration_s / 3 <= r["completed_at"] <= t_end]
    recent.sort()
    p95 = recent[int(0.95 * (len(recent) - 1))] if recent else None

    growth = {name: round(end[name] - warm[name], 1) for name in warm}
    report = {"duration_s": duration_s, "capacity_fps": round(capacity, 1), "offered_fps": 2 * FPS,
              "sent": sent, "p95_ms": p95, "recent_results": len(recent), "rss_warm_mb": {k: round(v) for k, v
              in warm.items()}, "rss_growth_mb": growth, "rss_samples": len(samples),
              "ports": stats["ports"], "receiver": stats["sources"]["receiver"]["ports"]}
    print(json.dumps(report))

    assert capacity > 0 and 2 * FPS >= 2.0 * capacity, f"not an overload: {report}"
    assert len(recent) >= 10 and p95 is not None and p95 < P95_BOUND_MS, f"latency not bounded: {report}"
    for port in ports:
        m = stats["ports"][str(port)]
        rx = stats["sources"]["receiver"]["ports"][str(port)]
        # the master: every frame it took is a result or a drop counted by its reason
        assert m["added"] == m.get("completed", 0) + m.get("dropped_overflow", 0) + m.get("dropped_stale", 0) \
            + m.get("failed", 0), (port, m)
        assert m.get("dropped_overflow", 0) > 0.3 * m["added"], f"newest-wins drops missing: {report}"
        # the receiver: every complete frame was forwarded or dropped by its own newest-wins backlog
        assert rx["frames_complete"] == rx["forwarded"] + rx.get("dropped_stale", 0) + rx.get("refused", 0) \
            + rx.get("dropped_master_down", 0), (port, rx)
        assert rx["malformed"] == 0 and rx["frames_complete"] + rx["frames_incomplete"] >= 0.95 * sent[port], report
    for name, g in growth.items():
        assert g < max(RSS_GROWTH_MB, RSS_GROWTH_FRAC * warm[name]), f"{name} grew {g} MB: {report}"
    return report


def test_overload_20s_latency_bounded_drops_counted_rss_flat(cluster, person_clip):
    run_overload(cluster, person_clip, duration_s=20, warmup_s=8)


@pytest.mark.slow
def test_overload_60s(cluster, person_clip):
    run_overload(cluster, person_clip, duration_s=60, warmup_s=15)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_overload_soak_10_minutes(cluster, person_clip):
    run_overload(cluster, person_clip, duration_s=600, warmup_s=60)
