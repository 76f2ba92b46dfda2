"""What behaviours cost end to end: tracking, a zone, a line, rules and event clips on versus off.

The same generated walkway clip (cluster/testdata.py: a person walks in, stands in a zone, walks out
across a line, comes back) is streamed once through a real local cluster (master, receiver over
UDP, workers running `person`) per setting, alternating settings round by round:

* figure: the camera has a zone, a line, a dwell and a cross rule, and the master records clips
  into a media directory (every event's clip encoded during the run);
* baseline: the same camera with none of that (the master still tracks every camera: tracking is
  not optional; its own cost per result is bench/tracker_cost.py).

Reported per setting: capture-to-result latency p50/p95 (the results' own `latency_ms`), the master's
CPU seconds per frame, and events and clips made. Latency is dominated by detection on a 2-core box,
so the interesting figures are the ratios, and the master's CPU per frame.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import benchlib  # noqa: E402
from cluster.local import LocalCluster, free_udp_ports, wait_for_log  # noqa: E402
from cluster.testdata import walkway_camera, walkway_clip  # noqa: E402


def config(port: int, clip: Path, behaviours: bool) -> str:
    if behaviours:
        return f"[receivers.hub]\nports = [{port}]\n" + walkway_camera(port, clip, cross=True)
    return f'[receivers.hub]\nports = [{port}]\n\n[cameras.walkway]\nsource = "{clip}"\nport = {port}\n' \
           f'fps = 10\npipeline = "person"\n'


def one_run(work: Path, clip: Path, frames: int, behaviours: bool, workers: int) -> dict[str, Any]:
    [port] = free_udp_ports(1)
    name = "on" if behaviours else "off"
    cfg = work / f"{name}.toml"
    cfg.write_text(config(port, clip, behaviours))
    media = work / f"media-{name}-{time.monotonic_ns()}"
    with LocalCluster(log_dir=work / f"logs-{name}") as cluster:
        master = cluster.start_master("--config", str(cfg), "--media-dir", str(media))
        rx = cluster.spawn("hub", "receiver", "--name", "hub", "--master", cluster.master_url)
        wait_for_log(rx, "receiving UDP", 30)
        cluster.start_workers(workers, "--threads", "1", "--preload", "person")
        cpu0 = benchlib.cpu_seconds([master.popen.pid])
        pub = cluster.start_publisher(port, str(clip), "--fps", "10")
        pub.popen.wait(120)
        with cluster.client() as c:
            deadline = time.monotonic() + 60
            while c.get_stats()["ports"].get(str(port), {}).get("results", 0) < frames - 5:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            time.sleep(7.0 if behaviours else 0.5)  # the last event's post-roll and its clip's encoding
            cpu = benchlib.cpu_seconds([master.popen.pid]) - cpu0
            results, cursor = [], 0
            while True:
                page = c.get_results(port, cursor, 1000)
                if not page["results"]:
                    break
                results += page["results"]
                cursor = page["next"]
            events = c.call("get_events", 0, 1000)["events"]
        done = [r for r in results if r["status"] == "ok"]
        clips = len(list(media.glob("clips/*/*.mp4")))
    return {"latency": benchlib.latency_summary([float(r["latency_ms"]) for r in done]),
            "results": len(done), "master_cpu_ms_per_frame": round(1000 * cpu / max(len(done), 1), 3),
            "events": len({e["id"] for e in events}), "clips": clips}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2, help="runs per setting, alternating")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    benchlib.setup_logging("WARNING")
    info = benchlib.machine()
    work = Path(tempfile.mkdtemp(prefix="framehive-bench-behaviours-"))
    truth = walkway_clip(work / "walkway.mp4")
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    for _ in range(args.rounds):
        for setting in ("off", "on"):
            runs[setting].append(one_run(work, work / "walkway.mp4", truth["frames"], setting == "on", args.workers))

    def med(setting: str, *keys: str) -> float:
        values = []
        for r in runs[setting]:
            v: Any = r
            for k in keys:
                v = v[k]
            values.append(float(v))
        return round(statistics.median(values), 3)

    on_p95, off_p95 = med("on", "latency", "p95_ms"), med("off", "latency", "p95_ms")
    on_cpu, off_cpu = med("on", "master_cpu_ms_per_frame"), med("off", "master_cpu_ms_per_frame")
    benchlib.emit({
        "bench": "behaviours_cost", "clip": f"walkway, {truth['frames']} frames at 10 fps", "workers": args.workers,
        "figure": {"what": "zone + line + dwell and cross rules + clips", "p95_ms": on_p95,
                   "p50_ms": med("on", "latency", "p50_ms"), "master_cpu_ms_per_frame": on_cpu},
        "baseline": {"what": "the same camera, no behaviours, no clips", "p95_ms": off_p95,
                     "p50_ms": med("off", "latency", "p50_ms"), "master_cpu_ms_per_frame": off_cpu},
        "p95_ratio": benchlib.ratio(on_p95, off_p95), "master_cpu_ratio": benchlib.ratio(on_cpu, off_cpu),
        "runs": runs, "machine": benchlib.finish_machine(info),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
