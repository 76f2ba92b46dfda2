"""Run every benchmark as its own process and print their results as one JSON document.

`make bench` runs this; `--quick` passes through for a short run. Each benchmark logs to stderr
(passed through here) and prints one JSON object on stdout, collected here.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import benchlib  # noqa: E402

log = logging.getLogger("bench.all")

HERE = Path(__file__).resolve().parent
# name, time limit (s) of a full run, how to read its headline: (figure key, baseline key)
BENCHES: list[tuple[str, float, tuple[str, str]]] = [
    ("master_throughput", 240.0, ("frames_per_s", "frames_per_s")),
    ("receiver_ingest", 360.0, ("zero_loss_fps", "frames_per_s")),
    ("cluster_e2e", 300.0, ("results_per_s", "ideal_results_per_s")),
    ("detector_accuracy", 180.0, ("f1", "f1")),
    ("detector_eyes", 420.0, ("frames_with_person", "frames_with_person")),
    ("journal_cost", 120.0, ("tiles_per_s", "tiles_per_s")),
    ("tracker_cost", 120.0, ("us_per_result", "us_per_result")),
    ("tracking_accuracy", 420.0, ("idf1", "idf1")),
    ("mqtt_delivery", 180.0, ("messages_per_s", "messages_per_s")),
    ("motion_gating", 300.0, ("cpu_s", "cpu_s")),
    ("file_jobs", 420.0, ("frames_per_s", "frames_per_s")),
    ("scaling", 900.0, ("results_per_s", "ideal_per_s")),
]


def run_one(name: str, timeout_s: float, quick: bool) -> dict[str, Any]:
    """Run bench/NAME.py; its JSON, or {"bench", "error"} when it fails."""
    cmd = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if quick else [])]
    started = time.monotonic()
    log.info("running %s", " ".join(cmd[1:]))
    try:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=timeout_s,
                              env=benchlib.child_env(), cwd=benchlib.ROOT, check=False)
    except subprocess.TimeoutExpired:
        return {"bench": name, "error": f"timed out after {timeout_s:.0f}s"}
    lines = [line for line in done.stdout.decode("utf-8", "replace").splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        return {"bench": name, "error": f"exited with {done.returncode}", "stdout": lines[-5:]}
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError as e:
        return {"bench": name, "error": f"last stdout line is not JSON: {e}", "stdout": lines[-5:]}
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result


def headline(result: dict[str, Any], keys: tuple[str, str]) -> dict[str, Any]:
    """The one-line view of a result: figure, baseline, ratio, goal met."""
    if "error" in result:
        return {"bench": result["bench"], "error": result["error"]}
    fig, base = keys
    return {"bench": result["bench"], fig: result["figure"].get(fig), f"baseline_{base}": result["baseline"].get(base),
            "ratio": result.get("ratio"), "goal": result.get("goal"), "wall_s": result.get("wall_s"),
            "busy_cores_before": result.get("busy_cores_before"),
            "loadavg_1m": [result["machine"].get("loadavg_1m_start"), result["machine"].get("loadavg_1m_end")]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="short runs of every benchmark")
    p.add_argument("--only", action="append", default=[], choices=[b[0] for b in BENCHES],
                   help="run only this benchmark (repeatable)")
    p.add_argument("--settle-s", type=float, default=20.0,
                   help="wait up to this long before each benchmark for other processes to go quiet")
    args = p.parse_args(argv)
    benchlib.setup_logging("INFO")
    machine = benchlib.machine()
    results, summary = {}, []
    for name, timeout_s, keys in BENCHES:
        if args.only and name not in args.only:
            continue
        busy = benchlib.wait_quiet(args.settle_s)
        log.info("machine busy before %s: %.2f cores", name, busy)
        result = run_one(name, timeout_s / (2 if args.quick else 1), args.quick)
        result["busy_cores_before"] = busy
        if "error" in result:
            log.error("%s failed: %s", name, result["error"])
        results[name] = result
        summary.append(headline(result, keys))
    benchlib.emit({"bench": "all", "quick": args.quick, "machine": machine, "summary": summary, "results": results})
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
